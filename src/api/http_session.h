#pragma once
// One HTTP connection (Session) and the state its server shares with it (ServerState): the
// request, idle and linger timers, the 408/413/431/400 answers, the canned 503 of a connection
// over the cap (which still gets a health check answered), and Server-Sent Events. Included only
// by http_server.cc, which owns accepting.
//
// - Each Session has one timer, armed for one phase at a time: the request (request_timeout from
//   accept or from a later request's first byte; expiry answers 408), idle (between keep-alive
//   requests; expiry closes), linger (after an error answer). No timer runs while a request is
//   being answered (a long sync job, a long poll, an event stream). Expiry only cancels the
//   pending read, whose handler then answers or closes: one path writes, one closes. The timer's
//   handler holds a weak_ptr (an armed timer never keeps a closed connection alive) and a
//   generation number (a timer that fired as its phase ended is ignored).

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "api/file_transfer.h"
#include "api/http_server.h"
#include "api/job_answers.h"
#include "api/problem.h"
#include "api/routes.h"
#include "os/fd_limits.h"
#include "util/whole_transfers.h"

namespace bulkhead::api::http_detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using namespace std::chrono_literals;

// Connections being answered 503 at the cap; more are closed at once, unanswered. Part of the
// 64 fds of os::fdReserve.
constexpr std::size_t kMaxTurningAway = 16;
constexpr auto kLinger = 2s;
// Request bodies from this size on are read straight into the request (Session::readBody).
constexpr std::size_t kDirectBodyMin = 64 * 1024;

inline std::string millis(std::chrono::nanoseconds d) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count()) + " ms";
}

// At most one log line per interval, however often the condition repeats; counts the rest.
struct RateLimitedLog {
  explicit RateLimitedLog(std::chrono::steady_clock::duration every) : interval(every) {}
  std::chrono::steady_clock::duration interval;
  std::optional<std::chrono::steady_clock::time_point> last;
  std::uint64_t count = 0;
  // Counts one occurrence; true when a line is due (it reports `count`, then resets it).
  bool due() {
    ++count;
    auto now = std::chrono::steady_clock::now();
    if (last && now - *last < interval) return false;
    last = now;
    return true;
  }
};

// Shared by the server and its sessions (a session may outlive the server while the io_context
// destroys its pending handlers, so it holds this by shared_ptr).
struct ServerState {
  ServerState(asio::io_context& io, runtime::Supervisor& s, const HttpServerOptions& o)
      : supervisor(s),
        services{s, *o.jobs, o.cluster},
        options(o),
        maxConnections(o.maxConnections),
        acceptPause(io) {}
  runtime::Supervisor& supervisor;
  Services services;
  HttpServerOptions options;
  std::uint64_t maxConnections;   // effective: lowered to fit the fd limit by start()
  std::uint64_t connections = 0;  // sessions admitted and open
  std::uint64_t turningAway = 0;  // sessions being answered 503
  // Counts responses not yet written, so shutdown can wait for the last outcomes to reach their
  // callers.
  int responsesPending = 0;
  std::function<void()> onIdle;
  os::SpareFd spare;
  asio::steady_timer acceptPause;
  std::chrono::milliseconds backoff{0};
  RateLimitedLog refusedLog{10s};
  RateLimitedLog acceptErrorLog{1s};

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
  // `admitted`: counted against the cap; otherwise the session only answers 503 (turnAway).
  Session(Socket socket, std::shared_ptr<ServerState> state, bool admitted)
      : socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        state_(std::move(state)),
        admitted_(admitted),
        maxBody_(state_->options.maxRequestBody) {
    ++(admitted_ ? state_->connections : state_->turningAway);
  }
  ~Session() { --(admitted_ ? state_->connections : state_->turningAway); }

  void start() { readRequest(); }

