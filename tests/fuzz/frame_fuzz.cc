// libFuzzer target: worker frames are untrusted input. The decoder must never crash, never read
// out of bounds, never buffer more than the limit, and once failed stay failed.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

#include "proto/frame.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace bulkhead::proto;
  if (size < 2) return 0;
  // The first byte picks how the stream is split into reads, as a socket would; the second from
  // which body size bodies are received in place (bodyBuffer), and whether this run uses it.
  const std::size_t chunk = 1 + data[0] % 64;
  const bool direct = data[1] & 1;
  FrameDecoder decoder(Sender::kWorker, 4096, 1 + data[1] / 2 * 16);
  std::string_view rest(reinterpret_cast<const char*>(data + 2), size - 2);
  bool failed = false;
  while (!rest.empty()) {
    std::size_t n = rest.size() < chunk ? rest.size() : chunk;
    std::span<char> into = direct ? decoder.bodyBuffer() : std::span<char>();
    if (!into.empty()) {
      n = n < into.size() ? n : into.size();
      std::memcpy(into.data(), rest.data(), n);
      decoder.bodyReceived(n);
    } else {
      decoder.feed(rest.substr(0, n));
    }
    rest.remove_prefix(n);
    for (;;) {
      auto result = decoder.next();
      if (std::holds_alternative<NeedMore>(result)) break;
      if (std::holds_alternative<DecodeError>(result)) {
        failed = true;
        break;
      }
      const Frame& frame = std::get<Frame>(result);
      if (failed) __builtin_trap();                    // errors latch
      if (frame.body.size() > 4096) __builtin_trap();  // limits hold
    }
    if (decoder.buffered() > 4096 + kHeaderSize + 64) __builtin_trap();
  }
  (void)decoder.finish();
  return 0;
}
