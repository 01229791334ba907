// StepScheduler on simulated time: starts, parallelism, timeouts, grace, retries, interrupts.

#include "core/step_scheduler.h"

#include <gtest/gtest.h>

namespace bulkhead::core {
namespace {

using namespace std::chrono_literals;
using Kind = StepAction::Kind;

Time at(Duration d) { return Time(d); }

std::vector<std::size_t> started(const std::vector<StepAction>& actions) {
  std::vector<std::size_t> out;
  for (const auto& a : actions) {
    if (a.kind == Kind::kStart) out.push_back(a.step);
  }
  return out;
}

TEST(StepScheduler, StartsOneAtATimeInOrder) {
  StepScheduler s(3, {});
  EXPECT_EQ(started(s.poll(at(0s))), (std::vector<std::size_t>{0}));
  EXPECT_TRUE(s.poll(at(1s)).empty());
  EXPECT_FALSE(s.ended(0, Outcome::kOk, at(2s)));
  EXPECT_EQ(started(s.poll(at(2s))), (std::vector<std::size_t>{1}));
}

TEST(StepScheduler, ParallelStartsThatMany) {
  StepScheduler s(3, {2, 0, 0s, 10s});
  EXPECT_EQ(started(s.poll(at(0s))), (std::vector<std::size_t>{0, 1}));
  s.ended(1, Outcome::kOk, at(1s));
  EXPECT_EQ(started(s.poll(at(1s))), (std::vector<std::size_t>{2}));
}

TEST(StepScheduler, SkippedStepsNeverStart) {
  StepScheduler s(3, {});
  s.skip(0);
  EXPECT_EQ(started(s.poll(at(0s))), (std::vector<std::size_t>{1}));
}

TEST(StepScheduler, TimeoutTerminatesThenKillsAfterTheGrace) {
  StepScheduler s(1, {1, 0, 5s, 2s});
  s.poll(at(0s));
  EXPECT_EQ(s.nextDeadline(), at(5s));
  EXPECT_TRUE(s.poll(at(4s)).empty());
  auto actions = s.poll(at(5s));
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].kind, Kind::kTerminate);
  EXPECT_EQ(s.stopReason(0), StepStopReason::kTimeout);
  EXPECT_EQ(s.nextDeadline(), at(7s));
  EXPECT_TRUE(s.poll(at(6s)).empty());
  actions = s.poll(at(7s));
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].kind, Kind::kKill);
  EXPECT_TRUE(s.poll(at(60s)).empty()) << "one SIGKILL";
  EXPECT_FALSE(s.ended(0, Outcome::kTimedOut, at(8s))) << "timed_out is not retried";
  EXPECT_TRUE(s.finished());
}

TEST(StepScheduler, InfrastructureFailuresAreRetriedWithinRetries) {
  StepScheduler s(1, {1, 1, 0s, 1s});
  s.poll(at(0s));
  EXPECT_TRUE(s.ended(0, Outcome::kResourceExhausted, at(1s)));
  auto actions = s.poll(at(1s));
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].attempt, 2);
  EXPECT_FALSE(s.ended(0, Outcome::kResourceExhausted, at(2s)));
  EXPECT_EQ(s.attempts(0), 2);
  EXPECT_TRUE(s.finished());
}

TEST(StepScheduler, TheStepsOwnErrorIsNeverRetried) {
  StepScheduler s(1, {1, 3, 0s, 1s});
  s.poll(at(0s));
  EXPECT_FALSE(s.ended(0, Outcome::kHandlerError, at(1s)));
}

TEST(StepScheduler, InterruptStopsRunningStepsAndStartsNothing) {
  StepScheduler s(3, {1, 2, 0s, 3s});
  s.poll(at(0s));
  s.interrupt(at(1s));
  auto actions = s.poll(at(1s));
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].kind, Kind::kTerminate);
  EXPECT_EQ(actions[0].reason, StepStopReason::kInterrupted);
  EXPECT_FALSE(s.finished());
  EXPECT_FALSE(s.ended(0, Outcome::kCrashed, at(2s))) << "no retry after an interrupt";
  EXPECT_TRUE(started(s.poll(at(2s))).empty());
  EXPECT_TRUE(s.finished());
}

TEST(StepScheduler, AWatchedBoundStopsTheStep) {
  StepScheduler s(1, {});
  s.poll(at(0s));
  s.stop(0, StepStopReason::kBound, at(1s));
  auto actions = s.poll(at(1s));
  ASSERT_EQ(actions.size(), 1u);
  EXPECT_EQ(actions[0].kind, Kind::kTerminate);
  EXPECT_EQ(s.stopReason(0), StepStopReason::kBound);
}

}  // namespace
}  // namespace bulkhead::core
