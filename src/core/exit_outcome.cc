// classifyExit: the one place a process's end becomes a typed outcome (see exit_outcome.h).

#include "core/exit_outcome.h"

#include "core/signal_names.h"

namespace bulkhead::core {

std::string describeExitEvidence(const ExitEvidence& e) {
  if (e.signal) {
    return "killed by " + std::string(signalName(*e.signal)) +
           (e.coreDumped ? " (core dumped)" : "");
  }
  if (e.exitCode) return "exited with code " + std::to_string(*e.exitCode);
  return "vanished";
}

ExitVerdict classifyExit(const ExitFacts& f, const std::string& what) {
  const ExitEvidence& evidence = f.evidence;
  ExitVerdict v;
  v.cause = what + " " + describeExitEvidence(evidence) + " while running the job";
  const bool abnormal = evidence.signal || (evidence.exitCode && *evidence.exitCode != 0);
  const bool ownExit = evidence.exitCode && *evidence.exitCode != 0 && !evidence.signal;
  if (ownExit) v.outcome = f.nonzeroExit;
  if (evidence.oomKilled) {
    v.outcome = Outcome::kOomKilled;
    v.limit = "memory";
    v.limitValue = f.memoryLimitBytes;
    v.cause = "killed by the kernel at its memory limit of " +
              std::to_string(f.memoryLimitBytes >> 20) + " MiB (peak " +
              std::to_string(evidence.memoryPeakBytes >> 20) + " MiB)";
  } else if (abnormal) {
    // Library messages count only when the process exited on its own (code != 0): a signal
    // death is told by its signal, never by what stderr happens to hold (a thread that
    // segfaults can leave unrelated library complaints from other threads in stderr).
    auto exhausted =
        exhaustionOf(f.limits, evidence.exitCode ? evidence.stderrTail : std::string());
    if (exhausted) {
      v.outcome = Outcome::kResourceExhausted;
      v.cause = exhausted->cause;
      v.limit = exhausted->limit;
      v.limitValue = exhausted->limitValue;
    }
  }
  // A refused thread or fork often shows as a hang (a thread pool waiting for a thread that was
  // never created): if the cgroup refused one during this work, that is the cause.
  auto pidsExhausted = [&](const std::string& then) {
    v.outcome = Outcome::kResourceExhausted;
    v.limit = "pids";
    v.limitValue = f.pidsLimit;
    v.cause = "pids_limit of " + std::to_string(f.pidsLimit) +
              " refused a thread or process while the job ran (pids.events max " +
              std::to_string(evidence.pidsMaxEvents) + "); then " + then;
  };
  if (!f.killReason) return v;
  switch (*f.killReason) {
    case ExitKillReason::kTimeout:
      v.outcome = Outcome::kTimedOut;
      v.cause = f.killCause;
      if (f.pidsRefusedDuringWork) pidsExhausted(f.killCause);
      break;
    case ExitKillReason::kHung:
      if (v.outcome == Outcome::kCrashed) v.outcome = Outcome::kHung;
      if (v.outcome == Outcome::kHung) v.cause = f.killCause;
      if (v.outcome == Outcome::kHung && f.pidsRefusedDuringWork) pidsExhausted(f.killCause);
      break;
    case ExitKillReason::kProtocol:
      v.cause = f.killCause;
      break;
    case ExitKillReason::kCancelled:
      v.outcome = Outcome::kCancelled;
      v.cause = f.killCause;
      break;
    case ExitKillReason::kResourceBound:
      if (v.outcome != Outcome::kOomKilled) {
        v.outcome = Outcome::kResourceExhausted;
        v.cause = f.killCause;
        v.limit = f.boundLimit;
        v.limitValue = f.boundValue;
      }
      break;
    case ExitKillReason::kOther:
      break;
  }
  return v;
}

}  // namespace bulkhead::core
