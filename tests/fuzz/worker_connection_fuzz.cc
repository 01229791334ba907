// libFuzzer target: everything a worker or zygote sends is untrusted. WorkerConnection must never
// crash, throw, read out of bounds or buffer past its limit; a PeerError latches; nothing comes
// after Closed; no event comes before Hello; and the events do not depend on how the stream was
// split into reads.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "proto/worker_connection.h"

namespace {

using bulkhead::proto::ConnectionEvent;
using bulkhead::proto::WorkerConnection;

constexpr std::uint32_t kMaxBody = 4096;

// Feeds `stream` in reads of `chunk` bytes, then EOF; returns the index of each event's
// alternative, ending with Closed or PeerError.
std::vector<std::size_t> run(WorkerConnection::Role role, std::string_view stream,
                             std::size_t chunk) {
  WorkerConnection conn(role, kMaxBody);
  std::vector<std::size_t> kinds;
  bool ended = false;
  auto pull = [&] {
    for (;;) {
      ConnectionEvent event = conn.next();
      if (ended) {
        // A PeerError or Closed is the last word, and latched: asking again gives it again.
        if (event.index() != kinds.back()) __builtin_trap();
        return;
      }
      if (std::holds_alternative<bulkhead::proto::NeedMore>(event)) return;
      const bool hello = std::holds_alternative<bulkhead::proto::Hello>(event);
      const bool last = std::holds_alternative<bulkhead::proto::PeerError>(event) ||
                        std::holds_alternative<bulkhead::proto::Closed>(event);
      if (kinds.empty() && !hello && !last) __builtin_trap();  // HELLO first
      if (auto* r = std::get_if<bulkhead::proto::Result>(&event)) {
        if (r->body.size() > kMaxBody) __builtin_trap();  // limits hold
      }
      if (auto* f = std::get_if<bulkhead::proto::Forked>(&event)) {
        if (f->pid <= 1) __builtin_trap();
      }
      kinds.push_back(event.index());
      if (last) ended = true;
    }
  };
  while (!stream.empty()) {
    const std::size_t n = stream.size() < chunk ? stream.size() : chunk;
    conn.receive(stream.substr(0, n));
    stream.remove_prefix(n);
    pull();
    if (conn.buffered() > bulkhead::proto::kMaxControlBody + bulkhead::proto::kHeaderSize + chunk) {
      __builtin_trap();
    }
  }
  conn.receiveEof();
  pull();
  if (!ended) __builtin_trap();  // after EOF the connection always ends
  return kinds;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // The first byte picks the role and how the stream is split into reads, as a socket would.
  const auto role =
      data[0] & 0x80 ? WorkerConnection::Role::kZygote : WorkerConnection::Role::kWorker;
  const std::size_t chunk = 1 + data[0] % 64;
  std::string_view stream(reinterpret_cast<const char*>(data + 1), size - 1);
  // The same bytes read all at once give the same events.
  if (run(role, stream, chunk) != run(role, stream, stream.size() + 1)) __builtin_trap();
  return 0;
}
