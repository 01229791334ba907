#pragma once
// Sans-I/O codec for the worker protocol (docs/protocol.md), shaped like h11: the caller feeds
// bytes as they arrive and pulls whole frames out. The decoder validates magic, version, type and
// length before buffering a body, and its first error latches: a peer that sent one bad byte is
// never trusted again.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace bulkhead::proto {

inline constexpr std::uint8_t kMagic0 = 0x42;  // 'B'
inline constexpr std::uint8_t kMagic1 = 0x4B;  // 'K'
inline constexpr std::uint8_t kVersion = 1;
inline constexpr std::size_t kHeaderSize = 16;
inline constexpr std::uint32_t kMaxControlBody = 1u << 20;
// Bodies from this size on are received straight into their own buffer (FrameDecoder).
inline constexpr std::size_t kDirectBodyMin = 64 * 1024;

enum class FrameType : std::uint8_t {
  kHello = 0x01,
  kReady = 0x02,
  kStartFailed = 0x03,
  kResultBytes = 0x10,
  kResultJson = 0x11,
  kResultText = 0x12,
  kHandlerError = 0x13,
  // RESULT_BYTES whose bytes are in a sealed memfd riding along as SCM_RIGHTS; the body is the
  // size (kFileSizeBody bytes). Also JOB_FD, the same for a job's payload.
  kResultBytesFd = 0x14,
  // Empty body, before the job's answer: the worker still maps the job's JOB_FD file (a handler
  // kept a view of its payload), so the daemon must not write another payload into it.
  kPayloadKept = 0x15,
  kHeartbeat = 0x20,
  // Zygote only (docs/protocol.md, "Zygote"): the answer to a FORK, with the request's id.
  kForked = 0x30,
  kForkRefused = 0x31,
  kJob = 0x80,
  kShutdown = 0x81,
  kFork = 0x82,  // zygote only; the new worker's fds ride along as SCM_RIGHTS
  kJobFd = 0x83,
};

// The body of RESULT_BYTES_FD and JOB_FD: the file's size, u64 little-endian.
inline constexpr std::uint32_t kFileSizeBody = 8;
std::string encodeFileSize(std::uint64_t size);
std::uint64_t decodeFileSize(std::string_view body);  // body is kFileSizeBody bytes

// Which side sends: the decoder only accepts the other side's frame types.
enum class Sender { kWorker, kSupervisor };

struct Frame {
  FrameType type;
  std::uint64_t jobId = 0;
  std::string body;
};

std::string_view frameTypeName(FrameType type);

// Encodes the header for a frame whose body the caller sends right after it (no copy of big
// bodies).
std::string encodeHeader(FrameType type, std::uint64_t jobId, std::uint32_t bodyLength);
std::string encodeFrame(FrameType type, std::uint64_t jobId, std::string_view body);

struct NeedMore {};
struct DecodeError {
  std::string reason;
};
using DecodeResult = std::variant<Frame, NeedMore, DecodeError>;

class FrameDecoder {
 public:
  // maxBody bounds result and job frames; control frames are bounded by kMaxControlBody.
  // directBodyMin: from which body size bodyBuffer() applies (smaller only in tests and fuzzing).
  FrameDecoder(Sender from, std::uint32_t maxBody, std::size_t directBodyMin = kDirectBodyMin)
      : from_(from), maxBody_(maxBody), directBodyMin_(directBodyMin) {}

  void feed(std::string_view bytes);
  DecodeResult next();
  // The zero-copy pair for large bodies: while a body of at least directBodyMin bytes is
  // incomplete (and nothing else is buffered), the unfilled rest of that body's own buffer, to
  // receive into; report what was written with bodyReceived(n). Empty otherwise: use feed().
  // A 64 MiB result then crosses the daemon once (kernel to its final string), not three times.
  std::span<char> bodyBuffer();
  void bodyReceived(std::size_t n);
  // The peer closed the stream: an error if it stopped in the middle of a frame.
  std::optional<DecodeError> finish() const;
  bool failed() const { return error_.has_value(); }
  std::size_t buffered() const {
    return buffer_.size() - consumed_ + (pending_ ? kHeaderSize + pendingFill_ : 0);
  }

 private:
  std::optional<DecodeError> checkHeader(const unsigned char* header) const;
  void emptyBuffer();

  Sender from_;
  std::uint32_t maxBody_;
  std::size_t directBodyMin_;
  std::string buffer_;
  std::size_t consumed_ = 0;
  // A large frame whose body is being received in place (see bodyBuffer()).
  std::optional<Frame> pending_;
  std::size_t pendingFill_ = 0;
  std::optional<DecodeError> error_;
};

}  // namespace bulkhead::proto
