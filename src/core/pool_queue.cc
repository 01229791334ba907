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
      if (from == JobState::kDelivered) {
        job.queueMs += millisBetween(job.queuedAt, now);  // it waited, at the worker too
      } else if (from != JobState::kRunning) {
        invariantFailed("requeue of a job not running");
      }
      job.worker.reset();
      enqueue(job, now, /*front=*/true);  // a retried job goes first: it has waited already
      break;
    case JobState::kDelivered:
      if (from != JobState::kQueued) invariantFailed("prefetch of a job not queued");
      removeFromQueue(job);  // still waiting: queuedAt counts on until it starts
      break;
    case JobState::kRunning:
      if (from == JobState::kQueued) {
        removeFromQueue(job);
      } else if (from != JobState::kDelivered) {
        invariantFailed("dispatch of a job not queued");
      }
      job.dispatched = true;
      job.runStartedAt = now;
      job.queueMs += millisBetween(job.queuedAt, now);
      break;
    case JobState::kFinished:
      if (from == JobState::kFinished) invariantFailed("job finished twice");
      // Delivered jobs start, or go back to the queue when their worker ends: never end there.
      if (from == JobState::kDelivered) invariantFailed("a delivered job finished unstarted");
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
    if (!next) return prefetch(now);
    Worker& chosen = workers_.at(*next);
    Job& job = jobs_.at(queue_.front());
    startJob(chosen, job, now);
    actions_.push_back(SendJob{chosen.id, job.id, job.payload});
  }
}

void Pool::startJob(Worker& w, Job& job, Time now) {
  setJobState(job, JobState::kRunning, now);
  job.worker = w.id;
  w.job = job.id;
  // The busy deadline (deadlineFor) and the prefetch index are computed from these: set them
  // before the state change files the worker in the index.
  w.jobStartedAt = now;
  w.jobDeadline = now + job.timeout;
  if (job.deadline && *job.deadline < w.jobDeadline) w.jobDeadline = *job.deadline;
  w.lastProgressAt = now;
  w.pidsEventsAtDispatch = w.latestSample ? w.latestSample->pidsMaxEvents : 0;
  w.lastBeatAt = now;
  w.lastBeat.reset();
  w.jobEndSample.reset();
  setWorkerState(w, WorkerState::kBusy, now);
}

// ---------------------------------------------------------------- prefetch

// Prefetch saves each job the worker's wait for the daemon (a wake-up both ways) while jobs
// queue. A delivered job cannot be taken back, so it is bounded to short jobs: the pool's average
// run time and the running job's time so far both under prefetch_below. What it changes:
//   - its job starts when the worker answers the one ahead; its timeout counts from then;
//   - if the worker ends before that answer, the job never ran: first in the queue again, with
//     no attempt counted;
//   - cancelled while delivered, it ends as a running job's cancel does, as it starts;
//   - a worker recycled at the end of the job ahead runs the delivered one first.
// Only inline payloads: a payload file is lent to one worker's running job (os/payload_files.h).
bool Pool::prefetching() const {
  constexpr std::uint64_t kRunTimesFirst = 4;  // no average to judge by before these
  return policy_.prefetchBelow.count() > 0 && runTimesSeen_ >= kRunTimesFirst &&
         runTimeAverageMs_ <
             std::chrono::duration<double, std::milli>(policy_.prefetchBelow).count();
}

void Pool::prefetch(Time now) {
  if (!prefetching()) return;
  while (!queue_.empty()) {
    Job& job = jobs_.at(queue_.front());
    if (job.payload && job.payload->inFile()) return;
    const std::optional<WorkerId> next = index_.nextToPrefetch(now - policy_.prefetchBelow);
    if (!next) return;
    Worker& w = workers_.at(*next);
    setJobState(job, JobState::kDelivered, now);
    job.worker = w.id;
    w.nextJob = job.id;
    reindex(w);
    counters_.prefetched++;
    actions_.push_back(SendJob{w.id, job.id, job.payload});
  }
}

bool Pool::startDelivered(Worker& w, Time now) {
  if (!w.nextJob) return false;
  Job& job = jobs_.at(*w.nextJob);
  w.nextJob.reset();
  startJob(w, job, now);
  if (job.cancelOnStart) beginKill(w, KillReason::kCancelled, "cancelled by the caller", now);
  return true;
}

void Pool::requeueDelivered(Worker& w, Time now) {
  if (!w.nextJob) return;
  Job& job = jobs_.at(*w.nextJob);
  w.nextJob.reset();
  reindex(w);
  counters_.prefetchReturns++;
  note("requeued", w,
       "job " + std::to_string(job.id) +
           " waited at the worker behind a job it never answered: first in the queue again",
       now, job.id);
  setJobState(job, JobState::kQueued, now);
  // Never ran: a cancel asked for meanwhile ends it as a queued job's does, and so does a
  // shutdown past its deadline (whose queued jobs were cancelled already).
  if (job.cancelOnStart) {
    finish(job, Outcome::kCancelled, "cancelled by the caller", now);
  } else if (shuttingDown_ && !shutdownDeadline_) {
    finish(job, Outcome::kCancelled, "the supervisor shut down before the job could run", now);
  }
}

void Pool::observeRunTime(const Worker& w, Time now) {
  const double ms = millisBetween(w.jobStartedAt, now);
  constexpr double kWeight = 0.125;  // about the last eight jobs
  runTimeAverageMs_ =
      runTimesSeen_++ == 0 ? ms : runTimeAverageMs_ + kWeight * (ms - runTimeAverageMs_);
}

void Pool::failQueued(Outcome outcome, const std::string& detail, Time now) {
  while (!queue_.empty()) finish(jobs_.at(queue_.front()), outcome, detail, now);
}

}  // namespace bulkhead::core
