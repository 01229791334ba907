#pragma once
// Per-pool circuit breaker. Closed: every job is admitted; `failures` infrastructure failures
// within `window` open it. Open: jobs are refused (the shell sends them to the pool's fallback,
// or they end `unavailable`) until `cooldown` has passed. Half-open: one probe job is admitted;
// its success closes the breaker, its failure opens it again for another cooldown.

#include <chrono>
#include <cstddef>
#include <deque>
#include <string_view>

#include "core/time.h"

namespace bulkhead::core {

struct BreakerPolicy {
  std::size_t failures = 0;  // 0: no breaker
  std::chrono::nanoseconds window = std::chrono::seconds(30);
  std::chrono::nanoseconds cooldown = std::chrono::seconds(10);
};

enum class BreakerState { kClosed, kOpen, kHalfOpen };
std::string_view breakerStateName(BreakerState state);

class Breaker {
 public:
  using Time = core::Time;
  enum class Admission { kAdmit, kProbe, kReject };
  enum class Change { kNone, kOpened, kClosed };

  explicit Breaker(BreakerPolicy policy) : policy_(policy) {}

  Admission admit(Time now) {
    if (policy_.failures == 0) return Admission::kAdmit;
    switch (state_) {
      case BreakerState::kClosed:
        return Admission::kAdmit;
      case BreakerState::kOpen:
        if (now < openedAt_ + policy_.cooldown) return Admission::kReject;
        state_ = BreakerState::kHalfOpen;
        probeInFlight_ = true;
        return Admission::kProbe;
      case BreakerState::kHalfOpen:
        if (probeInFlight_) return Admission::kReject;
        probeInFlight_ = true;
        return Admission::kProbe;
    }
    return Admission::kAdmit;
  }

  // A job that was admitted ended: failed (infrastructure) or not.
  Change record(bool failed, Time now) {
    if (policy_.failures == 0) return Change::kNone;
    switch (state_) {
      case BreakerState::kHalfOpen:
        probeInFlight_ = false;
        if (failed) return open(now);
        failures_.clear();
        state_ = BreakerState::kClosed;
        return Change::kClosed;
      case BreakerState::kOpen:
        return Change::kNone;  // late results of jobs admitted before it opened
      case BreakerState::kClosed:
        if (!failed) return Change::kNone;
        failures_.push_back(now);
        while (!failures_.empty() && now - failures_.front() > policy_.window)
          failures_.pop_front();
        if (failures_.size() >= policy_.failures) return open(now);
        return Change::kNone;
    }
    return Change::kNone;
  }

  BreakerState state() const { return state_; }
  std::size_t recentFailures() const { return failures_.size(); }

 private:
  Change open(Time now) {
    state_ = BreakerState::kOpen;
    openedAt_ = now;
    failures_.clear();
    return Change::kOpened;
  }

  BreakerPolicy policy_;
  BreakerState state_ = BreakerState::kClosed;
  std::deque<Time> failures_;
  Time openedAt_{};
  bool probeInFlight_ = false;
};

inline std::string_view breakerStateName(BreakerState state) {
  switch (state) {
    case BreakerState::kClosed:
      return "closed";
    case BreakerState::kOpen:
      return "open";
    case BreakerState::kHalfOpen:
      return "half_open";
  }
  return "unknown";
}

}  // namespace bulkhead::core
