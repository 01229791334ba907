#pragma once
// Exit claims: an exit the shell reaped for a pid it does not know yet. A worker forked by the
// zygote can exit (and be reaped) before the zygote's FORKED frame names its pid; the exit is kept
// here so that FORKED can claim it. Pure and bounded; the shell records and claims. Owns: which
// exits are kept and for how long. May not touch: what an exit means for a worker (core::Pool).
//
// The bound: at most kMaxKept exits, each kept kKeepFor after it was reaped (expired ones are
// dropped when a new one is recorded). Orphans reparented to the supervisor (it is a child
// subreaper) land here too and simply expire.

#include <chrono>
#include <cstddef>
#include <map>
#include <optional>

#include "core/time.h"

namespace bulkhead::core {

class ExitClaims {
 public:
  static constexpr std::size_t kMaxKept = 4096;
  static constexpr Duration kKeepFor = std::chrono::seconds(10);

  // An exit (raw wait status) of a pid nobody claimed yet, reaped at `now`.
  void record(int pid, int status, Time now) {
    std::erase_if(exits_, [&](const auto& e) { return now - e.second.reapedAt > kKeepFor; });
    if (exits_.size() < kMaxKept) exits_[pid] = {status, now};
  }

  // The wait status kept for `pid`, removed as it is claimed; nullopt when none is kept.
  std::optional<int> claim(int pid) {
    auto it = exits_.find(pid);
    if (it == exits_.end()) return std::nullopt;
    const int status = it->second.status;
    exits_.erase(it);
    return status;
  }

  std::size_t size() const { return exits_.size(); }

 private:
  struct Kept {
    int status;
    Time reapedAt;
  };
  std::map<int, Kept> exits_;
};

}  // namespace bulkhead::core
