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

// How the worker state machine works: a worker is spawned (kSpawning), starts (kStarting), serves
// (kIdle <-> kBusy), and ends by a graceful stop (kStopping) or by the kill escalation: stacks
// first when they explain the kill (kKillSettling), then SIGTERM (kKillTerminating), then
// SIGKILL (kKillKilling), then the pool gives the process up. It leaves the table by exiting
// (WorkerExited), from any state. Every state has one deadline (deadlineFor); what its passing
// does is expireDeadlines()'s switch.
bool workerTransitionAllowed(WorkerState from, WorkerState to) {
  switch (to) {
    case WorkerState::kSpawning:
      return false;  // only a new worker is spawning
    case WorkerState::kStarting:
      return from == WorkerState::kSpawning;
    case WorkerState::kIdle:
      return from == WorkerState::kStarting || from == WorkerState::kBusy;
    case WorkerState::kBusy:
      return from == WorkerState::kIdle;
    case WorkerState::kStopping:
      return from == WorkerState::kIdle;
    case WorkerState::kKillSettling:  // stacks explain a timeout, a hang or a stuck start
      return from == WorkerState::kStarting || from == WorkerState::kBusy;
    case WorkerState::kKillTerminating:
      return from == WorkerState::kStarting || from == WorkerState::kIdle ||
             from == WorkerState::kBusy || from == WorkerState::kStopping ||
             from == WorkerState::kKillSettling;
    case WorkerState::kKillKilling:
      return from == WorkerState::kKillTerminating;
  }
  return false;
}

void Pool::setWorkerState(Worker& worker, WorkerState next, Time now) {
  if (!workerTransitionAllowed(worker.state, next)) {
    invariantFailed("illegal worker state transition");
  }
  worker.state = next;
  worker.stateSince = now;  // the clock of every state's deadline (deadlineFor)
  reindex(worker);          // so the deadline and idle indexes cannot drift from the state
}

// The one place a worker's deadline is decided: by its state, from when it entered it. A busy
// worker's is its job's end or, with hang detection, the end of its last progress, whichever
// comes first (busyDeadline).
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
    case WorkerState::kKillSettling:
      return w.stateSince + policy_.stackSettle;
    case WorkerState::kKillTerminating:
      return w.stateSince + policy_.killGrace;
    case WorkerState::kKillKilling:
      return w.stateSince + policy_.killWait;
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
  const bool anyReady = index_.serving() > 0;  // idle or busy, retiring or not
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
  if (wantStacks) {
    setWorkerState(w, WorkerState::kKillSettling, now);
    actions_.push_back(DumpStacks{w.id});
  } else {
    setWorkerState(w, WorkerState::kKillTerminating, now);
    actions_.push_back(SignalWorkerGroup{w.id, GroupSignal::kTerminate});
  }
}

// A kill step's deadline passed: take the next step.
void Pool::advanceKill(Worker& w, Time now) {
  switch (w.state) {
    case WorkerState::kKillSettling:
      setWorkerState(w, WorkerState::kKillTerminating, now);
      actions_.push_back(SignalWorkerGroup{w.id, GroupSignal::kTerminate});
      return;
    case WorkerState::kKillTerminating:
      setWorkerState(w, WorkerState::kKillKilling, now);
      actions_.push_back(SignalWorkerGroup{w.id, GroupSignal::kKill});
      return;
    case WorkerState::kKillKilling: {
      // SIGKILL did not end it (uninterruptible sleep). Stop waiting: settle the job as if it
      // exited, keep reaping in the shell, and let a replacement take the slot.
      ExitEvidence none;
      none.signal = 9;
      WorkerExited gone{w.id, none};
      on(gone, now);
      return;
    }
    case WorkerState::kSpawning:
    case WorkerState::kStarting:
    case WorkerState::kIdle:
    case WorkerState::kBusy:
    case WorkerState::kStopping:
      invariantFailed("kill step for a worker not being killed");
  }
}

void Pool::beginStop(Worker& w, Time now) {
  setWorkerState(w, WorkerState::kStopping, now);
  actions_.push_back(SendShutdown{w.id});
}

