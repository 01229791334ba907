#pragma once
// Which way a job's payload travels to its worker: inline in the job frame, or in a sealed memfd
// (docs/protocol.md, "Large payloads by memfd"). Pure policy over the configured thresholds and
// what the pool's workers said in READY. Owns: that choice. May not touch: how either way is
// carried out (api/file_body.*, runtime/worker_channel.cc).
//
// Why the handler matters: a memfd spares a copy only for a handler that takes a memoryview (the
// worker maps it). A handler that takes bytes copies the payload anyway, and every memfd is fresh
// memory: about 0.3 ms per MiB on a VM with free page reporting, which made a 1 MiB bytes echo 35%
// slower than inline (BENCHMARKS.md, "The payload path: memfd or inline"). So such a handler's
// payloads travel as its bytes results do: inline below memfd_result_threshold.

#include <algorithm>
#include <cstdint>
#include <optional>

namespace bulkhead::core {

// The payload size from which a job goes by memfd; 0: never. `handlerTakesView`: READY's
// payload_view (none: not said, e.g. an older SDK: the configured memfd_threshold applies).
inline std::uint64_t payloadMemfdFrom(std::uint64_t memfdThreshold, std::uint64_t resultThreshold,
                                      std::optional<bool> handlerTakesView) {
  if (memfdThreshold == 0) return 0;  // memfds off, both ways
  if (handlerTakesView.value_or(true) || resultThreshold == 0) return memfdThreshold;
  return std::max(memfdThreshold, resultThreshold);
}

}  // namespace bulkhead::core
