// The pool's queue: job state transitions (setJobState is their only writer), queue order, the
// queue deadlines and what happens when one passes, and dispatch of queued jobs to idle workers.
// Owns: jobs_ order in queue_, queueDeadlines_. May not touch: worker states other than through
// setWorkerState (pool_workers.cc), nor assemble reports (finish() in pool_reports.cc does).

#include <algorithm>
#include <string>

#include "core/pool.h"
#include "core/pool_detail.h"

namespace bulkhead::core {

using pool_detail::invariantFailed;
using pool_detail::millisBetween;
using pool_detail::millisOf;

// ---------------------------------------------------------------- job transitions

void Pool::setJobState(Job& job, JobState next, Time now) {
  const JobState from = job.state;
  switch (next) {
    case JobState::kQueued:
      if (from != JobState::kRunning) invariantFailed("requeue of a job not running");
      job.worker.reset();
      enqueue(job, now, /*front=*/true);  // a retried job goes first: it has waited already
      break;
    case JobState::kRunning:
      if (from != JobState::kQueued) invariantFailed("dispatch of a job not queued");
      removeFromQueue(job);
      job.dispatched = true;
      job.runStartedAt = now;
      job.queueMs += millisBetween(job.queuedAt, now);
      break;
    case JobState::kFinished:
      if (from == JobState::kFinished) invariantFailed("job finished twice");
      if (from == JobState::kQueued) {
        removeFromQueue(job);
        job.queueMs += millisBetween(job.queuedAt, now);  // overloaded reports the real wait
      }
      break;
  }
  job.state = next;
}

void Pool::removeFromQueue(const Job& job) {
  if (!queue_.empty() && queue_.front() == job.id) {
    queue_.pop_front();
  } else {
    queue_.erase(std::remove(queue_.begin(), queue_.end(), job.id), queue_.end());
  }
  dropQueueDeadline(job);
}

void Pool::dropQueueDeadline(const Job& job) {
  if (!job.queueDeadline) return;
  auto [from, to] = queueDeadlines_.equal_range(*job.queueDeadline);
  for (auto it = from; it != to; ++it) {
    if (it->second == job.id) {
      queueDeadlines_.erase(it);
      break;
    }
  }
}

// Deadlines, one meaning each (docs/api.md, "Deadlines"): job_timeout bounds one attempt's run;
// queue_timeout bounds a sync job's wait for a worker (async jobs wait without a limit unless
// async_queue_timeout is set); the caller's deadline bounds everything.
std::optional<Time> Pool::queueDeadlineFor(const Job& job, Time now) const {
  std::optional<Time> until;
  if (!job.async) {
    until = now + policy_.queueTimeout;
  } else if (policy_.asyncQueueTimeout) {
    until = now + *policy_.asyncQueueTimeout;
  }
  if (job.deadline && (!until || *job.deadline < *until)) until = job.deadline;
  return until;
}

void Pool::enqueue(Job& job, Time now, bool front) {
  job.queuedAt = now;
  job.queueDeadline = queueDeadlineFor(job, now);
  if (front) {
    queue_.push_front(job.id);
  } else {
    queue_.push_back(job.id);
  }
  if (job.queueDeadline) queueDeadlines_.emplace(*job.queueDeadline, job.id);
}

// A worker still starting will have one to offer until its startup deadline: the queue waits for
// it (a cold start with a slow preload must not turn the first jobs away).
std::optional<Time> Pool::latestStartupDeadline() const {
  std::optional<Time> latest;
  for (const auto& [id, w] : workers_) {
    if (w.retiring() || w.state != WorkerState::kStarting) continue;
    const std::optional<Time> deadline = deadlineFor(w);
    if (deadline && (!latest || *deadline > *latest)) latest = deadline;
  }
  return latest;
}

// ---------------------------------------------------------------- queue deadlines

void Pool::expireQueued(Job& job, Time now) {
  const std::string waited =
      "waited " + std::to_string(static_cast<long long>(millisBetween(job.queuedAt, now))) +
      " ms in the queue of pool '" + policy_.name + "' without a free worker";
  if (job.deadline && *job.deadline <= now) {
    job.stage = "queued";
    const std::string why = "the caller's deadline passed after " +
                            std::to_string(millisOf(now - job.submittedAt)) + " ms; " + waited;
    if (!job.attempts.empty()) {
      const AttemptRecord& last = job.attempts.back();
      return finish(job, Outcome::kTimedOut, last.cause + "; then " + why, now);
    }
    return finish(job, Outcome::kTimedOut, why, now);
  }
  // Still starting: a worker is on its way, so wait for it, at most until its startup deadline
  // and never longer than one startup_timeout past the queue's own limit.
  if (auto starting = latestStartupDeadline(); starting && *starting > now) {
    const Time original = queueDeadlineFor(job, job.queuedAt).value_or(now);
    Time until = std::min(*starting, original + policy_.startupTimeout);
    if (job.deadline) until = std::min(until, *job.deadline);
    if (until > now) {
      dropQueueDeadline(job);
      job.queueDeadline = until;
      queueDeadlines_.emplace(until, job.id);
      return;
    }
  }
  if (!job.attempts.empty()) {
    // A retry that found no worker in time: the caller must hear how the job failed (say a
    // SIGABRT), not an invitation to resubmit it.
    const AttemptRecord& last = job.attempts.back();
    return finish(job, last.outcome, last.cause + "; no retry possible: " + waited, now);
  }
  finish(job, Outcome::kOverloaded, waited, now);
}

// ---------------------------------------------------------------- dispatch

void Pool::dispatch(Time now) {
  while (!queue_.empty()) {
    // The lowest idle id not retiring, else the lowest idle retiring one still under its bounds.
    const std::optional<WorkerId> next = index_.nextToDispatch();
    if (!next) return;
    Worker& chosen = workers_.at(*next);
    Job& job = jobs_.at(queue_.front());
    setJobState(job, JobState::kRunning, now);
    job.worker = chosen.id;
    chosen.job = job.id;
    // The busy deadline (deadlineFor) is computed from these: set them before the state change
    // files the worker's deadline in the index.
    chosen.jobDeadline = now + job.timeout;
    if (job.deadline && *job.deadline < chosen.jobDeadline) chosen.jobDeadline = *job.deadline;
    chosen.lastProgressAt = now;
    chosen.pidsEventsAtDispatch = chosen.latestSample ? chosen.latestSample->pidsMaxEvents : 0;
    chosen.lastBeatAt = now;
    chosen.lastBeat.reset();
    chosen.jobEndSample.reset();
    setWorkerState(chosen, WorkerState::kBusy, now);
    actions_.push_back(SendJob{chosen.id, job.id, job.payload});
  }
}

void Pool::failQueued(Outcome outcome, const std::string& detail, Time now) {
  while (!queue_.empty()) finish(jobs_.at(queue_.front()), outcome, detail, now);
}

}  // namespace bulkhead::core
