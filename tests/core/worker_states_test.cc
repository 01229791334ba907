// The worker state machine: its transition table (every pair checked), the kill escalation as
// states, each with its own deadline, and what operators see of them. Simulated time only.

#include <gtest/gtest.h>

#include <set>
#include <utility>

#include "core/pool.h"
#include "testlib/actions.h"
#include "testlib/pool_fixture.h"

namespace bulkhead::core {
namespace {

using namespace std::chrono_literals;
using testlib::count;
using testlib::only;

constexpr WorkerState kAll[] = {WorkerState::kSpawning,
                                WorkerState::kStarting,
                                WorkerState::kIdle,
                                WorkerState::kBusy,
                                WorkerState::kStopping,
                                WorkerState::kKillSettling,
                                WorkerState::kKillTerminating,
                                WorkerState::kKillKilling};

TEST(WorkerStatesTest, TransitionTableAllowsExactlyTheseMoves) {
  using S = WorkerState;
  const std::set<std::pair<S, S>> allowed = {
      {S::kSpawning, S::kStarting},
      {S::kStarting, S::kIdle},
      {S::kBusy, S::kIdle},
      {S::kIdle, S::kBusy},
      {S::kIdle, S::kStopping},
      {S::kStarting, S::kKillSettling},
      {S::kBusy, S::kKillSettling},
      {S::kStarting, S::kKillTerminating},
      {S::kIdle, S::kKillTerminating},
      {S::kBusy, S::kKillTerminating},
      {S::kStopping, S::kKillTerminating},
      {S::kKillSettling, S::kKillTerminating},
      {S::kKillTerminating, S::kKillKilling},
  };
  for (S from : kAll) {
    for (S to : kAll) {
      EXPECT_EQ(workerTransitionAllowed(from, to), allowed.count({from, to}) == 1)
          << workerStateName(from) << " -> " << workerStateName(to);
    }
  }
}

TEST(WorkerStatesTest, KillStepsAllReadKillingAndNothingElseDoes) {
  for (WorkerState s : kAll) {
    EXPECT_EQ(workerStateName(s) == "killing", isKilling(s)) << static_cast<int>(s);
  }
  EXPECT_TRUE(isKilling(WorkerState::kKillSettling));
  EXPECT_TRUE(isKilling(WorkerState::kKillTerminating));
  EXPECT_TRUE(isKilling(WorkerState::kKillKilling));
}

class KillEscalationTest : public testlib::PoolFixture {
 protected:
  void SetUp() override { make(policy(1)); }
  // The first worker (a killed one's replacement comes after it).
  WorkerView view() { return pool_->workers().front(); }
};

TEST_F(KillEscalationTest, TimeoutWalksSettlingTerminatingKillingThenGivesUp) {
  auto ids = startReady();
  ASSERT_TRUE(submit(1, 2s));
  advance(2s);
  EXPECT_EQ(view().state, WorkerState::kKillSettling);
  EXPECT_EQ(count<DumpStacks>(last_), 1u);
  advance(200ms);
  EXPECT_EQ(view().state, WorkerState::kKillTerminating);
  auto term = only<SignalWorkerGroup>(last_);
  ASSERT_EQ(term.size(), 1u);
  EXPECT_EQ(term[0].signal, GroupSignal::kTerminate);
  advance(1s);
  EXPECT_EQ(view().state, WorkerState::kKillKilling);
  auto kill = only<SignalWorkerGroup>(last_);
  ASSERT_EQ(kill.size(), 1u);
  EXPECT_EQ(kill[0].signal, GroupSignal::kKill);
  advance(5s);  // SIGKILL did not end it: given up and its job settled
  EXPECT_EQ(count<ReleaseWorker>(last_), 1u);
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kTimedOut);
  for (const auto& w : pool_->workers()) EXPECT_NE(w.id, ids[0]);
}

TEST_F(KillEscalationTest, CancelSkipsTheStacksAndStartsAtTerminating) {
  startReady();
  ASSERT_TRUE(submit(1));
  feed(JobCancelled{1});
  EXPECT_EQ(view().state, WorkerState::kKillTerminating);
  EXPECT_EQ(count<DumpStacks>(last_), 0u);
}

TEST_F(KillEscalationTest, StopThatTimesOutIsTerminatedWithoutStacks) {
  startReady();
  feed(ShutdownRequested{});
  EXPECT_EQ(view().state, WorkerState::kStopping);
  advance(2s);
  EXPECT_EQ(view().state, WorkerState::kKillTerminating);
  EXPECT_EQ(count<DumpStacks>(last_), 0u);
}

TEST_F(KillEscalationTest, StartupTimeoutDumpsStacksFirst) {
  auto spawns = only<SpawnWorker>(feed(TimePassed{}));
  ASSERT_EQ(spawns.size(), 1u);
  feed(WorkerSpawned{spawns[0].worker, 1234});
  advance(5s);
  EXPECT_EQ(view().state, WorkerState::kKillSettling);
  EXPECT_EQ(count<DumpStacks>(last_), 1u);
}

TEST_F(KillEscalationTest, ExitDuringAKillStepEndsTheWorker) {
  startReady();
  ASSERT_TRUE(submit(1, 2s));
  advance(2s);
  advance(200ms);
  ASSERT_EQ(view().state, WorkerState::kKillTerminating);
  feed(WorkerExited{1, killedBy(15)});
  EXPECT_EQ(count<ReleaseWorker>(last_), 1u);
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kTimedOut);
}

}  // namespace
}  // namespace bulkhead::core
