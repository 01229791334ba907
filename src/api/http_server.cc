#include "api/http_server.h"

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <deque>
#include <optional>
#include <stdexcept>

#include "api/problem.h"
#include "api/routes.h"

namespace bulkhead::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

// Shared by the server and its sessions: counts responses not yet written, so shutdown can wait
// for the last outcomes to reach their callers.
struct ServerState {
  ServerState(runtime::Supervisor& s, std::uint64_t limit, AsyncJobs* jobs)
      : supervisor(s), services{s, jobs}, maxBody(limit) {}
  runtime::Supervisor& supervisor;
  Services services;
  std::uint64_t maxBody;
  int responsesPending = 0;
  std::function<void()> onIdle;

  void responseDone() {
    if (--responsesPending == 0 && onIdle) {
      auto callback = std::move(onIdle);
      onIdle = nullptr;
      callback();
    }
  }
};

template <class Socket>
class Session : public std::enable_shared_from_this<Session<Socket>> {
 public:
  Session(Socket socket, ServerState& state)
      : socket_(std::move(socket)), state_(state), maxBody_(state.maxBody) {}

  void start() { readRequest(); }

 private:
  void readRequest() {
    parser_.emplace();
    parser_->body_limit(maxBody_);
    parser_->header_limit(64 * 1024);
    http::async_read(
        socket_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, std::size_t) { self->onRead(ec); });
  }

  void onRead(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::connection_reset || ec == asio::error::operation_aborted) {
      return close();
    }
    if (ec == http::error::body_limit) {
      return fail(
          413, "payload_too_large",
          "request body exceeds the server's limit of " + std::to_string(maxBody_) + " bytes");
    }
    if (ec == http::error::header_limit) {
      return fail(431, "bad_request", "request headers too large");
    }
    if (ec) return fail(400, "bad_request", "malformed HTTP request: " + ec.message());

    Request request = parser_->release();
    std::string_view target(request.target().data(), request.target().size());
    if (request.method() == http::verb::get && target.substr(0, target.find('?')) == "/v1/events") {
      return startEventStream(request);
    }
    // A big request must not pin its buffer for the rest of a keep-alive connection.
    if (buffer_.capacity() > (1u << 20)) buffer_.shrink_to_fit();
    keepAlive_ = request.keep_alive();
    auto self = this->shared_from_this();
    route(state_.services, request,
          [self](Response response) { self->write(std::move(response)); });
  }

  // Server-Sent Events: the response never ends; each event is written as it happens. The
  // connection is read only to notice the client leaving.
  void startEventStream(const Request& request) {
    std::uint64_t since = 0;
    std::string_view target(request.target().data(), request.target().size());
    if (auto q = target.find("since="); q != std::string_view::npos) {
      since = std::strtoull(std::string(target.substr(q + 6)).c_str(), nullptr, 10);
    }
    if (auto it = request.find("Last-Event-ID"); it != request.end()) {
      since = std::strtoull(std::string(it->value()).c_str(), nullptr, 10);
    }
    streaming_ = true;
    enqueue(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        "Connection: close\r\n\r\n");
    auto self = this->shared_from_this();
    subscription_ = state_.supervisor.subscribeEvents(since, [self](std::uint64_t id,
                                                                    const nlohmann::json& event) {
      self->enqueue("id: " + std::to_string(id) +
                    "\nevent: " + event.value("kind", std::string("event")) + "\ndata: " +
                    event.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n\n");
    });
    watchForClose();
  }

  void watchForClose() {
    socket_.async_read_some(asio::buffer(discard_),
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                              if (ec) return self->endStream();
                              self->watchForClose();
                            });
  }

  void enqueue(std::string chunk) {
    if (!streaming_) return;
    outbox_.push_back(std::move(chunk));
    if (outbox_.size() > kMaxQueuedEvents) return endStream();  // a reader that stopped reading
    if (!writing_) writeNext();
  }

  void writeNext() {
    if (outbox_.empty()) {
      writing_ = false;
      return;
    }
    writing_ = true;
    asio::async_write(socket_, asio::buffer(outbox_.front()),
                      [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                        if (!self->streaming_) return;
                        self->outbox_.pop_front();
                        if (ec) return self->endStream();
                        self->writeNext();
                      });
  }

  void endStream() {
    if (!streaming_) return;
    streaming_ = false;
    if (subscription_) state_.supervisor.unsubscribeEvents(*subscription_);
    subscription_.reset();
    outbox_.clear();
    close();
  }

  void fail(int status, const std::string& error, const std::string& detail) {
    keepAlive_ = false;
    write(problemResponse(11, status, apiProblem(status, error, detail)));
  }

  void write(Response response) {
    state_.responsesPending++;
    response.keep_alive(keepAlive_);
    auto message = std::make_shared<Response>(std::move(response));
    http::async_write(
        socket_, *message,
        [self = this->shared_from_this(), message](beast::error_code ec, std::size_t) {
          self->state_.responseDone();
          if (ec || !self->keepAlive_) return self->close();
          self->readRequest();
        });
  }

  void close() {
    beast::error_code ignored;
    socket_.shutdown(Socket::shutdown_send, ignored);
    socket_.close(ignored);
  }

  Socket socket_;
  ServerState& state_;
  std::uint64_t maxBody_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool keepAlive_ = false;
  // Event stream state.
  static constexpr std::size_t kMaxQueuedEvents = 4096;
  bool streaming_ = false;
  bool writing_ = false;
  std::optional<int> subscription_;
  std::deque<std::string> outbox_;
  std::array<char, 256> discard_;
};

