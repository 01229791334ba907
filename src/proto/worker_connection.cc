#include "proto/worker_connection.h"

#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

namespace bulkhead::proto {

namespace {

using nlohmann::json;

// Bodies are untrusted: parsed without exceptions, and every value's type is checked before it is
// read (json::value() and get<>() throw on a type mismatch).
std::optional<json> parseObject(const std::string& body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

// {"type": str, "message": str, "traceback": str}; a missing message or traceback is empty.
std::optional<ErrorInfo> parseErrorInfo(const std::string& body) {
  auto j = parseObject(body);
  if (!j) return std::nullopt;
  ErrorInfo e;
  auto field = [&](const char* key, std::string& out) {
    auto it = j->find(key);
    if (it == j->end()) return true;
    if (!it->is_string()) return false;
    out = it->get<std::string>();
    return true;
  };
  if (!field("type", e.type) || !field("message", e.message) || !field("traceback", e.traceback)) {
    return std::nullopt;
  }
  if (e.type.empty()) return std::nullopt;
  return e;
}

bool isHello(const std::string& body) {
  auto j = parseObject(body);
  if (!j) return false;
  auto it = j->find("protocol");
  return it != j->end() && it->is_number_integer() && it->get<std::int64_t>() == kVersion;
}

// READY's body: {"preload_seconds": ..., "init_seconds": ..., "payload_view": bool}; only
// payload_view is read, and a body without it (or not JSON) is a READY all the same.
Ready parseReady(const std::string& body) {
  Ready ready;
  if (auto j = parseObject(body)) {
    if (auto it = j->find("payload_view"); it != j->end() && it->is_boolean()) {
      ready.payloadView = it->get<bool>();
    }
  }
  return ready;
}

std::optional<Heartbeat> parseHeartbeat(const Frame& f) {
  auto j = parseObject(f.body);
  if (!j) return std::nullopt;
  Heartbeat beat;
  beat.jobId = f.jobId;
  if (auto it = j->find("progress"); it != j->end() && it->is_number_unsigned()) {
    beat.progress = it->get<std::uint64_t>();
  }
  if (auto it = j->find("cpu_seconds"); it != j->end() && it->is_number()) {
    beat.cpuSeconds = it->get<double>();
  }
  if (auto it = j->find("stack"); it != j->end() && it->is_string()) {
    beat.stack = it->get<std::string>();
  }
  return beat;
}

std::optional<Forked> parseForked(const Frame& f) {
  auto j = parseObject(f.body);
  if (!j) return std::nullopt;
  auto it = j->find("pid");
  // pid 1 is init and 0 or less is no process: neither can be a worker.
  if (it == j->end() || !it->is_number_integer()) return std::nullopt;
  const std::int64_t pid = it->get<std::int64_t>();
  if (pid <= 1 || pid > std::numeric_limits<std::int32_t>::max()) return std::nullopt;
  return Forked{f.jobId, static_cast<int>(pid)};
}

std::optional<ForkRefused> parseForkRefused(const Frame& f) {
  auto j = parseObject(f.body);
  if (!j) return std::nullopt;
  auto message = j->find("message");
  if (message == j->end() || !message->is_string()) return std::nullopt;
  ForkRefused refused{f.jobId, message->get<std::string>(), true};
  if (auto permanent = j->find("permanent"); permanent != j->end()) {
    if (!permanent->is_boolean()) return std::nullopt;
    refused.permanent = permanent->get<bool>();
  }
  return refused;
}

}  // namespace

void WorkerConnection::receive(std::string_view bytes) {
  if (error_ || eof_) return;  // nothing after a peer error or EOF is read
  decoder_.feed(bytes);
}

std::span<char> WorkerConnection::bodyBuffer() {
  if (error_ || eof_) return {};
  return decoder_.bodyBuffer();
}

void WorkerConnection::bodyReceived(std::size_t n) {
  if (error_ || eof_) return;
  decoder_.bodyReceived(n);
}

void WorkerConnection::receiveEof() { eof_ = true; }

PeerError WorkerConnection::fail(std::string reason) {
  error_ = PeerError{std::move(reason)};
  return *error_;
}

ConnectionEvent WorkerConnection::next() {
  if (error_) return *error_;
  DecodeResult decoded = decoder_.next();
  if (auto* err = std::get_if<DecodeError>(&decoded)) return fail(std::move(err->reason));
  if (std::holds_alternative<NeedMore>(decoded)) {
    if (!eof_) return NeedMore{};
    if (auto err = decoder_.finish()) return fail(std::move(err->reason));
    return Closed{};
  }
  return interpret(std::move(std::get<Frame>(decoded)));
}

ConnectionEvent WorkerConnection::interpret(Frame frame) {
  if (!helloSeen_) {
    if (frame.type != FrameType::kHello) {
      return fail("expected HELLO first, got " + std::string(frameTypeName(frame.type)));
    }
    if (!isHello(frame.body)) return fail("HELLO body is not {\"protocol\": 1, ...}");
    helloSeen_ = true;
    return Hello{};
  }
  return role_ == Role::kZygote ? zygoteFrame(std::move(frame)) : workerFrame(std::move(frame));
}

ConnectionEvent WorkerConnection::workerFrame(Frame f) {
  switch (f.type) {
    case FrameType::kHello:
      return fail("HELLO sent twice");
    case FrameType::kReady:
      return parseReady(f.body);  // its timings are informational, payload_view is not
    case FrameType::kStartFailed:
      if (auto e = parseErrorInfo(f.body)) return StartFailed{std::move(*e)};
      return fail("START_FAILED body is not {type, message, traceback}");
    case FrameType::kResultBytes:
      return Result{f.jobId, ResultKind::kBytes, std::move(f.body), std::nullopt};
    case FrameType::kResultBytesFd:
      if (decodeFileSize(f.body) > maxBody_) {
        return fail("RESULT_BYTES_FD of " + std::to_string(decodeFileSize(f.body)) +
                    " bytes exceeds the limit of " + std::to_string(maxBody_));
      }
      return Result{f.jobId, ResultKind::kBytes, {}, decodeFileSize(f.body)};
    case FrameType::kPayloadKept:
      if (!f.body.empty()) return fail("PAYLOAD_KEPT has a body");
      return PayloadKept{f.jobId};
    case FrameType::kResultText:
      return Result{f.jobId, ResultKind::kText, std::move(f.body), std::nullopt};
    case FrameType::kResultJson:
      if (!json::accept(f.body)) return fail("RESULT_JSON body is not valid JSON");
      return Result{f.jobId, ResultKind::kJson, std::move(f.body), std::nullopt};
    case FrameType::kHandlerError:
      if (auto e = parseErrorInfo(f.body)) return JobError{f.jobId, std::move(*e)};
      return fail("HANDLER_ERROR body is not {type, message, traceback}");
    case FrameType::kHeartbeat:
      if (auto beat = parseHeartbeat(f)) return std::move(*beat);
      return fail("HEARTBEAT body is not a JSON object");
    case FrameType::kForked:
    case FrameType::kForkRefused:
      return fail("a worker sent a zygote frame");
    case FrameType::kJob:
    case FrameType::kJobFd:
    case FrameType::kShutdown:
    case FrameType::kFork:
      // The decoder refuses these as unknown types from a worker; kept exhaustive all the same.
      return fail("worker sent a supervisor frame");
  }
  return fail("unknown frame type " + std::to_string(static_cast<int>(f.type)));
}

ConnectionEvent WorkerConnection::zygoteFrame(Frame f) {
  switch (f.type) {
    case FrameType::kReady:
      return Ready{};
    case FrameType::kStartFailed:
      if (auto e = parseErrorInfo(f.body)) return StartFailed{std::move(*e)};
      return fail("START_FAILED body is not {type, message, traceback}");
    case FrameType::kForked:
      if (auto forked = parseForked(f)) return *forked;
      return fail("FORKED body is not {\"pid\": int}");
    case FrameType::kForkRefused:
      if (auto refused = parseForkRefused(f)) return std::move(*refused);
      return fail("FORK_REFUSED body is not {type, message, permanent}");
    case FrameType::kHello:
    case FrameType::kResultBytes:
    case FrameType::kResultBytesFd:
    case FrameType::kPayloadKept:
    case FrameType::kResultJson:
    case FrameType::kResultText:
    case FrameType::kHandlerError:
    case FrameType::kHeartbeat:
    case FrameType::kJob:
    case FrameType::kJobFd:
    case FrameType::kShutdown:
    case FrameType::kFork:
      return fail("the zygote sent " + std::string(frameTypeName(f.type)));
  }
  return fail("unknown frame type " + std::to_string(static_cast<int>(f.type)));
}

}  // namespace bulkhead::proto