  // Over the cap, a connection still gets its health check answered (a liveness probe must not
  // see 503 because idle clients hold every slot); anything else, or nothing within a second,
  // gets the 503.
  void turnAway() {
    turnedAway_ = true;
    keepAlive_ = false;
    parser_.emplace();
    parser_->body_limit(8 * 1024);
    parser_->header_limit(8 * 1024);
    arm(std::min<std::chrono::nanoseconds>(state_->options.requestTimeout, 1s));
    http::async_read(
        socket_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, std::size_t) { self->onRead(ec); });
  }

 private:
  void refuse() {
    keepAlive_ = false;
    lingerAfterWrite_ = true;
    write(errorAnswer(11, ApiError::kTooManyConnections,
                      "the server holds its limit of " + std::to_string(state_->maxConnections) +
                          " connections (max_connections); retry shortly"));
  }

  static bool isHealthCheck(const Request& request) {
    std::string_view target(request.target().data(), request.target().size());
    target = target.substr(0, target.find('?'));
    return (request.method() == http::verb::get || request.method() == http::verb::head) &&
           (target == "/livez" || target == "/healthz" || target == "/readyz");
  }

  void readRequest() {
    fileBody_.reset();
    parser_.emplace();
    parser_->body_limit(maxBody_);
    parser_->header_limit(64 * 1024);
    // The first request's clock starts at accept; so does a pipelined one already in the buffer.
    if (!served_ || buffer_.size() > 0) return readRequestNow();
    arm(state_->options.idleTimeout);
    socket_.async_wait(Socket::wait_read, [self = this->shared_from_this()](beast::error_code ec) {
      if (ec) return self->close();  // idle_timeout, or the socket failed
      self->readRequestNow();        // the next request's first byte (or EOF)
    });
  }

  // The head first: the body's size is then known, and the body is read in reads of its size,
  // not in Beast's 512-byte reads of a fresh buffer (~2,000 reads per MiB).
  void readRequestNow() {
    arm(state_->options.requestTimeout);
    http::async_read_header(
        socket_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, std::size_t) { self->onHead(ec); });
  }

  void onHead(beast::error_code ec) {
    if (ec || parser_->is_done()) return onRead(ec);
    auto expect = parser_->get()[http::field::expect];
    if (!beast::iequals(expect, "100-continue")) return readBody();
    // curl asks before sending a body over 1 MiB and otherwise waits a second for this.
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    asio::async_write(socket_, asio::buffer(kContinue.data(), kContinue.size()),
                      [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                        if (ec) return self->onRead(ec);
                        self->readBody();
                      });
  }

  void readBody() {
    const auto length = parser_->content_length();
    const std::uint64_t memfdFrom = state_->options.memfdThreshold;
    // The pool's own threshold is never below memfd_threshold: asked only past that.
    if (length && memfdFrom > 0 && *length >= memfdFrom) {
      const auto target = parser_->get().target();
      std::string_view pool = submittedPool({target.data(), target.size()}).value_or("");
      if (!state_->supervisor.hasPool(pool)) pool = {};  // no pool's file for a 404 to come
      if (*length >= memfdFromFor(pool)) return readBodyIntoFileIfAny(*length, pool);
    }
    readBodyIntoMemory(length);
  }

  // A body of memfd_threshold or more, of a job of `pool` (empty: not a job): into a memfd, one
  // the pool used before when it has one free; into memory when no memfd can be had.
  void readBodyIntoFileIfAny(std::uint64_t length, std::string_view pool) {
    auto prefix = buffer_.data();
    std::string_view buffered(static_cast<const char*>(prefix.data()), prefix.size());
    if (auto file = startFileBody(length, buffered, state_->supervisor.payloadFiles(), pool)) {
      buffer_.consume(std::min<std::size_t>(buffer_.size(), length));
      return readBodyIntoFile(std::move(file));
    }
    readBodyIntoMemory(length);
  }

  void readBodyIntoMemory(boost::optional<std::uint64_t> length) {
    if (!length || *length < kDirectBodyMin) {  // small or chunked: Beast parses it
      buffer_.reserve(kDirectBodyMin);
      http::async_read(socket_, buffer_, *parser_,
                       [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                         self->onRead(ec);
                       });
      return;
    }
    // Large (the head already checked it against max_request_body): straight into the request's
    // body, the bytes already buffered first, then reads as large as the socket gives.
    std::string& body = parser_->get().body();
    body.resize(static_cast<std::size_t>(*length));
    const std::size_t buffered = std::min(buffer_.size(), body.size());
    asio::buffer_copy(asio::buffer(body.data(), buffered), buffer_.data());
    buffer_.consume(buffered);
    asio::async_read(
        socket_, asio::buffer(body.data() + buffered, body.size() - buffered),
        util::AsMuchAsTheSocketTakes{},
        [self = this->shared_from_this()](beast::error_code ec, std::size_t) { self->onRead(ec); });
  }

  // From which size a job's body goes into a memfd: the pool's (its handler may take bytes:
  // core/payload_path.h), or memfd_threshold for any other request (`pool` empty).
  std::uint64_t memfdFromFor(std::string_view pool) const {
    if (!pool.empty()) {
      if (auto from = state_->supervisor.payloadMemfdFrom(pool)) return *from;
    }
    return state_->options.memfdThreshold;
  }

  // The body (memfd_threshold or more) into a sealed memfd, handed to the routes as the payload.
  void readBodyIntoFile(std::shared_ptr<FileBodyState> file) {
    readRestOfFileBody(socket_, std::move(file),
                       [self = this->shared_from_this()](beast::error_code ec, int writeErrno,
                                                         core::Payload payload) {
                         if (writeErrno != 0) {
                           self->disarm();
                           return self->fail(ApiError::kPayloadTooLarge,
                                             std::string("the server cannot hold the request "
                                                         "body: ") +
                                                 std::strerror(writeErrno));
                         }
                         self->fileBody_ = std::move(payload);
                         self->onRead(ec);
                       });
  }

  void onRead(beast::error_code ec) {
    const bool expired = expired_ && ec == asio::error::operation_aborted;
    disarm();
    served_ = true;
    if (turnedAway_) {
      if (ec && !expired) return close();
      if (expired || !isHealthCheck(parser_->get())) return refuse();
      Request request = parser_->release();
      lingerAfterWrite_ = true;
      return route(state_->services, request, answerTo(request));
    }
    if (expired) {
      return fail(ApiError::kRequestTimeout, "the request did not arrive whole within " +
                                                 millis(state_->options.requestTimeout) +
                                                 " (request_timeout)");
    }
    if (ec == http::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::connection_reset || ec == asio::error::operation_aborted) {
      return close();
    }
    if (ec == http::error::body_limit) {
      return fail(ApiError::kPayloadTooLarge, "request body exceeds the server's limit of " +
                                                  std::to_string(maxBody_) +
                                                  " bytes (max_request_body)");
    }
    if (ec == http::error::header_limit) {
      return fail(ApiError::kHeadersTooLarge, "request headers too large");
    }
    if (ec) return fail(ApiError::kBadRequest, "malformed HTTP request: " + ec.message());

    Request request = parser_->release();
    std::string_view target(request.target().data(), request.target().size());
    if (request.method() == http::verb::get && target.substr(0, target.find('?')) == "/v1/events") {
      return startEventStream(request);
    }
    // A big request must not pin its buffer for the rest of a keep-alive connection.
    if (buffer_.capacity() > (1u << 20)) buffer_.shrink_to_fit();
    keepAlive_ = request.keep_alive();
    route(state_->services, request, answerTo(request), std::move(fileBody_));
  }

  // How a routed request's answer is written. A HEAD answer keeps its Content-Length but sends
  // no body (RFC 9110 9.3.2): body bytes would be read as the start of the next response.
  Respond answerTo(const Request& request) {
    auto self = this->shared_from_this();
    if (request.method() != http::verb::head) {
      return [self](Answer answer) { self->write(std::move(answer)); };
    }
    return [self](Answer answer) {
      Response response = std::move(answer.response);
      const auto length = answer.fileBody ? answer.fileBody->size() : response.body().size();
      response.body().clear();
      response.content_length(length);
      self->write(std::move(response));
    };
  }

  // One timer per session, for the current phase only (see the top of the file).
  void arm(std::chrono::nanoseconds after) {
    expired_ = false;
    timer_.expires_after(after);
    timer_.async_wait(
        [weak = this->weak_from_this(), generation = ++timerGeneration_](beast::error_code ec) {
          auto self = weak.lock();
          if (ec || !self || generation != self->timerGeneration_) return;
          self->expired_ = true;
          beast::error_code ignored;
          self->socket_.cancel(ignored);  // the pending read completes with operation_aborted
        });
  }

  void disarm() {
    ++timerGeneration_;
    timer_.cancel();
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
    subscription_ = state_->supervisor.subscribeEvents(since, [self](std::uint64_t id,
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
    if (subscription_) state_->supervisor.unsubscribeEvents(*subscription_);
    subscription_.reset();
    outbox_.clear();
    close();
  }

  void fail(ApiError error, const std::string& detail) {
    keepAlive_ = false;
    lingerAfterWrite_ = true;
    write(errorAnswer(11, error, detail));
  }

  void write(Answer answer) {
    state_->responsesPending++;
    answer.response.keep_alive(keepAlive_);
    auto message = std::make_shared<Response>(std::move(answer.response));
    if (answer.fileBody) return writeWithFile(std::move(message), std::move(answer.fileBody));
    http::async_write(socket_, *message,
                      [self = this->shared_from_this(), message](
                          beast::error_code ec, std::size_t) { self->written(!ec); });
  }

  // A result in a memfd: the head by Beast, then the file by sendfile(2), never through memory.
  void writeWithFile(std::shared_ptr<Response> message, core::Payload file) {
    auto serializer = std::make_shared<http::response_serializer<http::string_body>>(*message);
    http::async_write_header(socket_, *serializer,
                             [self = this->shared_from_this(), message, serializer,
                              file = std::move(file)](beast::error_code ec, std::size_t) mutable {
                               if (ec) return self->written(false);
                               sendFileBody(self->socket_, std::move(file), 0,
                                            [self](bool ok) { self->written(ok); });
                             });
  }

  void written(bool ok) {
    state_->responseDone();
    if (!ok) return close();
    if (!keepAlive_) return lingerAfterWrite_ ? linger() : close();
    readRequest();
  }

  // After an error answer the client may still be sending (a body, a request we never read):
  // closing with unread bytes sends a reset, which can destroy our answer before the client reads
  // it. So: end our side, discard what arrives until the client closes or kLinger passes.
  void linger() {
    beast::error_code ignored;
    socket_.shutdown(Socket::shutdown_send, ignored);
    arm(kLinger);
    discardUntilClosed();
  }

  void discardUntilClosed() {
    socket_.async_read_some(asio::buffer(discard_),
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                              if (ec) return self->close();  // EOF, reset, or kLinger passed
                              self->discardUntilClosed();
                            });
  }

  // Idempotent: every path that ends the connection comes here.
  void close() {
    disarm();
    beast::error_code ignored;
    socket_.shutdown(Socket::shutdown_send, ignored);
    socket_.close(ignored);
  }

  Socket socket_;
  asio::steady_timer timer_;
  std::shared_ptr<ServerState> state_;
  const bool admitted_;
  std::uint64_t maxBody_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  core::Payload fileBody_;  // the current request's body, when it went into a memfd
  bool keepAlive_ = false;
  bool lingerAfterWrite_ = false;
  bool turnedAway_ = false;  // over the cap: only a health check is answered
  bool served_ = false;      // a request (or an attempt at one) has ended: later ones start idle
  bool expired_ = false;
  std::uint64_t timerGeneration_ = 0;
  // Event stream state.
  static constexpr std::size_t kMaxQueuedEvents = 4096;
  bool streaming_ = false;
  bool writing_ = false;
  std::optional<int> subscription_;
  std::deque<std::string> outbox_;
  std::array<char, 256> discard_;
};

}  // namespace bulkhead::api::http_detail
