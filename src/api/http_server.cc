#include "api/http_server.h"

// How connections are kept from stalling the daemon (one thread serves everything, so nothing a
// client does may block it or take the fds workers need):
// - ServerState counts open sessions. A connection accepted at the cap gets a canned 503 (only a
//   health check is answered), then a lingering close; beyond kMaxTurningAway of those in flight, a
//   connection is closed as soon as it is accepted.
// - Each connection is a Session (api/http_session.h) with its own timers.
// - accept(2) failing with EMFILE/ENFILE sheds one waiting connection through the spare fd and
//   pauses accepting (50 ms doubling to 1 s, reset by a successful accept), logging at most once a
//   second: the listening socket stays readable while the backlog is not empty, so accepting again
//   at once spins.

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <stdexcept>
#include <utility>

#include "api/http_session.h"
#include "api/problem.h"
#include "api/routes.h"
#include "os/fd_limits.h"
#include "runtime/operator_log.h"

namespace bulkhead::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using namespace std::chrono_literals;

namespace {

using namespace http_detail;

constexpr auto kFirstBackoff = 50ms;
constexpr auto kMaxBackoff = 1000ms;

template <class Acceptor>
void acceptLoop(Acceptor& acceptor, std::shared_ptr<ServerState> state);

// accept(2) failed. Out of fds (or kernel memory), the pending connection stays in the backlog and
// the socket stays readable: shed one through the spare and pause instead of accepting again now.
// Any other error pauses too (asio already retries the per-connection ones, ECONNABORTED and
// EPROTO), so no error can make this loop spin.
template <class Acceptor>
void acceptFailed(Acceptor& acceptor, std::shared_ptr<ServerState> state, beast::error_code ec) {
  const int err = ec.category() == boost::system::system_category() ? ec.value() : 0;
  const bool shed = (err == EMFILE || err == ENFILE) && state->spare.valid() &&
                    state->spare.shedOne(acceptor.native_handle());
  state->backoff =
      state->backoff.count() == 0 ? kFirstBackoff : std::min(state->backoff * 2, kMaxBackoff);
  if (state->acceptErrorLog.due()) {
    runtime::logAt(runtime::LogLevel::kWarning,
                   "accept: " + ec.message() + " (fd limit " +
                       std::to_string(os::currentFdLimit().soft) +
                       "): " + std::to_string(std::exchange(state->acceptErrorLog.count, 0)) +
                       " time(s) since the last report" +
                       (shed ? ", closing one waiting connection each time" : "") +
                       "; accepting again in " + std::to_string(state->backoff.count()) + " ms",
                   {{"event", "accept_failed"}});
  }
  state->acceptPause.expires_after(state->backoff);
  state->acceptPause.async_wait([&acceptor, state](beast::error_code waitEc) {
    if (waitEc || !acceptor.is_open()) return;
    acceptLoop(acceptor, state);
  });
}

template <class Acceptor>
void acceptLoop(Acceptor& acceptor, std::shared_ptr<ServerState> state) {
  acceptor.async_accept([&acceptor, state](beast::error_code ec, auto socket) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
    if (ec) return acceptFailed(acceptor, state, ec);
    state->backoff = 0ms;
    using Socket = decltype(socket);
    if constexpr (std::is_same_v<Socket, asio::ip::tcp::socket>) {
      beast::error_code ignored;
      socket.set_option(asio::ip::tcp::no_delay(true), ignored);
    }
    if (state->connections < state->maxConnections) {
      std::make_shared<Session<Socket>>(std::move(socket), state, true)->start();
    } else {
      if (state->refusedLog.due()) {
        runtime::logAt(runtime::LogLevel::kWarning,
                       std::to_string(std::exchange(state->refusedLog.count, 0)) +
                           " connection(s) turned away since the last report: max_connections (" +
                           std::to_string(state->maxConnections) + ") reached",
                       {{"event", "connections_refused"}});
      }
      // Beyond kMaxTurningAway the socket is closed here, unanswered: answering a flood would
      // spend the fds the cap protects.
      if (state->turningAway < kMaxTurningAway) {
        std::make_shared<Session<Socket>>(std::move(socket), state, false)->turnAway();
      }
    }
    acceptLoop(acceptor, state);
  });
}

}  // namespace

