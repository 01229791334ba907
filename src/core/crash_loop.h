#pragma once
// Crash-loop backoff over a bounded record of recent worker deaths (s6's "N deaths in T").
// A death within the window beyond the first `deathsBeforeBackoff` delays the next spawn by an
// exponentially growing, capped amount; deaths older than the window are forgotten.

#include <chrono>
#include <cstddef>
#include <deque>

#include "core/time.h"

namespace bulkhead::core {

struct CrashLoopPolicy {
  std::size_t deathsBeforeBackoff = 5;
  std::chrono::nanoseconds window = std::chrono::seconds(10);
  std::chrono::nanoseconds baseDelay = std::chrono::milliseconds(100);
  std::chrono::nanoseconds maxDelay = std::chrono::seconds(10);
};

class CrashLoop {
 public:
  using Time = core::Time;

  explicit CrashLoop(CrashLoopPolicy policy) : policy_(policy) {}

  void recordDeath(Time now) {
    forgetOld(now);
    deaths_.push_back(now);
    if (deaths_.size() > kMaxRemembered) deaths_.pop_front();
  }

  // How long to wait before the next spawn, given the deaths remembered now.
  std::chrono::nanoseconds spawnDelay(Time now) {
    forgetOld(now);
    if (deaths_.size() <= policy_.deathsBeforeBackoff) return std::chrono::nanoseconds(0);
    std::size_t excess = deaths_.size() - policy_.deathsBeforeBackoff - 1;
    auto delay = policy_.baseDelay;
    for (std::size_t i = 0; i < excess && delay < policy_.maxDelay; ++i) delay *= 2;
    return delay < policy_.maxDelay ? delay : policy_.maxDelay;
  }

  std::size_t recentDeaths(Time now) {
    forgetOld(now);
    return deaths_.size();
  }

 private:
  static constexpr std::size_t kMaxRemembered = 64;

  void forgetOld(Time now) {
    while (!deaths_.empty() && now - deaths_.front() > policy_.window) deaths_.pop_front();
  }

  CrashLoopPolicy policy_;
  std::deque<Time> deaths_;
};

}  // namespace bulkhead::core
