// The pool's worker indexes: ordered sets and counts updated one worker at a time, so each
// question the pool asks per event costs O(log workers) instead of a scan (see worker_index.h).

#include "core/worker_index.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iterator>

namespace bulkhead::core {

namespace {

// An entry removed that was never added means the pool lost track of a worker: our bug.
[[noreturn]] void indexBroken(const char* what) {
  std::fprintf(stderr, "bulkhead: invariant broken in core::WorkerIndex: %s\n", what);
  std::abort();
}

template <class Set>
std::string describeSet(const char* name, const Set& mine, const Set& theirs) {
  if (mine == theirs) return "";
  return std::string(name) + " differ (" + std::to_string(mine.size()) + " vs " +
         std::to_string(theirs.size()) + " entries)";
}

std::string describeCount(const char* name, std::size_t mine, std::size_t theirs) {
  if (mine == theirs) return "";
  return std::string(name) + " count " + std::to_string(mine) + " vs " + std::to_string(theirs);
}

}  // namespace

std::set<WorkerId>& WorkerIndex::idleSet(IdleKind kind) {
  switch (kind) {
    case IdleKind::kServing:
      return idleServing_;
    case IdleKind::kRetiring:
      return idleRetiring_;
    case IdleKind::kRetiringOverBound:
      return idleOverBound_;
    case IdleKind::kStandby:
      return idleStandby_;
    case IdleKind::kNotIdle:
      break;
  }
  indexBroken("no idle set for a busy worker");
}

void WorkerIndex::add(WorkerId id, const WorkerIndexEntry& e) {
  if (e.deadline && !deadlines_.emplace(*e.deadline, id).second) indexBroken("deadline twice");
  if (e.idle != IdleKind::kNotIdle && !idleSet(e.idle).insert(id).second) {
    indexBroken("idle twice");
  }
  if (e.standby && !standby_.insert(id).second) indexBroken("standby twice");
  if (e.prefetchableSince && !prefetchable_.emplace(*e.prefetchableSince, id).second) {
    indexBroken("prefetchable twice");
  }
  live_ += e.live;
  ready_ += e.ready;
  serving_ += e.serving;
}

void WorkerIndex::remove(WorkerId id, const WorkerIndexEntry& e) {
  if (e.deadline && deadlines_.erase({*e.deadline, id}) != 1) indexBroken("deadline missing");
  if (e.idle != IdleKind::kNotIdle && idleSet(e.idle).erase(id) != 1) indexBroken("idle missing");
  if (e.standby && standby_.erase(id) != 1) indexBroken("standby missing");
  if (e.prefetchableSince && prefetchable_.erase({*e.prefetchableSince, id}) != 1) {
    indexBroken("prefetchable missing");
  }
  if (live_ < e.live || ready_ < e.ready || serving_ < e.serving) indexBroken("count below zero");
  live_ -= e.live;
  ready_ -= e.ready;
  serving_ -= e.serving;
}

std::optional<Time> WorkerIndex::nextDeadline() const {
  if (deadlines_.empty()) return std::nullopt;
  return deadlines_.begin()->first;
}

std::vector<WorkerId> WorkerIndex::dueBy(Time now) const {
  std::vector<WorkerId> due;
  for (auto it = deadlines_.begin(); it != deadlines_.end() && it->first <= now; ++it) {
    due.push_back(it->second);
  }
  std::sort(due.begin(), due.end());
  return due;
}

std::optional<WorkerId> WorkerIndex::nextToDispatch() const {
  if (!idleServing_.empty()) return *idleServing_.begin();
  if (!idleRetiring_.empty()) return *idleRetiring_.begin();
  return std::nullopt;
}

std::optional<WorkerId> WorkerIndex::nextToPrefetch(Time startedSince) const {
  auto it = prefetchable_.lower_bound({startedSince, WorkerId{0}});
  if (it == prefetchable_.end()) return std::nullopt;
  return it->second;
}

std::vector<WorkerId> WorkerIndex::idleRetiring() const {
  std::vector<WorkerId> out;
  out.reserve(idleRetiring_.size() + idleOverBound_.size());
  std::merge(idleRetiring_.begin(), idleRetiring_.end(), idleOverBound_.begin(),
             idleOverBound_.end(), std::back_inserter(out));
  return out;
}

std::optional<WorkerId> WorkerIndex::standbyToPromote() const {
  if (!idleStandby_.empty()) return *idleStandby_.begin();
  if (!standby_.empty()) return *standby_.begin();
  return std::nullopt;
}

std::optional<WorkerId> WorkerIndex::readyStandby() const {
  if (idleStandby_.empty()) return std::nullopt;
  return *idleStandby_.begin();
}

std::string WorkerIndex::differenceFrom(const WorkerIndex& o) const {
  for (const std::string& d :
       {describeSet("deadlines", deadlines_, o.deadlines_),
        describeSet("idle serving workers", idleServing_, o.idleServing_),
        describeSet("idle retiring workers", idleRetiring_, o.idleRetiring_),
        describeSet("idle workers over a bound", idleOverBound_, o.idleOverBound_),
        describeSet("idle standby workers", idleStandby_, o.idleStandby_),
        describeSet("standby workers", standby_, o.standby_),
        describeSet("prefetchable workers", prefetchable_, o.prefetchable_),
        describeCount("live", live_, o.live_), describeCount("ready", ready_, o.ready_),
        describeCount("serving", serving_, o.serving_)}) {
    if (!d.empty()) return d;
  }
  return "";
}

}  // namespace bulkhead::core
