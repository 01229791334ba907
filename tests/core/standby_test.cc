// Standby workers (PoolPolicy::standby), simulated time only: started beside the pool, never sent
// a job while they stand by, promoted at once when a serving worker dies, is killed or retires.

#include <gtest/gtest.h>

#include <algorithm>

#include "core/pool.h"
#include "testlib/actions.h"
#include "testlib/pool_fixture.h"

namespace bulkhead::core {
namespace {

using namespace std::chrono_literals;
using testlib::count;
using testlib::only;
using testlib::payload;

class StandbyTest : public testlib::PoolFixture {
 protected:
  PoolPolicy withStandby(int workers, int standby) {
    PoolPolicy p = policy(workers);
    p.standby = standby;
    return p;
  }

  WorkerView view(WorkerId id) const {
    for (const auto& v : pool_->workers()) {
      if (v.id == id) return v;
    }
    ADD_FAILURE() << "no worker " << id;
    return {};
  }

  std::size_t standbyCount() const {
    auto all = pool_->workers();
    return static_cast<std::size_t>(
        std::count_if(all.begin(), all.end(), [](const WorkerView& v) { return v.standby; }));
  }

  bool noted(const std::string& kind) const {
    const auto& events = pool_->recentEvents();
    return std::any_of(events.begin(), events.end(),
                       [&](const PoolEvent& e) { return e.kind == kind; });
  }
};

TEST_F(StandbyTest, StartsTheWorkersAndTheStandbysButCountsOnlyTheWorkersReady) {
  make(withStandby(2, 1));
  auto ids = startReady();
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(pool_->readyWorkers(), 2u) << "a standby is not part of the pool's capacity";
  EXPECT_EQ(standbyCount(), 1u);
  EXPECT_TRUE(view(ids[2]).standby);
  EXPECT_FALSE(view(ids[2]).ready);
  EXPECT_EQ(count<SpawnWorker>(feed(TimePassed{})), 0u);
}

TEST_F(StandbyTest, AStandbyIsNeverSentAJobWhileItStandsBy) {
  make(withStandby(2, 1));
  auto ids = startReady();
  auto a = submit(1);
  auto b = submit(2);
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(submit(3)) << "both serving workers are busy: the job waits, the standby stays";
  EXPECT_EQ(pool_->queueLength(), 1u);
  EXPECT_NE(a->worker, ids[2]);
  EXPECT_NE(b->worker, ids[2]);
  auto next = only<SendJob>(feed(JobResultReceived{a->worker, 1, ResultKind::kBytes, payload("")}));
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].worker, a->worker) << "the queued job goes to the worker that came free";
}

TEST_F(StandbyTest, ACrashedWorkersRetryRunsOnTheStandbyAtOnceAndANewStandbyStarts) {
  auto p = withStandby(1, 1);
  p.poisonAfter = 0;
  make(p);
  auto ids = startReady();
  auto first = submit(1);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->worker, ids[0]);
  auto actions = feed(WorkerExited{first->worker, killedBy(6)});
  auto resend = only<SendJob>(actions);
  ASSERT_EQ(resend.size(), 1u) << "the retry must not wait for a new process";
  EXPECT_EQ(resend[0].worker, ids[1]);
  auto spawns = only<SpawnWorker>(actions);
  ASSERT_EQ(spawns.size(), 1u);
  EXPECT_TRUE(view(spawns[0].worker).standby) << "the new process is the next standby";
  EXPECT_FALSE(view(ids[1]).standby);
  EXPECT_EQ(pool_->counters().standbyPromotions, 1u);
  EXPECT_TRUE(noted("promoted"));
  feed(JobResultReceived{ids[1], 1, ResultKind::kBytes, payload("y")});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kOk);
}

TEST_F(StandbyTest, ARecycledWorkerStopsAtOnceBecauseTheStandbyAlreadyTookItsPlace) {
  auto p = withStandby(1, 1);
  p.maxJobs = 1;
  make(p);
  auto ids = startReady();
  auto send = submit(1);
  auto actions = feed(JobResultReceived{send->worker, 1, ResultKind::kBytes, payload("y")});
  auto stops = only<SendShutdown>(actions);
  ASSERT_EQ(stops.size(), 1u) << "no wait for a replacement to start";
  EXPECT_EQ(stops[0].worker, ids[0]);
  EXPECT_EQ(pool_->readyWorkers(), 1u);
  auto next = submit(2);
  ASSERT_TRUE(next);
  EXPECT_EQ(next->worker, ids[1]);
  EXPECT_EQ(count<SpawnWorker>(actions), 1u);
}

