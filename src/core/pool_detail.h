#pragma once
// Small helpers shared by the files of core::Pool (pool.cc, pool_queue.cc, pool_workers.cc,
// pool_reports.cc, pool_recycle.cc) and by nothing else: time arithmetic for messages, the exit
// wording operators read, and the one way a broken invariant stops the process.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/outcome.h"
#include "core/signal_names.h"
#include "core/time.h"

namespace bulkhead::core::pool_detail {

inline long long millisOf(Duration d) {
  return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

inline double millisBetween(Time from, Time to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// A broken invariant is our bug, not the peer's: stop loudly instead of guessing.
[[noreturn]] inline void invariantFailed(const char* what) {
  std::fprintf(stderr, "bulkhead: invariant broken in core::Pool: %s\n", what);
  std::abort();
}

inline std::string describeExit(const ExitEvidence& e) {
  if (e.signal) {
    return "killed by " + std::string(signalName(*e.signal)) +
           (e.coreDumped ? " (core dumped)" : "");
  }
  if (e.exitCode) return "exited with code " + std::to_string(*e.exitCode);
  return "vanished";
}

}  // namespace bulkhead::core::pool_detail
