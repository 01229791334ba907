#pragma once
// HTTP/1.1 front door (Boost.Beast) on loopback TCP or a Unix socket. Sessions only parse requests
// and write responses; routes.cc turns requests into supervisor calls.

#include <boost/asio.hpp>
#include <functional>
#include <memory>
#include <string>

#include "runtime/supervisor.h"

namespace bulkhead::api {

class AsyncJobs;

struct HttpServerOptions {
  std::string listen;  // "HOST:PORT" or "unix:/path"
  std::uint64_t maxRequestBody = 64ull << 20;
  AsyncJobs* jobs = nullptr;  // journal-backed async jobs; null: none
};

class HttpServer {
 public:
  HttpServer(boost::asio::io_context& io, runtime::Supervisor& supervisor,
             HttpServerOptions options);
  ~HttpServer();
  // Binds and starts accepting. Returns a printable address ("http://127.0.0.1:8787",
  // "unix:/path") or throws std::runtime_error naming the address and the cause.
  std::string start();
  void stopAccepting();
  // Calls back once every response already started has been written (now, if none is pending).
  void whenResponsesWritten(std::function<void()> callback);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bulkhead::api
