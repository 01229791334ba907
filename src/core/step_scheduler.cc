// StepScheduler: see step_scheduler.h.

#include "core/step_scheduler.h"

#include "core/retry_rule.h"

namespace bulkhead::core {

StepScheduler::StepScheduler(std::size_t steps, StepSchedulerConfig config)
    : config_(config), steps_(steps) {
  if (config_.parallel < 1) config_.parallel = 1;
}

void StepScheduler::skip(std::size_t step) { steps_.at(step).phase = StepPhase::kDone; }

std::size_t StepScheduler::running() const {
  std::size_t n = 0;
  for (const auto& s : steps_)
    n += s.phase == StepPhase::kRunning || s.phase == StepPhase::kStopping;
  return n;
}

void StepScheduler::setStopping(Step& s, StepStopReason reason, Time now) {
  s.phase = StepPhase::kStopping;
  s.stopReason = reason;
  s.terminateSent = false;
  s.deadline = now + config_.grace;
}

std::vector<StepAction> StepScheduler::poll(Time now) {
  std::vector<StepAction> actions;
  for (std::size_t i = 0; i < steps_.size(); ++i) {
    Step& s = steps_[i];
    switch (s.phase) {
      case StepPhase::kRunning:
        if (interrupted_) {
          setStopping(s, StepStopReason::kInterrupted, now);
        } else if (s.deadline && *s.deadline <= now) {
          setStopping(s, StepStopReason::kTimeout, now);
        }
        break;
      case StepPhase::kPending:
      case StepPhase::kStopping:
      case StepPhase::kDone:
        break;
    }
    if (s.phase != StepPhase::kStopping) continue;
    if (!s.terminateSent) {
      s.terminateSent = true;
      actions.push_back({StepAction::Kind::kTerminate, i, s.attempts, *s.stopReason});
    } else if (s.deadline && *s.deadline <= now) {
      s.deadline.reset();  // one SIGKILL; the shell waits for the tree to be gone
      actions.push_back({StepAction::Kind::kKill, i, s.attempts, *s.stopReason});
    }
  }
  if (interrupted_) return actions;
  std::size_t active = running();
  for (std::size_t i = 0; i < steps_.size() && active < static_cast<std::size_t>(config_.parallel);
       ++i) {
    Step& s = steps_[i];
    if (s.phase != StepPhase::kPending) continue;
    s.phase = StepPhase::kRunning;
    s.attempts++;
    s.stopReason.reset();
    s.terminateSent = false;
    s.deadline.reset();
    if (config_.timeout.count() > 0) s.deadline = now + config_.timeout;
    actions.push_back({StepAction::Kind::kStart, i, s.attempts, StepStopReason::kTimeout});
    active++;
  }
  return actions;
}

void StepScheduler::stop(std::size_t step, StepStopReason reason, Time now) {
  Step& s = steps_.at(step);
  if (s.phase == StepPhase::kRunning) setStopping(s, reason, now);
}

bool StepScheduler::ended(std::size_t step, Outcome outcome, Time) {
  Step& s = steps_.at(step);
  s.deadline.reset();
  const RetryFacts facts{outcome, s.attempts, config_.retries, interrupted_, false};
  if (outcome != Outcome::kOk && shouldRetry(facts)) {
    s.phase = StepPhase::kPending;
    return true;
  }
  s.phase = StepPhase::kDone;
  return false;
}

void StepScheduler::interrupt(Time) { interrupted_ = true; }

std::optional<Time> StepScheduler::nextDeadline() const {
  std::optional<Time> next;
  for (const auto& s : steps_) {
    if (s.deadline && (!next || *s.deadline < *next)) next = s.deadline;
  }
  return next;
}

bool StepScheduler::finished() const {
  for (const auto& s : steps_) {
    if (s.phase == StepPhase::kRunning || s.phase == StepPhase::kStopping) return false;
    if (s.phase == StepPhase::kPending && !interrupted_) return false;
  }
  return true;
}

}  // namespace bulkhead::core
