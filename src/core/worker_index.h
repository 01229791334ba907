#pragma once
// The pool's worker indexes ("O(1) dispatch"): which workers are idle, whose deadline
// comes first, and how many count as live, ready or serving, kept up to date as workers change
// instead of recomputed by scanning every worker on every event.
// Owns: the index structures and the counts. May not touch: what a worker's entry is (Pool
// decides, in pool_index.cc, from its state, retirement and deadline) or when it changes.

#include <cstddef>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/events.h"
#include "core/time.h"

namespace bulkhead::core {

// Which idle list a worker is on; dispatch prefers kServing and never picks kRetiringOverBound or
// kStandby (a standby waits, ready, for a serving worker's place: Pool::promoteStandby).
enum class IdleKind { kNotIdle, kServing, kRetiring, kRetiringOverBound, kStandby };

// Everything the indexes hold about one worker, derived from its fields (Pool::indexEntryFor).
struct WorkerIndexEntry {
  std::optional<Time> deadline;  // when its current state times out
  bool live = false;             // counts towards the target: not retiring, stopping or killed
  bool ready = false;            // idle or busy and not retiring
  bool serving = false;          // idle or busy, retiring or not
  bool standby = false;          // a standby that counts towards the standby target (not live)
  IdleKind idle = IdleKind::kNotIdle;
  // Busy, serving, not retiring, nothing delivered behind its job: may be sent the next one
  // (prefetch). The time its job started: the set is ordered by it.
  std::optional<Time> prefetchableSince;

  bool operator==(const WorkerIndexEntry&) const = default;
};

class WorkerIndex {
 public:
  void add(WorkerId id, const WorkerIndexEntry& entry);
  void remove(WorkerId id, const WorkerIndexEntry& entry);

  std::optional<Time> nextDeadline() const;
  // Workers whose deadline is at or before `now`, in id order (the order events are handled in).
  std::vector<WorkerId> dueBy(Time now) const;
  // Who takes the next job: the lowest id that is idle and not retiring, else the lowest id that
  // is idle and retiring but under its bounds.
  std::optional<WorkerId> nextToDispatch() const;
  // The busy worker to send the next job to ahead of time (prefetch): of those whose job started
  // at or after `startedSince`, the one whose job started first (it should answer first).
  std::optional<WorkerId> nextToPrefetch(Time startedSince) const;
  // Idle retiring workers, over a bound or not, in id order: those retireRecycled() may stop.
  std::vector<WorkerId> idleRetiring() const;
  // The standby that takes a serving worker's place: the lowest id that is ready, else the lowest
  // id still starting (it is further along than a worker not spawned yet).
  std::optional<WorkerId> standbyToPromote() const;
  // The lowest-id standby that is READY, if any.
  std::optional<WorkerId> readyStandby() const;

  std::size_t live() const { return live_; }
  std::size_t ready() const { return ready_; }
  std::size_t serving() const { return serving_; }
  std::size_t standby() const { return standby_.size(); }

  // Empty when both indexes hold the same workers the same way; else what differs (for tests).
  std::string differenceFrom(const WorkerIndex& other) const;

 private:
  std::set<WorkerId>& idleSet(IdleKind kind);

  std::set<std::pair<Time, WorkerId>> deadlines_;
  std::set<WorkerId> idleServing_;
  std::set<WorkerId> idleRetiring_;
  std::set<WorkerId> idleOverBound_;
  std::set<WorkerId> idleStandby_;
  std::set<WorkerId> standby_;
  std::set<std::pair<Time, WorkerId>> prefetchable_;
  std::size_t live_ = 0;
  std::size_t ready_ = 0;
  std::size_t serving_ = 0;
};

}  // namespace bulkhead::core