template <class Acceptor>
void acceptLoop(Acceptor& acceptor, ServerState& state) {
  acceptor.async_accept([&acceptor, &state](beast::error_code ec, auto socket) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
    if (!ec) {
      using Socket = decltype(socket);
      if constexpr (std::is_same_v<Socket, asio::ip::tcp::socket>) {
        beast::error_code ignored;
        socket.set_option(asio::ip::tcp::no_delay(true), ignored);
      }
      std::make_shared<Session<Socket>>(std::move(socket), state)->start();
    }
    acceptLoop(acceptor, state);
  });
}

}  // namespace

struct HttpServer::Impl {
  Impl(asio::io_context& io, runtime::Supervisor& s, HttpServerOptions o)
      : options(std::move(o)), state(s, options.maxRequestBody, options.jobs), tcp(io), local(io) {}
  HttpServerOptions options;
  ServerState state;
  asio::ip::tcp::acceptor tcp;
  asio::local::stream_protocol::acceptor local;
  std::string unixPath;
};

HttpServer::HttpServer(asio::io_context& io, runtime::Supervisor& supervisor,
                       HttpServerOptions options)
    : impl_(std::make_unique<Impl>(io, supervisor, std::move(options))) {}

HttpServer::~HttpServer() { stopAccepting(); }

std::string HttpServer::start() {
  const std::string& listen = impl_->options.listen;
  try {
    if (listen.rfind("unix:", 0) == 0) {
      impl_->unixPath = listen.substr(5);
      ::unlink(impl_->unixPath.c_str());  // a stale socket of a previous run
      asio::local::stream_protocol::endpoint endpoint(impl_->unixPath);
      impl_->local.open(endpoint.protocol());
      impl_->local.bind(endpoint);
      impl_->local.listen(asio::socket_base::max_listen_connections);
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
  if (impl_->state.responsesPending == 0) return callback();
  impl_->state.onIdle = std::move(callback);
}

void HttpServer::stopAccepting() {
  beast::error_code ignored;
  if (impl_->tcp.is_open()) impl_->tcp.close(ignored);
  if (impl_->local.is_open()) {
    impl_->local.close(ignored);
    if (!impl_->unixPath.empty()) ::unlink(impl_->unixPath.c_str());
  }
}

}  // namespace bulkhead::api
