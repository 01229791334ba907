#include "proto/frame.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace bulkhead::proto {

namespace {

void putLe(std::string& out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

std::uint64_t getLe(const unsigned char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

bool sentByWorker(std::uint8_t type) {
  switch (type) {
    case 0x01:
    case 0x02:
    case 0x03:
    case 0x10:
    case 0x11:
    case 0x12:
    case 0x13:
    case 0x14:
    case 0x15:
    case 0x20:
    case 0x30:
    case 0x31:
      return true;
    default:
      return false;
  }
}

bool sentBySupervisor(std::uint8_t type) {
  return type == 0x80 || type == 0x81 || type == 0x82 || type == 0x83;
}

bool carriesFileSize(std::uint8_t type) { return type == 0x14 || type == 0x83; }

constexpr std::size_t kKeepCapacity = 1 << 20;

bool carriesPayload(std::uint8_t type) {
  return type == 0x10 || type == 0x11 || type == 0x12 || type == 0x80;
}

}  // namespace

std::string_view frameTypeName(FrameType type) {
  switch (type) {
    case FrameType::kHello:
      return "HELLO";
    case FrameType::kReady:
      return "READY";
    case FrameType::kStartFailed:
      return "START_FAILED";
    case FrameType::kResultBytes:
      return "RESULT_BYTES";
    case FrameType::kResultJson:
      return "RESULT_JSON";
    case FrameType::kResultText:
      return "RESULT_TEXT";
    case FrameType::kHandlerError:
      return "HANDLER_ERROR";
    case FrameType::kResultBytesFd:
      return "RESULT_BYTES_FD";
    case FrameType::kPayloadKept:
      return "PAYLOAD_KEPT";
    case FrameType::kHeartbeat:
      return "HEARTBEAT";
    case FrameType::kJob:
      return "JOB";
    case FrameType::kShutdown:
      return "SHUTDOWN";
    case FrameType::kForked:
      return "FORKED";
    case FrameType::kForkRefused:
      return "FORK_REFUSED";
    case FrameType::kFork:
      return "FORK";
    case FrameType::kJobFd:
      return "JOB_FD";
  }
  return "UNKNOWN";
}

std::string encodeHeader(FrameType type, std::uint64_t jobId, std::uint32_t bodyLength) {
  std::string out;
  out.reserve(kHeaderSize);
  out.push_back(static_cast<char>(kMagic0));
  out.push_back(static_cast<char>(kMagic1));
  out.push_back(static_cast<char>(kVersion));
  out.push_back(static_cast<char>(type));
  putLe(out, bodyLength, 4);
  putLe(out, jobId, 8);
  return out;
}

std::string encodeFileSize(std::uint64_t size) {
  std::string out;
  putLe(out, size, 8);
  return out;
}

std::uint64_t decodeFileSize(std::string_view body) {
  if (body.size() != kFileSizeBody) return 0;
  return getLe(reinterpret_cast<const unsigned char*>(body.data()), 8);
}

std::string encodeFrame(FrameType type, std::uint64_t jobId, std::string_view body) {
  std::string out = encodeHeader(type, jobId, static_cast<std::uint32_t>(body.size()));
  out.append(body);
  return out;
}

void FrameDecoder::feed(std::string_view bytes) {
  if (error_) return;
  if (pending_ && buffer_.size() == consumed_) {  // else the body is whole: bytes queue behind
    const std::size_t take = std::min(bytes.size(), pending_->body.size() - pendingFill_);
    std::memcpy(pending_->body.data() + pendingFill_, bytes.data(), take);
    pendingFill_ += take;
    bytes.remove_prefix(take);
    if (bytes.empty()) return;
  }
  if (consumed_ > 0 && consumed_ >= buffer_.size() / 2) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  }
  buffer_.append(bytes);
}

std::optional<DecodeError> FrameDecoder::checkHeader(const unsigned char* h) const {
  if (h[0] != kMagic0 || h[1] != kMagic1) {
    return DecodeError{"bad magic bytes 0x" + [&] {
      char buf[8];
      std::snprintf(buf, sizeof buf, "%02x%02x", h[0], h[1]);
      return std::string(buf);
    }()};
  }
  if (h[2] != kVersion) {
    return DecodeError{"unsupported protocol version " + std::to_string(h[2])};
  }
  const std::uint8_t type = h[3];
  const bool allowed = from_ == Sender::kWorker ? sentByWorker(type) : sentBySupervisor(type);
  if (!allowed) return DecodeError{"unknown frame type " + std::to_string(type)};
  const std::uint64_t length = getLe(h + 4, 4);
  if (carriesFileSize(type) && length != kFileSizeBody) {
    return DecodeError{"frame " + std::string(frameTypeName(static_cast<FrameType>(type))) +
                       " has a body of " + std::to_string(length) + " bytes, not " +
                       std::to_string(kFileSizeBody)};
  }
  const std::uint64_t limit = carriesPayload(type) ? maxBody_ : kMaxControlBody;
  if (length > limit) {
    return DecodeError{"frame " + std::string(frameTypeName(static_cast<FrameType>(type))) +
                       " of " + std::to_string(length) + " bytes exceeds the limit of " +
                       std::to_string(limit)};
  }
  return std::nullopt;
}

// A 64 MiB frame must not pin 64 MiB per worker for the rest of its life.
void FrameDecoder::emptyBuffer() {
  if (buffer_.capacity() > kKeepCapacity) {
    std::string().swap(buffer_);
  } else {
    buffer_.clear();
  }
}

std::span<char> FrameDecoder::bodyBuffer() {
  if (error_ || !pending_ || buffer_.size() > consumed_) return {};
  return std::span<char>(pending_->body).subspan(pendingFill_);
}

void FrameDecoder::bodyReceived(std::size_t n) {
  if (!pending_ || n > pending_->body.size() - pendingFill_) return;  // a caller bug: ignore
  pendingFill_ += n;
}

DecodeResult FrameDecoder::next() {
  if (error_) return *error_;
  if (pending_) {
    if (pendingFill_ < pending_->body.size()) return NeedMore{};
    Frame frame = std::move(*pending_);
    pending_.reset();
    pendingFill_ = 0;
    return frame;
  }
  const std::size_t available = buffer_.size() - consumed_;
  if (available < kHeaderSize) {
    // Validate what we have early so garbage is refused without waiting for 16 bytes.
    const auto* p = reinterpret_cast<const unsigned char*>(buffer_.data() + consumed_);
    if ((available >= 1 && p[0] != kMagic0) || (available >= 2 && p[1] != kMagic1)) {
      unsigned char h[kHeaderSize] = {};
      std::memcpy(h, p, available);
      error_ = checkHeader(h);
      return *error_;
    }
    return NeedMore{};
  }
  const auto* h = reinterpret_cast<const unsigned char*>(buffer_.data() + consumed_);
  if (auto err = checkHeader(h)) {
    error_ = err;
    return *error_;
  }
  const std::size_t length = getLe(h + 4, 4);
  if (available < kHeaderSize + length) {
    if (length < directBodyMin_) {
      buffer_.reserve(consumed_ + kHeaderSize + length);
      return NeedMore{};
    }
    // Large: the body gets its own buffer of its exact size now; the rest of it is received
    // there (bodyBuffer() or feed()), and the frame leaves without another copy.
    pending_.emplace();
    pending_->type = static_cast<FrameType>(h[3]);
    pending_->jobId = getLe(h + 8, 8);
    pending_->body.resize(length);
    pendingFill_ = available - kHeaderSize;
    std::memcpy(pending_->body.data(), buffer_.data() + consumed_ + kHeaderSize, pendingFill_);
    consumed_ = 0;
    emptyBuffer();
    return NeedMore{};
  }
  Frame frame;
  frame.type = static_cast<FrameType>(h[3]);
  frame.jobId = getLe(h + 8, 8);
  frame.body.assign(buffer_.data() + consumed_ + kHeaderSize, length);
  consumed_ += kHeaderSize + length;
  if (consumed_ == buffer_.size()) {
    emptyBuffer();
    consumed_ = 0;
  }
  return frame;
}

std::optional<DecodeError> FrameDecoder::finish() const {
  if (error_) return error_;
  if (pending_ && pendingFill_ < pending_->body.size()) {
    return DecodeError{"stream ended inside a frame body (" + std::to_string(pendingFill_) +
                       " of " + std::to_string(pending_->body.size()) + " bytes)"};
  }
  if (buffer_.size() != consumed_) {
    return DecodeError{"stream ended inside a frame (" +
                       std::to_string(buffer_.size() - consumed_) + " bytes pending)"};
  }
  return std::nullopt;
}

}  // namespace bulkhead::proto
