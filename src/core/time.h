#pragma once
// The core's own time: a point on a clock the core declares but can never read. Every rule in
// src/core takes `now` as a parameter; only the shell owns a real clock and converts at its edge
// with fromSteady()/toSteady(). Owns: the Time and Duration types. May not: read any clock.

#include <chrono>
#include <cstdint>

namespace bulkhead::core {

// A clock tag in the std::chrono sense, without now(): naming it cannot read the time.
struct CoreClock {
  using rep = std::int64_t;
  using period = std::nano;
  using duration = std::chrono::duration<rep, period>;
  using time_point = std::chrono::time_point<CoreClock, duration>;
  static constexpr bool is_steady = true;
};

using Duration = std::chrono::nanoseconds;
using Time = CoreClock::time_point;

// The shell's edge: a monotonic reading becomes core time with the same epoch, and back (for
// arming a real timer at a core deadline). Pure conversions; the caller supplies the reading.
inline Time fromSteady(std::chrono::steady_clock::time_point t) {
  return Time(std::chrono::duration_cast<Duration>(t.time_since_epoch()));
}
inline std::chrono::steady_clock::time_point toSteady(Time t) {
  return std::chrono::steady_clock::time_point(
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(t.time_since_epoch()));
}

}  // namespace bulkhead::core
