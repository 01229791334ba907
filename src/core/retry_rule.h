#pragma once
// The one retry decision: whether a failed attempt sends its job back to the queue. Only
// infrastructure failures (the worker died, hung, hit a limit) are retried, never the job's own
// error or timeout; within `retries` extra attempts; never while shutting down or after the
// caller's deadline. Owns: that rule. May not: requeue, count or report (core::Pool does).

#include "core/outcome.h"

namespace bulkhead::core {

struct RetryFacts {
  Outcome outcome;       // of the attempt that just failed
  int attemptsMade = 0;  // including that one
  int retries = 0;       // the pool's policy: attempts allowed = retries + 1
  bool shuttingDown = false;
  bool deadlinePassed = false;  // the caller's end-to-end deadline
};

inline bool shouldRetry(const RetryFacts& f) {
  return isInfrastructureFailure(f.outcome) && f.attemptsMade < f.retries + 1 && !f.shuttingDown &&
         !f.deadlinePassed;
}

}  // namespace bulkhead::core