TEST_F(StandbyTest, AStandbyThatDiesIsReplacedByAStandby) {
  make(withStandby(2, 1));
  auto ids = startReady();
  auto actions = feed(WorkerExited{ids[2], killedBy(9)});
  auto spawns = only<SpawnWorker>(actions);
  ASSERT_EQ(spawns.size(), 1u) << "one idle death is below the crash-loop backoff";
  EXPECT_TRUE(view(spawns[0].worker).standby);
  EXPECT_EQ(pool_->counters().standbyPromotions, 0u);
  EXPECT_EQ(pool_->readyWorkers(), 2u);
}

TEST_F(StandbyTest, AStandbyStillStartingIsPromotedAndTakesTheQueuedJobWhenReady) {
  make(withStandby(1, 1));
  auto spawns = only<SpawnWorker>(feed(TimePassed{}));
  ASSERT_EQ(spawns.size(), 2u);
  const WorkerId serving = spawns[0].worker, standby = spawns[1].worker;
  feed(WorkerSpawned{serving, 1001});
  feed(WorkerReady{serving});
  feed(WorkerSpawned{standby, 1002});
  auto send = submit(1);
  ASSERT_TRUE(send);
  auto actions = feed(WorkerExited{serving, killedBy(11)});
  EXPECT_EQ(count<SendJob>(actions), 0u) << "the promoted standby is not ready yet";
  EXPECT_FALSE(view(standby).standby);
  auto sends = only<SendJob>(feed(WorkerReady{standby}));
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(sends[0].job, 1u);
}

TEST_F(StandbyTest, AStandbyReadyFirstServesAndTheWorkerStillStartingStandsByInstead) {
  make(withStandby(1, 1));
  auto spawns = only<SpawnWorker>(feed(TimePassed{}));
  ASSERT_EQ(spawns.size(), 2u);
  const WorkerId serving = spawns[0].worker, standby = spawns[1].worker;
  feed(WorkerSpawned{serving, 1001});
  feed(WorkerSpawned{standby, 1002});
  EXPECT_FALSE(submit(1)) << "nothing is ready yet";
  auto sends = only<SendJob>(feed(WorkerReady{standby}));
  ASSERT_EQ(sends.size(), 1u) << "the queued job must not wait for the slower start";
  EXPECT_EQ(sends[0].worker, standby);
  EXPECT_FALSE(view(standby).standby);
  EXPECT_TRUE(view(serving).standby);
  EXPECT_EQ(count<SpawnWorker>(last_), 0u) << "roles traded, nothing more started";
  EXPECT_TRUE(noted("swapped"));
  EXPECT_EQ(pool_->counters().standbyPromotions, 0u) << "no worker left the pool";
  feed(WorkerReady{serving});
  EXPECT_EQ(view(serving).state, WorkerState::kIdle);
  EXPECT_TRUE(view(serving).standby);
  EXPECT_EQ(pool_->readyWorkers(), 1u);
}

TEST_F(StandbyTest, AHungWorkersKillPromotesTheStandbyBeforeTheProcessIsGone) {
  make(withStandby(1, 1));
  auto ids = startReady();
  auto send = submit(1, 2s);
  ASSERT_TRUE(send);
  advance(2s);  // job_timeout: the kill starts, the worker is no longer live
  EXPECT_FALSE(view(ids[1]).standby);
  auto next = submit(2);
  ASSERT_TRUE(next) << "the next job runs while the hung one is still being killed";
  EXPECT_EQ(next->worker, ids[1]);
}

TEST_F(StandbyTest, ShutdownStopsTheStandbysToo) {
  make(withStandby(1, 2));
  auto ids = startReady();
  auto actions = feed(ShutdownRequested{});
  EXPECT_EQ(count<SendShutdown>(actions), 3u);
  EXPECT_EQ(pool_->counters().standbyPromotions, 0u);
  for (WorkerId id : ids) feed(WorkerExited{id, exitedWith(0)});
  EXPECT_TRUE(pool_->stopped());
}

}  // namespace
}  // namespace bulkhead::core
