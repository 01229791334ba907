#pragma once
// The policy of `bulkhead run`: which step starts next, when a running step is past its time
// limit, when a stopped step gets SIGKILL after its grace, and whether a failed attempt is
// retried. Pure and clock-free: the shell passes `now` in and carries out the actions.
//
// How this works: every step is kPending -> kRunning -> kStopping (we asked it to end) -> kDone,
// and a retried attempt goes back to kPending. poll(now) is the one place that hands out actions:
// Start while fewer than `parallel` steps run and no interrupt came (in list order), Terminate for
// a running step past its timeout (or every running step after interrupt()), Kill for a stopping
// step past its grace. ended(step, outcome) records the attempt's outcome; an infrastructure
// failure (core::isInfrastructureFailure) is retried while attempts <= retries, never after an
// interrupt. Steps already ok in the state store are marked done before the first poll.

#include <cstddef>
#include <optional>
#include <vector>

#include "core/outcome.h"
#include "core/time.h"

namespace bulkhead::core {

struct StepSchedulerConfig {
  int parallel = 1;
  int retries = 0;
  Duration timeout{0};  // 0: none
  Duration grace = std::chrono::seconds(10);
};

enum class StepPhase { kPending, kRunning, kStopping, kDone };
enum class StepStopReason { kTimeout, kInterrupted, kBound };

struct StepAction {
  enum class Kind { kStart, kTerminate, kKill };
  Kind kind;
  std::size_t step;
  int attempt = 0;  // kStart: 1 for the first attempt
  StepStopReason reason = StepStopReason::kTimeout;
};

class StepScheduler {
 public:
  StepScheduler(std::size_t steps, StepSchedulerConfig config);

  // A step that needs no run (ok in the state store).
  void skip(std::size_t step);
  // Start / Terminate / Kill actions due at `now`; a Start moves the step to kRunning at `now`.
  std::vector<StepAction> poll(Time now);
  // The shell ends a running step itself (e.g. a watched bound was crossed): Terminate now.
  void stop(std::size_t step, StepStopReason reason, Time now);
  // The step's process tree is gone; returns true when the step is queued for another attempt.
  bool ended(std::size_t step, Outcome outcome, Time now);
  // Ctrl-C / SIGTERM: running steps are stopped, nothing new starts, nothing is retried.
  void interrupt(Time now);

  std::optional<Time> nextDeadline() const;
  bool finished() const;  // nothing runs and nothing more will start
  bool interrupted() const { return interrupted_; }
  StepPhase phase(std::size_t step) const { return steps_.at(step).phase; }
  int attempts(std::size_t step) const { return steps_.at(step).attempts; }
  // Why we stopped the step's current attempt, if we did.
  std::optional<StepStopReason> stopReason(std::size_t step) const {
    return steps_.at(step).stopReason;
  }
  std::size_t running() const;

 private:
  struct Step {
    StepPhase phase = StepPhase::kPending;
    int attempts = 0;
    std::optional<Time> deadline;  // kRunning: timeout; kStopping: end of grace
    std::optional<StepStopReason> stopReason;
    bool terminateSent = false;
  };
  void setStopping(Step& s, StepStopReason reason, Time now);

  StepSchedulerConfig config_;
  std::vector<Step> steps_;
  bool interrupted_ = false;
};

}  // namespace bulkhead::core