void Pool::expireDeadlines(Time now) {
  // Handled in id order; one step may end or change another worker, hence the re-check below.
  const std::vector<WorkerId> due = index_.dueBy(now);
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
      case WorkerState::kKillSettling:
      case WorkerState::kKillTerminating:
      case WorkerState::kKillKilling:
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
  promoteStandby(now);
  spawnMissing(now);
  dispatch(now);
  retireRecycled(now);
  driveShutdown(now);
}

int Pool::freeSlot() const {
  std::set<int> taken;
  for (const auto& [id, w] : workers_) {
    if (!w.retiring() && w.state != WorkerState::kStopping && !isKilling(w.state)) {
      taken.insert(w.slot);
    }
  }
  int slot = 0;
  while (taken.count(slot)) ++slot;
  return slot;
}

// A serving worker left the target (it died, is being killed, or retires): a standby takes its
// place before anything is spawned, so the pool is back at strength as soon as the standby is
// READY, which it usually already is. Not gated by the crash-loop backoff: nothing is started.
void Pool::promoteStandby(Time now) {
  if (shuttingDown_) return;
  while (static_cast<int>(index_.live()) < policy_.workers) {
    const std::optional<WorkerId> id = index_.standbyToPromote();
    if (!id) return;
    Worker& w = workers_.at(*id);
    w.standby = false;
    reindex(w);
    counters_.standbyPromotions++;
    note("promoted", w,
         w.state == WorkerState::kIdle ? "standby took a serving worker's place, ready"
                                       : "standby took a serving worker's place, still starting",
         now);
  }
  // A standby READY while a serving worker still starts trades places with it: no job waits for
  // a start while a ready process stands by. live - ready counts the serving workers starting.
  while (index_.live() > index_.ready()) {
    const std::optional<WorkerId> ready = index_.readyStandby();
    if (!ready) return;
    Worker* starting = nullptr;
    for (auto& [id, w] : workers_) {  // rare: a worker starts while a standby is ready
      if (!w.standby && !w.retiring() &&
          (w.state == WorkerState::kSpawning || w.state == WorkerState::kStarting)) {
        starting = &w;
        break;
      }
    }
    if (!starting) invariantFailed("live workers over ready ones, none of them starting");
    Worker& promoted = workers_.at(*ready);
    promoted.standby = false;
    reindex(promoted);
    starting->standby = true;
    reindex(*starting);
    // Not a promotion (bulkhead_standby_promotions_total): no worker left the pool.
    note("swapped", promoted,
         "standby was ready before " + workerName(starting->id) + ", which stands by instead", now);
  }
}

void Pool::spawnMissing(Time now) {
  if (shuttingDown_) return;
  if (spawnNotBefore_) {
    if (now < *spawnNotBefore_) return;
    spawnNotBefore_.reset();
  }
  // Live: not retiring, stopping or being killed (spawning and starting ones count). Serving
  // workers first, then standbys.
  const int live = static_cast<int>(index_.live());
  const int standby = static_cast<int>(index_.standby());
  const int missing = std::max(0, policy_.workers - live);
  const int missingStandby = std::max(0, policy_.standby - standby);
  for (int i = 0; i < missing + missingStandby; ++i) {
    Worker w;
    w.id = nextWorkerId_++;
    w.slot = freeSlot();
    w.standby = i >= missing;
    w.startedAt = now;
    actions_.push_back(SpawnWorker{w.id, w.slot});
    auto [it, inserted] = workers_.emplace(w.id, std::move(w));
    if (!inserted) invariantFailed("duplicate worker id");
    reindex(it->second);
  }
}

void Pool::retireRecycled(Time now) {
  // A retiring worker stops once its replacements are ready (stopping it changes no ready
  // count: retiring workers are not ready), or at once when shutting down.
  if (static_cast<int>(index_.ready()) < policy_.workers && !shuttingDown_) return;
  for (WorkerId id : index_.idleRetiring()) beginStop(workers_.at(id), now);
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
  const bool anyoneCanServe = index_.serving() > 0;  // idle or busy, retiring or not
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