struct HttpServer::Impl {
  Impl(asio::io_context& io, runtime::Supervisor& s, const HttpServerOptions& o)
      : state(std::make_shared<ServerState>(io, s, o)), tcp(io), local(io) {}
  std::shared_ptr<ServerState> state;
  asio::ip::tcp::acceptor tcp;
  asio::local::stream_protocol::acceptor local;
  std::string unixPath;

  // The cap that fits the fd limit, and the spare fd; before the first accept.
  void prepareLimits() {
    const auto& options = state->options;
    const auto limit = os::currentFdLimit();
    state->maxConnections =
        os::connectionCap(options.maxConnections, limit.soft, options.fdReserve);
    if (state->maxConnections < options.maxConnections) {
      runtime::logAt(runtime::LogLevel::kWarning,
                     "at most " + std::to_string(state->maxConnections) +
                         " connections (max_connections is " +
                         std::to_string(options.maxConnections) + "): the fd limit is " +
                         std::to_string(limit.soft) + " and " + std::to_string(options.fdReserve) +
                         " are kept for workers and the daemon; raise the limit (LimitNOFILE=, "
                         "ulimit -n) to allow more");
    }
    if (!state->spare.open()) {
      runtime::logAt(runtime::LogLevel::kWarning,
                     std::string("cannot open /dev/null as a spare fd (") + std::strerror(errno) +
                         "): when out of fds, waiting clients are not closed, only accepting is "
                         "paused");
    }
  }
};

HttpServer::HttpServer(asio::io_context& io, runtime::Supervisor& supervisor,
                       HttpServerOptions options)
    : impl_(std::make_unique<Impl>(io, supervisor, options)) {}

HttpServer::~HttpServer() { stopAccepting(); }

std::string HttpServer::start() {
  const std::string& listen = impl_->state->options.listen;
  impl_->prepareLimits();
  try {
    if (listen.rfind("unix:", 0) == 0) {
      impl_->unixPath = listen.substr(5);
      ::unlink(impl_->unixPath.c_str());  // a stale socket of a previous run
      asio::local::stream_protocol::endpoint endpoint(impl_->unixPath);
      impl_->local.open(endpoint.protocol());
      impl_->local.bind(endpoint);
      impl_->local.listen(asio::socket_base::max_listen_connections);
      impl_->local.non_blocking(true);  // SpareFd::shedOne accepts on it directly
      acceptLoop(impl_->local, impl_->state);
      return "unix:" + impl_->unixPath;
    }
    auto colon = listen.rfind(':');
    std::string host = listen.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']')
      host = host.substr(1, host.size() - 2);
    auto port = static_cast<unsigned short>(std::stoi(listen.substr(colon + 1)));
    asio::ip::tcp::endpoint endpoint(asio::ip::make_address(host), port);
    impl_->tcp.open(endpoint.protocol());
    impl_->tcp.set_option(asio::socket_base::reuse_address(true));
    impl_->tcp.bind(endpoint);
    impl_->tcp.listen(asio::socket_base::max_listen_connections);
    impl_->tcp.non_blocking(true);  // SpareFd::shedOne accepts on it directly
    acceptLoop(impl_->tcp, impl_->state);
    auto bound = impl_->tcp.local_endpoint();
    std::string shown = bound.address().is_v6() ? "[" + bound.address().to_string() + "]"
                                                : bound.address().to_string();
    return "http://" + shown + ":" + std::to_string(bound.port());
  } catch (const boost::system::system_error& e) {
    throw std::runtime_error("cannot listen on " + listen + ": " + e.code().message());
  }
}

void HttpServer::whenResponsesWritten(std::function<void()> callback) {
  if (impl_->state->responsesPending == 0) return callback();
  impl_->state->onIdle = std::move(callback);
}

void HttpServer::stopAccepting() {
  beast::error_code ignored;
  impl_->state->acceptPause.cancel();
  if (impl_->tcp.is_open()) impl_->tcp.close(ignored);
  if (impl_->local.is_open()) {
    impl_->local.close(ignored);
    if (!impl_->unixPath.empty()) ::unlink(impl_->unixPath.c_str());
  }
}

}  // namespace bulkhead::api
