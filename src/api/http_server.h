#pragma once
// HTTP/1.1 front door (Boost.Beast) on loopback TCP or a Unix socket. Sessions only parse requests
// and write responses; routes.cc turns requests into supervisor calls. It also bounds what clients
// can hold: connections (cap, 503 beyond), time to send a request (408), idle keep-alive time,
// and it keeps accepting sanely when the process runs out of fds (docs/operations.md,
// "Connections").

#include <boost/asio.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "cluster/node_parts.h"
#include "jobs/jobs_service.h"
#include "runtime/supervisor.h"

namespace bulkhead::api {

struct HttpServerOptions {
  std::string listen;  // "HOST:PORT" or "unix:/path"
  std::uint64_t maxRequestBody = 64ull << 20;
  jobs::JobsService* jobs = nullptr;          // required: every job goes through it
  std::uint64_t memfdThreshold = 256 * 1024;  // bodies this large go into a memfd; 0: never
  cluster::NodeParts cluster{};  // with [cluster]: GET /v1/cluster and /metrics read it
  std::uint64_t maxConnections = 1024;
  // Fds kept for workers (os::fdReserve): the cap is lowered to fit the soft RLIMIT_NOFILE.
  std::uint64_t fdReserve = 64;
  std::chrono::nanoseconds requestTimeout = std::chrono::seconds(30);
  std::chrono::nanoseconds idleTimeout = std::chrono::seconds(60);
};

class HttpServer {
 public:
  HttpServer(boost::asio::io_context& io, runtime::Supervisor& supervisor,
             HttpServerOptions options);
  ~HttpServer();
  // Binds and starts accepting (logging the connection cap if the fd limit lowers it). Returns a
  // printable address ("http://127.0.0.1:8787", "unix:/path") or throws std::runtime_error naming
  // the address and the cause.
  std::string start();
  void stopAccepting();
  // Calls back once every response already started has been written (now, if none is pending).
  void whenResponsesWritten(std::function<void()> callback);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bulkhead::api
