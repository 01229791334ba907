#pragma once
// When a pool's zygote (mode = "zygote") should be started, killed or left alone. The zygote is
// the template process that ran `preload` once and forks workers on request; the shell reports
// what happened to it and asks these questions on every timer tick. Workers already forked do
// not depend on it: it is only needed for the next replacement.
//
//   down --start--> starting --READY--> ready --exit--> down (backoff) --start--> ...
//                       |                 |
//                       +---exit----------+--FORK_REFUSED--> refused (for good: preload is
//                                                            deterministic, a restart refuses too)
//
// Overdue, so the shell kills it: still starting after startupTimeout (a hung preload), or a FORK
// unanswered after forkTimeout (a hung zygote). Each death without a successful fork since the
// last one doubles the restart delay, up to backoffMax.

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>

#include "core/time.h"

namespace bulkhead::core {

struct ZygotePolicy {
  std::chrono::nanoseconds startupTimeout = std::chrono::seconds(60);
  std::chrono::nanoseconds forkTimeout = std::chrono::seconds(10);
  std::chrono::nanoseconds backoffBase = std::chrono::milliseconds(100);
  std::chrono::nanoseconds backoffMax = std::chrono::seconds(30);
};

class ZygoteLifecycle {
 public:
  using Time = core::Time;
  using Duration = std::chrono::nanoseconds;
  enum class State { kDown, kStarting, kReady, kRefused };

  explicit ZygoteLifecycle(ZygotePolicy policy) : policy_(policy) {}

  static const char* stateName(State state) {
    switch (state) {
      case State::kDown:
        return "down";
      case State::kStarting:
        return "starting";
      case State::kReady:
        return "ready";
      case State::kRefused:
        return "refused";
    }
    return "unknown";
  }

  State state() const { return state_; }
  int starts() const { return starts_; }
  int deaths() const { return deaths_; }
  const std::string& refusal() const { return refusal_; }

  void started(Time now) {
    state_ = State::kStarting;
    startedAt_ = now;
    forksInFlight_ = 0;
    starts_++;
  }
  void ready() {
    if (state_ == State::kStarting) state_ = State::kReady;
  }
  void forkSent(Time now) {
    if (forksInFlight_++ == 0) oldestForkAt_ = now;
  }
  // A FORKED (or FORK_REFUSED) answer. The fork deadline then runs from now: it measures a
  // zygote that stopped answering, not a long queue of requests.
  // After a fork the zygote is known to work, so its next death restarts it without delay.
  void forkAnswered(Time now) {
    if (forksInFlight_ == 0) return;
    if (--forksInFlight_ > 0) oldestForkAt_ = now;
    failuresInARow_ = 0;
  }
  void refused(std::string why) {
    state_ = State::kRefused;
    refusal_ = std::move(why);
    forksInFlight_ = 0;
  }
  // Died, or was killed. A refused zygote stays refused.
  void exited(Time now) {
    deaths_++;
    forksInFlight_ = 0;
    if (state_ == State::kRefused) return;
    state_ = State::kDown;
    restartAt_ = now + (failuresInARow_ == 0 ? Duration(0) : backoff(failuresInARow_));
    failuresInARow_++;
  }

  bool shouldStart(Time now) const { return state_ == State::kDown && now >= restartAt_; }
  bool acceptsForks() const { return state_ == State::kReady; }
  bool overdue(Time now) const {
    if (state_ == State::kStarting) return now - startedAt_ >= policy_.startupTimeout;
    return state_ == State::kReady && forksInFlight_ > 0 &&
           now - oldestForkAt_ >= policy_.forkTimeout;
  }
  std::optional<Time> nextDeadline() const {
    switch (state_) {
      case State::kDown:
        return restartAt_;
      case State::kStarting:
        return startedAt_ + policy_.startupTimeout;
      case State::kReady:
        if (forksInFlight_ > 0) return oldestForkAt_ + policy_.forkTimeout;
        return std::nullopt;
      case State::kRefused:
        return std::nullopt;
    }
    return std::nullopt;
  }

 private:
  Duration backoff(int failures) const {
    Duration delay = policy_.backoffBase;
    for (int i = 1; i < failures && delay < policy_.backoffMax; ++i) delay *= 2;
    return std::min(delay, policy_.backoffMax);
  }

  ZygotePolicy policy_;
  State state_ = State::kDown;
  Time startedAt_{};
  Time restartAt_{};
  Time oldestForkAt_{};
  int forksInFlight_ = 0;
  int failuresInARow_ = 0;
  int starts_ = 0;
  int deaths_ = 0;
  std::string refusal_;
};

}  // namespace bulkhead::core
