#pragma once
// The supervisor's side of one control connection (docs/protocol.md), sans-I/O in the h11 manner:
// the shell feeds the bytes it read (`receive`, `receiveEof`) and pulls typed events (`next`).
//
// Owns everything the protocol says about the frames themselves: decoding (through FrameDecoder),
// the HELLO-first rule, which frame types each role may send, and the schema of every body. The
// first thing the peer gets wrong is a `PeerError` that latches: every later `next()` returns it
// again and further bytes are ignored, since a peer that sent one bad frame is never trusted.
// A PeerError is always the worker's fault, never ours; the shell kills that peer only.
//
// May not touch: sockets, clocks, processes or job state. Whether a READY, a result or a FORKED is
// expected *now* (the worker's state, the job in flight, a FORK outstanding) is the core's rule
// (core/pool.cc, core/zygote_lifecycle.h); this room only says the frame is well formed and legal
// for its role.
//
// Worker and zygote are two roles of one class, not two classes: framing, the HELLO rule, the
// START_FAILED schema, EOF and latching are the same for both; the role only picks which frames
// are legal after HELLO, one switch per role.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

#include "proto/frame.h"

namespace bulkhead::proto {

// The body of START_FAILED and HANDLER_ERROR: {"type": str, "message": str, "traceback": str},
// `type` non-empty, the other two optional.
struct ErrorInfo {
  std::string type;
  std::string message;
  std::string traceback;
};

enum class ResultKind { kBytes, kJson, kText };

// The peer said HELLO with protocol 1 as its first frame.
struct Hello {};
// Preload and init ran (a worker), or preload ran (a zygote). `payloadView`: the worker's
// handler takes its payload as a memoryview (true) or copies it into bytes (false); none when
// the body does not say (older SDKs, zygotes). Informational otherwise: a READY whose body is
// not JSON is still a READY.
struct Ready {
  std::optional<bool> payloadView;
};
struct StartFailed {
  ErrorInfo error;
};
// RESULT_BYTES, RESULT_JSON (the body is valid JSON) or RESULT_TEXT; or RESULT_BYTES_FD, whose
// bytes are in the file descriptor that came with it (the shell takes and checks it).
struct Result {
  std::uint64_t jobId = 0;
  ResultKind kind = ResultKind::kBytes;
  std::string body;
  std::optional<std::uint64_t> fileSize;  // RESULT_BYTES_FD: the memfd's size
};
// PAYLOAD_KEPT: the worker still maps the job's payload file (os/payload_files.h).
struct PayloadKept {
  std::uint64_t jobId = 0;
};
// HANDLER_ERROR: the handler raised.
struct JobError {
  std::uint64_t jobId = 0;
  ErrorInfo error;
};
// Fields of the wrong type are left at their defaults, as a worker that sends none.
struct Heartbeat {
  std::uint64_t jobId = 0;
  std::uint64_t progress = 0;
  double cpuSeconds = 0;
  std::string stack;
};
// Zygote only: the answer to FORK `requestId`. `pid` is in (1, INT32_MAX], a pid_t on Linux.
struct Forked {
  std::uint64_t requestId = 0;
  int pid = 0;
};
struct ForkRefused {
  std::uint64_t requestId = 0;
  std::string message;
  bool permanent = true;  // absent means permanent (bulkhead.ForkUnsafe)
};
// The peer closed the stream between frames.
struct Closed {};
// What the peer did wrong; latched.
struct PeerError {
  std::string reason;
};

using ConnectionEvent = std::variant<NeedMore, PeerError, Closed, Hello, Ready, StartFailed, Result,
                                     JobError, Heartbeat, Forked, ForkRefused, PayloadKept>;

class WorkerConnection {
 public:
  enum class Role { kWorker, kZygote };

  // maxBody bounds result frames (the pool's max_payload); control frames are bounded by
  // kMaxControlBody.
  WorkerConnection(Role role, std::uint32_t maxBody)
      : role_(role), maxBody_(maxBody), decoder_(Sender::kWorker, maxBody) {}

  void receive(std::string_view bytes);
  // Zero-copy receive of a large body (FrameDecoder::bodyBuffer): where to read the next bytes
  // to, or empty (then read into your own buffer and receive() it). Empty after an error or EOF.
  std::span<char> bodyBuffer();
  void bodyReceived(std::size_t n);
  // The peer closed its end. Frames already received are still returned; then Closed, or a
  // PeerError if the stream stopped inside a frame.
  void receiveEof();
  ConnectionEvent next();

  Role role() const { return role_; }
  const std::optional<PeerError>& peerError() const { return error_; }
  // Bytes received and not yet returned as events, for the shell's memory accounting.
  std::size_t buffered() const { return decoder_.buffered(); }

 private:
  ConnectionEvent interpret(Frame frame);
  ConnectionEvent workerFrame(Frame frame);
  ConnectionEvent zygoteFrame(Frame frame);
  PeerError fail(std::string reason);

  Role role_;
  std::uint32_t maxBody_;
  FrameDecoder decoder_;
  bool helloSeen_ = false;
  bool eof_ = false;
  std::optional<PeerError> error_;
};

}  // namespace bulkhead::proto
