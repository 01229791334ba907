// One worker deadline per state (Pool::deadlineFor): what each state waits for and from when,
// read through the worker view and nextDeadline(). Simulated time only.

#include <gtest/gtest.h>

#include "core/pool.h"
#include "testlib/actions.h"
#include "testlib/pool_fixture.h"

namespace bulkhead::core {
namespace {

using namespace std::chrono_literals;
using testlib::only;
using testlib::payload;

class WorkerDeadlineTest : public testlib::PoolFixture {
 protected:
  void SetUp() override {
    PoolPolicy p = policy(1);
    p.hangAfter = 3s;
    make(p);
  }
  // The first worker (a killed one's replacement comes after it).
  WorkerView view() {
    auto views = pool_->workers();
    EXPECT_FALSE(views.empty());
    return views.front();
  }
  WorkerId spawnOne() {
    auto spawns = only<SpawnWorker>(feed(TimePassed{}));
    EXPECT_EQ(spawns.size(), 1u);
    return spawns.front().worker;
  }
};

TEST_F(WorkerDeadlineTest, SpawningHasNone) {
  spawnOne();
  EXPECT_EQ(view().state, WorkerState::kSpawning);
  EXPECT_EQ(view().deadline, std::nullopt);
  EXPECT_EQ(pool_->nextDeadline(), std::nullopt);
}

TEST_F(WorkerDeadlineTest, StartingWaitsStartupTimeoutFromTheSpawn) {
  WorkerId w = spawnOne();
  now_ += 1s;
  feed(WorkerSpawned{w, 1234});
  EXPECT_EQ(view().deadline, now_ + 5s);
  EXPECT_EQ(pool_->nextDeadline(), now_ + 5s);
}

TEST_F(WorkerDeadlineTest, IdleHasNone) {
  startReady();
  EXPECT_EQ(view().state, WorkerState::kIdle);
  EXPECT_EQ(view().deadline, std::nullopt);
  EXPECT_EQ(pool_->nextDeadline(), std::nullopt);
}

TEST_F(WorkerDeadlineTest, BusyWaitsForTheFirstOfJobTimeoutAndHangAfter) {
  auto ids = startReady();
  ASSERT_TRUE(submit(1, 2s));
  EXPECT_EQ(view().deadline, now_ + 2s) << "the job's timeout comes before hang_after";
  feed(JobResultReceived{ids[0], 1, ResultKind::kJson, payload("{}")});
  ASSERT_EQ(finished_.size(), 1u);
  ASSERT_TRUE(submit(2));
  EXPECT_EQ(view().deadline, now_ + 3s) << "hang_after comes before the 10 s job timeout";
}

TEST_F(WorkerDeadlineTest, BusyDeadlineMovesWithProgressOnly) {
  startReady();
  const Time sent = now_;
  ASSERT_TRUE(submit(1));
  now_ += 2s;
  feed(WorkerHeartbeat{1, 1, 1, 0.0, "a"});
  EXPECT_EQ(view().deadline, now_ + 3s) << "progress restarts hang_after";
  now_ += 2s;
  feed(WorkerHeartbeat{1, 1, 1, 0.0, "a"});
  EXPECT_EQ(view().deadline, sent + 2s + 3s) << "a beat without progress does not";
}

TEST_F(WorkerDeadlineTest, StoppingWaitsStopGraceFromTheShutdownFrame) {
  startReady();
  now_ += 1s;
  feed(ShutdownRequested{});
  EXPECT_EQ(view().state, WorkerState::kStopping);
  EXPECT_EQ(view().deadline, now_ + 2s);
}

TEST_F(WorkerDeadlineTest, EachKillPhaseWaitsItsOwnDurationFromItsStart) {
  startReady();
  ASSERT_TRUE(submit(1, 2s));
  advance(2s);  // job timeout: stacks first
  EXPECT_EQ(view().deadline, now_ + 200ms) << "stack_settle";
  advance(200ms);  // SIGTERM
  EXPECT_EQ(view().deadline, now_ + 1s) << "kill_grace";
  advance(1s);  // SIGKILL
  EXPECT_EQ(view().deadline, now_ + 5s) << "kill_wait";
  EXPECT_EQ(pool_->nextDeadline(), now_ + 5s);
}

TEST_F(WorkerDeadlineTest, KillWithoutStacksStartsAtTheGrace) {
  startReady();
  ASSERT_TRUE(submit(1));
  now_ += 1s;
  feed(JobCancelled{1});
  EXPECT_EQ(view().deadline, now_ + 1s) << "kill_grace, no stack_settle for a cancel";
}

}  // namespace
}  // namespace bulkhead::core
