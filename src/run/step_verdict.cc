// judgeStep: see step_verdict.h.

#include "run/step_verdict.h"

#include <sys/wait.h>

#include "core/exit_outcome.h"
#include "core/signal_names.h"
#include "run/step_report.h"

namespace bulkhead::run {

StepVerdict judgeStep(const StepEnd& end, const StepLimitsSet& limits) {
  core::ExitFacts facts;
  core::ExitEvidence& e = facts.evidence;
  if (WIFSIGNALED(end.rawStatus)) {
    e.signal = WTERMSIG(end.rawStatus);
    e.coreDumped = WCOREDUMP(end.rawStatus);
  } else if (WIFEXITED(end.rawStatus)) {
    e.exitCode = WEXITSTATUS(end.rawStatus);
  }
  std::string tail = end.stderrTail;
  if (tail.size() > kEvidenceTailBytes) tail = tail.substr(tail.size() - kEvidenceTailBytes);
  e.stderrTail = tail;
  e.stderrDroppedBytes =
      end.stderrTotalBytes > tail.size() ? end.stderrTotalBytes - tail.size() : 0;
  e.oomKilled = end.oomKills > 0;
  e.memoryPeakBytes = end.memoryPeakBytes;
  e.pidsMaxEvents = end.pidsMaxEvents;
  facts.limits.oomKilled = e.oomKilled;
  facts.limits.memoryLimitBytes = limits.memoryBytes;
  facts.limits.memoryPeakBytes = e.memoryPeakBytes;
  facts.limits.pidsLimit = limits.pids;
  facts.limits.pidsMaxEvents = e.pidsMaxEvents;
  core::ResourceSample last;
  last.rssBytes = end.rssBytes;
  last.threads = end.threads;
  last.maps = end.largestProcessMaps;
  facts.limits.lastSample = last;
  facts.memoryLimitBytes = limits.memoryBytes;
  facts.pidsLimit = limits.pids;
  facts.pidsRefusedDuringWork = e.pidsMaxEvents > 0;  // a fresh cgroup per attempt
  facts.nonzeroExit = core::Outcome::kHandlerError;
  if (end.stopReason) {
    switch (*end.stopReason) {
      case core::StepStopReason::kTimeout:
        facts.killReason = core::ExitKillReason::kTimeout;
        facts.killCause = "ran past --timeout of " + formatDuration(limits.timeoutMs);
        break;
      case core::StepStopReason::kInterrupted:
        facts.killReason = core::ExitKillReason::kCancelled;
        facts.killCause =
            std::string("cancelled by ") +
            (end.interruptSignal ? core::signalName(end.interruptSignal) : "interrupt");
        break;
      case core::StepStopReason::kBound:
        facts.killReason = core::ExitKillReason::kResourceBound;
        facts.killCause = "a process of the step reached " +
                          std::to_string(end.largestProcessMaps) + " memory maps (--max-maps " +
                          std::to_string(limits.maxMaps) + ")";
        facts.boundLimit = "maps";
        facts.boundValue = static_cast<std::uint64_t>(limits.maxMaps);
        break;
    }
  }
  StepVerdict v;
  auto& evidence = v.evidence;
  if (!(e.exitCode && *e.exitCode == 0 && !end.stopReason)) {
    core::ExitVerdict verdict = core::classifyExit(facts, "step");
    v.outcome = verdict.outcome;
    // The plain ends read as the step's, not as a pool worker's "... while running the job".
    const bool plain =
        v.outcome == core::Outcome::kHandlerError || v.outcome == core::Outcome::kCrashed;
    evidence["cause"] =
        plain ? "the step's command " + core::describeExitEvidence(e) : verdict.cause;
    if (!verdict.limit.empty()) evidence["limit"] = verdict.limit;
    if (verdict.limitValue) evidence["limit_value"] = verdict.limitValue;
  }
  if (e.exitCode) evidence["exit_code"] = *e.exitCode;
  if (e.signal) {
    evidence["signal"] = core::signalName(*e.signal);
    evidence["signal_number"] = *e.signal;
    evidence["core_dumped"] = e.coreDumped;
  }
  if (v.outcome != core::Outcome::kOk) {
    evidence["stderr_tail"] = e.stderrTail;
    evidence["stderr_dropped_bytes"] = e.stderrDroppedBytes;
  }
  evidence["oom_kills"] = end.oomKills;
  evidence["pids_max_events"] = end.pidsMaxEvents;
  evidence["memory_peak_bytes"] = end.memoryPeakBytes;
  evidence["largest_process_maps"] = end.largestProcessMaps;
  evidence["run_ms"] = end.runMs;
  return v;
}

}  // namespace bulkhead::run
