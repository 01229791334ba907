// Worker lifecycle: state transitions (setWorkerState is their only writer), spawning to the
// target, start failures and crash-loop backoff, worker deadlines, the kill escalation (stacks,
// SIGTERM, SIGKILL, give up), graceful stops, retiring recycled workers, and shutdown.
// Owns: workers_, spawnNotBefore_, start-failure tallies, shutdown. May not touch: a job's
// report (pool_reports.cc) or the queue's internals (pool_queue.cc) other than by their calls.

#include <algorithm>
#include <set>
#include <string>

#include "core/pool.h"
#include "core/pool_detail.h"

namespace bulkhead::core {

using pool_detail::invariantFailed;
using pool_detail::millisOf;

// ---------------------------------------------------------------- worker transitions

void Pool::setWorkerState(Worker& worker, WorkerState next, Time now) {
  const WorkerState from = worker.state;
  bool legal = false;
  switch (next) {
    case WorkerState::kSpawning:
      legal = false;
      break;
    case WorkerState::kStarting:
      legal = from == WorkerState::kSpawning;
      break;
    case WorkerState::kIdle:
      legal = from == WorkerState::kStarting || from == WorkerState::kBusy;
      break;
    case WorkerState::kBusy:
      legal = from == WorkerState::kIdle;
      break;
    case WorkerState::kStopping:
      legal = from == WorkerState::kIdle;
      break;
    case WorkerState::kKilling:
      legal = from == WorkerState::kStarting || from == WorkerState::kBusy ||
              from == WorkerState::kIdle || from == WorkerState::kStopping ||
              from == WorkerState::kKilling;
      break;
  }
  if (!legal) invariantFailed("illegal worker state transition");
  worker.state = next;
  worker.stateSince = now;  // the clock of every state's deadline (deadlineFor)
}

// The one place a worker's deadline is decided: by its state (and kill phase), from when it
// entered it. A busy worker's is its job's end or, with hang detection, the end of its last
// progress, whichever comes first (busyDeadline).
std::optional<Time> Pool::deadlineFor(const Worker& w) const {
  switch (w.state) {
    case WorkerState::kSpawning:
    case WorkerState::kIdle:
      return std::nullopt;
    case WorkerState::kStarting:
      return w.stateSince + policy_.startupTimeout;
    case WorkerState::kBusy:
      return busyDeadline(w);
    case WorkerState::kStopping:
      return w.stateSince + policy_.stopGrace;
    case WorkerState::kKilling:
      switch (w.killPhase) {
        case KillPhase::kSettleStacks:
          return w.stateSince + policy_.stackSettle;
        case KillPhase::kTerminate:
          return w.stateSince + policy_.killGrace;
        case KillPhase::kKill:
          return w.stateSince + policy_.killWait;
      }
      break;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------- start failures

void Pool::backOffSpawns(Time now) {
  crashLoop_.recordDeath(now);
  // Each death in a crash loop pushes the next spawn out; ready workers are not affected.
  auto delay = crashLoop_.spawnDelay(now);
  if (delay.count() > 0 && (!spawnNotBefore_ || *spawnNotBefore_ < now + delay)) {
    spawnNotBefore_ = now + delay;
  }
}

void Pool::recordStartFailure(AttemptRecord record, Time now) {
  counters_.startFailures++;
  consecutiveStartFailures_++;
  lastStartFailure_ = std::move(record);
  bool anyReady = std::any_of(workers_.begin(), workers_.end(), [](const auto& kv) {
    return kv.second.state == WorkerState::kIdle || kv.second.state == WorkerState::kBusy;
  });
  if (!anyReady && consecutiveStartFailures_ >= policy_.startFailureLimit) {
    unavailable_ = true;
    failQueued(Outcome::kUnavailable,
               "no worker of pool '" + policy_.name + "' could start: " + lastStartFailure_->cause,
               now);
  }
}

// ---------------------------------------------------------------- killing

void Pool::beginKill(Worker& w, KillReason reason, std::string cause, Time now) {
  if (w.state == WorkerState::kSpawning) invariantFailed("kill of a worker without a process");
  w.killReason = reason;
  w.killCause = std::move(cause);
  const bool wantStacks = reason == KillReason::kJobTimeout || reason == KillReason::kHung ||
                          reason == KillReason::kStartupTimeout;
  w.killPhase = wantStacks ? KillPhase::kSettleStacks : KillPhase::kTerminate;
  setWorkerState(w, WorkerState::kKilling, now);
  if (wantStacks) {
    actions_.push_back(DumpStacks{w.id});
  } else {
    actions_.push_back(SignalWorkerGroup{w.id, GroupSignal::kTerminate});
  }
}

void Pool::advanceKill(Worker& w, Time now) {
  switch (w.killPhase) {
    case KillPhase::kSettleStacks:
      w.killPhase = KillPhase::kTerminate;
      setWorkerState(w, WorkerState::kKilling, now);
      actions_.push_back(SignalWorkerGroup{w.id, GroupSignal::kTerminate});
      return;
    case KillPhase::kTerminate:
      w.killPhase = KillPhase::kKill;
      setWorkerState(w, WorkerState::kKilling, now);
      actions_.push_back(SignalWorkerGroup{w.id, GroupSignal::kKill});
      return;
    case KillPhase::kKill: {
      // SIGKILL did not end it (uninterruptible sleep). Stop waiting: settle the job as if it
      // exited, keep reaping in the shell, and let a replacement take the slot.
      ExitEvidence none;
      none.signal = 9;
      WorkerExited gone{w.id, none};
      on(gone, now);
      return;
    }
  }
}

void Pool::beginStop(Worker& w, Time now) {
  setWorkerState(w, WorkerState::kStopping, now);
  actions_.push_back(SendShutdown{w.id});
}

void Pool::expireDeadlines(Time now) {
  std::vector<WorkerId> due;
  for (auto& [id, w] : workers_) {
    if (auto deadline = deadlineFor(w); deadline && *deadline <= now) due.push_back(id);
  }
  for (WorkerId id : due) {
    Worker* w = findWorker(id);
    if (!w) continue;
    if (auto deadline = deadlineFor(*w); !deadline || *deadline > now) continue;
    switch (w->state) {
      case WorkerState::kStarting:
        beginKill(*w, KillReason::kStartupTimeout,
                  "startup_timeout: not ready after " +
                      std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         policy_.startupTimeout)
                                         .count()) +
                      " ms",
                  now);
        break;
      case WorkerState::kBusy: {
        const Job& job = jobs_.at(*w->job);
        if (w->jobDeadline > now) {
          beginKill(*w, KillReason::kHung, hangCause(*w, now), now);
          break;
        }
        const bool callersDeadline = job.deadline && *job.deadline <= now;
        beginKill(*w, KillReason::kJobTimeout,
                  callersDeadline ? "the caller's deadline passed after " +
                                        std::to_string(millisOf(now - job.submittedAt)) +
                                        " ms, while the job ran (attempt " +
                                        std::to_string(job.attempts.size() + 1) + ")"
                                  : "job ran longer than its timeout of " +
                                        std::to_string(millisOf(job.timeout)) + " ms",
                  now);
        break;
      }
      case WorkerState::kStopping:
        beginKill(*w, KillReason::kStopTimeout, "did not exit after SHUTDOWN", now);
        break;
      case WorkerState::kKilling:
        advanceKill(*w, now);
        break;
      case WorkerState::kSpawning:
      case WorkerState::kIdle:
        break;  // no deadline in these states
    }
  }
  while (!queue_.empty()) {
    if (queueDeadlines_.empty() || queueDeadlines_.begin()->first > now) break;
    expireQueued(jobs_.at(queueDeadlines_.begin()->second), now);
  }
}

// ---------------------------------------------------------------- rebalance

void Pool::rebalance(Time now) {
  spawnMissing(now);
  dispatch(now);
  retireRecycled(now);
  driveShutdown(now);
}

int Pool::freeSlot() const {
  std::set<int> taken;
  for (const auto& [id, w] : workers_) {
    if (!w.retiring && w.state != WorkerState::kStopping && w.state != WorkerState::kKilling) {
      taken.insert(w.slot);
    }
  }
  int slot = 0;
  while (taken.count(slot)) ++slot;
  return slot;
}

void Pool::spawnMissing(Time now) {
  if (shuttingDown_) return;
  if (spawnNotBefore_) {
    if (now < *spawnNotBefore_) return;
    spawnNotBefore_.reset();
  }
  int live = 0;
  for (const auto& [id, w] : workers_) {
    live += !w.retiring && w.state != WorkerState::kStopping && w.state != WorkerState::kKilling;
  }
  for (; live < policy_.workers; ++live) {
    Worker w;
    w.id = nextWorkerId_++;
    w.slot = freeSlot();
    w.startedAt = now;
    actions_.push_back(SpawnWorker{w.id, w.slot});
    workers_.emplace(w.id, std::move(w));
  }
}

void Pool::retireRecycled(Time now) {
  int ready = 0;
  for (const auto& [id, w] : workers_) {
    ready += !w.retiring && (w.state == WorkerState::kIdle || w.state == WorkerState::kBusy);
  }
  for (auto& [id, w] : workers_) {
    if (!w.retiring || w.state != WorkerState::kIdle) continue;
    if (ready >= policy_.workers || shuttingDown_) beginStop(w, now);
  }
}

void Pool::driveShutdown(Time now) {
  if (!shuttingDown_) return;
  if (shutdownDeadline_ && *shutdownDeadline_ <= now) {
    shutdownDeadline_.reset();
    failQueued(Outcome::kCancelled, "the supervisor shut down before the job could run", now);
    for (auto& [id, w] : workers_) {
      if (w.state == WorkerState::kBusy) {
        beginKill(w, KillReason::kShutdown, "the supervisor shut down while the job ran", now);
      }
    }
  }
  const bool anyoneCanServe = std::any_of(workers_.begin(), workers_.end(), [](const auto& kv) {
    return kv.second.state == WorkerState::kIdle || kv.second.state == WorkerState::kBusy;
  });
  if (!anyoneCanServe) {
    failQueued(Outcome::kCancelled, "the supervisor shut down with no worker left to run the job",
               now);
  }
  if (!queue_.empty()) return;
  for (auto& [id, w] : workers_) {
    if (w.state == WorkerState::kIdle) beginStop(w, now);
    if (w.state == WorkerState::kStarting) {
      beginKill(w, KillReason::kShutdown, "the supervisor shut down", now);
    }
  }
  std::vector<WorkerId> unspawned;
  for (auto& [id, w] : workers_) {
    if (w.state == WorkerState::kSpawning) unspawned.push_back(id);
  }
  for (WorkerId id : unspawned) {
    actions_.push_back(ReleaseWorker{id});
    removeWorker(id);
  }
  if (jobs_.empty()) shutdownDeadline_.reset();
}

}  // namespace bulkhead::core
