// Recycling and resources: when a busy worker counts as hung, what a worker's samples and job
// count say after each job (afterJob, the recycle rules over its bounded history), marking it
// retiring, and the limit evidence its death is judged by.
// Owns: a worker's retirement, recycleCause and its history. May not touch: stopping or
// killing the worker (retireRecycled in pool_workers.cc does), nor any job.

#include <algorithm>
#include <string>

#include "core/pool.h"
#include "core/pool_detail.h"

namespace bulkhead::core {

using pool_detail::millisOf;

Time Pool::busyDeadline(const Worker& w) const {
  if (policy_.hangAfter.count() <= 0) return w.jobDeadline;
  return std::min(w.jobDeadline, w.lastProgressAt + policy_.hangAfter);
}

void Pool::recordProgress(Worker& w, Time now) {
  w.lastProgressAt = now;
  reindex(w);  // with hang detection, progress pushes the busy deadline out
}

std::string Pool::hangCause(const Worker& w, Time now) const {
  const Duration quiet = now - w.lastBeatAt;
  if (quiet >= policy_.hangAfter) {
    return "no heartbeat for " + std::to_string(millisOf(quiet)) +
           " ms (native code holding the GIL, or the process is frozen)";
  }
  return "no progress for " + std::to_string(millisOf(now - w.lastProgressAt)) +
         " ms: heartbeats show no CPU growth, the same stack and no ctx.progress()";
}

void Pool::afterJob(Worker& w, Time now) {
  if (w.jobEndSample) {
    w.history.record(w.jobsServed, *w.jobEndSample);
    w.jobEndSample.reset();
  }
  if (policy_.maxJobs > 0 && w.jobsServed >= policy_.maxJobs)
    return recycle(w, RecycleCause::kJobs, now);
  checkRecycleRules(w, now);
}

void Pool::checkRecycleRules(Worker& w, Time now) {
  if (w.retiring()) {
    // Retiring on a trend, it may still serve while its replacement starts, but not once a
    // bound is crossed or its next job would cross one: then it waits idle for the replacement.
    if (w.latestSample && w.retirement != Retirement::kRetiringOverBound &&
        nextJobWouldCross(*w.latestSample, w.history, policy_.bounds, w.jobsServed)) {
      setRetirement(w, Retirement::kRetiringOverBound);
    }
    return;
  }
  if (policy_.maxAge.count() > 0 && now - w.startedAt >= policy_.maxAge) {
    return recycle(w, RecycleCause::kAge, now);
  }
  if (!w.latestSample) return;
  auto cause = recycleCause(*w.latestSample, w.history, policy_.bounds);
  // recycleCause looks ahead from the latest sample by the usual gap between samples; when the
  // last jobs went uncounted (the maps budget skips fast jobs, a periodic sample may be older),
  // project from the last job-end sample over every job since, as a retiring worker's check does.
  if (!cause) cause = nextJobCrossing(*w.latestSample, w.history, policy_.bounds, w.jobsServed);
  if (cause) recycle(w, *cause, now);
}

void Pool::setRetirement(Worker& w, Retirement next) {
  w.retirement = next;
  reindex(w);  // a retiring worker leaves the live count and moves to another idle list
}

void Pool::recycle(Worker& w, RecycleCause cause, Time now) {
  if (w.retiring()) return;
  // A crossed bound (not a predicted one), an exhausted worker, or max_jobs with
  // max_jobs_strict takes no further job.
  const bool overBound =
      recycleCauseCrossedBound(cause) || (cause == RecycleCause::kJobs && policy_.maxJobsStrict) ||
      (w.latestSample &&
       nextJobWouldCross(*w.latestSample, w.history, policy_.bounds, w.jobsServed));
  setRetirement(w, overBound ? Retirement::kRetiringOverBound : Retirement::kRetiring);
  w.recycleCause = cause;
  const std::string word(recycleCauseName(cause));
  counters_.recycles++;
  counters_.recyclesByCause[word]++;
  note("recycled", w, word, now);
}

LimitEvidence Pool::limitsOf(const Worker& w, const ExitEvidence* exit) const {
  LimitEvidence l;
  l.memoryLimitBytes = policy_.memoryLimitBytes;
  l.pidsLimit = policy_.pidsLimit;
  l.lastSample = w.latestSample;
  if (exit) {
    l.oomKilled = exit->oomKilled;
    l.memoryPeakBytes = exit->memoryPeakBytes;
    l.pidsMaxEvents = exit->pidsMaxEvents;
  }
  return l;
}

}  // namespace bulkhead::core
