// The pool's worker indexes kept in step with its workers: what entry a worker has (from its
// state, retirement and deadline), re-filing it whenever one of those changes, and the test-only
// check that the indexes equal what a full scan of the workers would build.
// Owns: index_ and each worker's `indexed` entry. May not touch: any worker field the entry is
// derived from (setWorkerState, setRetirement and recordProgress write those, then call here).

#include <string>

#include "core/pool.h"

namespace bulkhead::core {

WorkerIndexEntry Pool::indexEntryFor(const Worker& w) const {
  WorkerIndexEntry e;
  e.deadline = deadlineFor(w);
  const bool serving = w.state == WorkerState::kIdle || w.state == WorkerState::kBusy;
  e.serving = serving;
  e.ready = serving && !w.retiring();
  e.live = !w.retiring() && w.state != WorkerState::kStopping && !isKilling(w.state);
  if (w.standby) {
    // Neither serving nor ready nor live: it stands outside dispatch and the pool's target, and
    // counts towards its own. Retiring, it is never dispatched to, only stopped.
    e.standby = e.live;
    e.live = e.ready = e.serving = false;
    if (w.state == WorkerState::kIdle) {
      e.idle = w.retiring() ? IdleKind::kRetiringOverBound : IdleKind::kStandby;
    }
    return e;
  }
  if (w.state == WorkerState::kBusy && !w.retiring() && !w.nextJob &&
      policy_.prefetchBelow.count() > 0 &&
      (policy_.maxJobs == 0 || w.jobsServed + 2 <= policy_.maxJobs)) {
    e.prefetchableSince = w.jobStartedAt;  // max_jobs: the running job and the delivered one
  }
  if (w.state == WorkerState::kIdle) {
    switch (w.retirement) {
      case Retirement::kNone:
        e.idle = IdleKind::kServing;
        break;
      case Retirement::kRetiring:
        e.idle = IdleKind::kRetiring;
        break;
      case Retirement::kRetiringOverBound:
        e.idle = IdleKind::kRetiringOverBound;
        break;
    }
  }
  return e;
}

// Cheap when nothing the indexes hold changed (a heartbeat with no new deadline, say).
void Pool::reindex(Worker& w) {
  WorkerIndexEntry entry = indexEntryFor(w);
  if (w.indexed == entry) return;
  if (w.indexed) index_.remove(w.id, *w.indexed);
  index_.add(w.id, entry);
  w.indexed = std::move(entry);
}

std::string Pool::indexProblems() const {
  WorkerIndex scanned;
  for (const auto& [id, w] : workers_) {
    const WorkerIndexEntry entry = indexEntryFor(w);
    if (w.indexed != entry) {
      return "worker " + workerName(id) + " (" + std::string(workerStateName(w.state)) +
             ") is indexed out of date: a field changed without reindex()";
    }
    scanned.add(id, entry);
  }
  return index_.differenceFrom(scanned);
}

}  // namespace bulkhead::core
