// Prefetch (PoolPolicy::prefetchBelow): a busy worker is sent its next job ahead of time while
// jobs queue and they are short, and a delivered job never counts an attempt it did not run.
// Simulated time only.

#include <gtest/gtest.h>

#include "core/pool.h"
#include "testlib/actions.h"
#include "testlib/pool_fixture.h"

namespace bulkhead::core {
namespace {

using namespace std::chrono_literals;
using testlib::count;
using testlib::only;
using testlib::payload;

class PrefetchTest : public testlib::PoolFixture {
 protected:
  PoolPolicy prefetchPolicy(int workers = 1) {
    PoolPolicy p = policy(workers);
    p.queueLimit = 10;
    p.prefetchBelow = 1ms;
    return p;
  }

  // Runs `n` jobs one at a time, each taking `each`: the pool learns their run time.
  void runShortJobs(WorkerId worker, int n, Duration each = 100us) {
    for (int i = 0; i < n; ++i) {
      const JobId id = 900 + static_cast<JobId>(i);
      auto send = submit(id);
      ASSERT_TRUE(send);
      ASSERT_EQ(send->worker, worker);
      now_ += each;
      feed(JobResultReceived{worker, id, ResultKind::kBytes, payload("r")});
    }
    finished_.clear();
  }

  // Job 1 running on the only worker, job 2 delivered behind it.
  WorkerId runningAndDelivered() {
    auto workers = startReady();
    runShortJobs(workers[0], 4);
    auto first = submit(1);
    EXPECT_TRUE(first);
    auto second = submit(2);
    EXPECT_TRUE(second) << "sent ahead to the busy worker";
    if (second) {
      EXPECT_EQ(second->worker, workers[0]);
    }
    return workers[0];
  }

  const WorkerView* view(WorkerId id) const {
    for (const auto& v : views_) {
      if (v.id == id) return &v;
    }
    return nullptr;
  }

  void refreshViews() { views_ = pool_->workers(); }

  std::vector<WorkerView> views_;
};

TEST_F(PrefetchTest, AfterShortJobsABusyWorkerIsSentTheNextJobAndStartsItOnItsAnswer) {
  make(prefetchPolicy());
  const WorkerId w = runningAndDelivered();
  EXPECT_EQ(pool_->jobStateName(2), "queued") << "delivered, not started";
  EXPECT_EQ(pool_->queueLength(), 0u);
  EXPECT_EQ(pool_->inFlight(), 2u);
  EXPECT_TRUE(pool_->hasDeliveredJob(w));
  refreshViews();
  EXPECT_EQ(view(w)->nextJob, JobId{2});

  now_ += 300us;
  auto actions = feed(JobResultReceived{w, 1, ResultKind::kBytes, payload("r1")});
  EXPECT_EQ(count<SendJob>(actions), 0u) << "job 2 is at the worker already";
  EXPECT_EQ(pool_->jobStateName(2), "running");
  EXPECT_FALSE(pool_->hasDeliveredJob(w));
  refreshViews();
  EXPECT_EQ(view(w)->job, JobId{2});
  EXPECT_EQ(view(w)->state, WorkerState::kBusy);

  now_ += 200us;
  feed(JobResultReceived{w, 2, ResultKind::kBytes, payload("r2")});
  ASSERT_EQ(finished_.size(), 2u);
  EXPECT_EQ(finished_[1].jobId, 2u);
  EXPECT_EQ(finished_[1].outcome, Outcome::kOk);
  EXPECT_DOUBLE_EQ(finished_[1].runMs, 0.2) << "run time counts from its start";
  EXPECT_DOUBLE_EQ(finished_[1].queueMs, 0.3) << "the wait at the worker is queue time";
}

TEST_F(PrefetchTest, NothingIsSentAheadBeforeTheRunTimeIsKnownOrWhenJobsAreLong) {
  make(prefetchPolicy());
  auto workers = startReady();
  runShortJobs(workers[0], 3);  // one short of the average's first judgement
  ASSERT_TRUE(submit(1));
  EXPECT_FALSE(submit(2));
  EXPECT_EQ(pool_->queueLength(), 1u);

  make(prefetchPolicy());
  workers = startReady();
  runShortJobs(workers[0], 8, 5ms);  // jobs average 5 ms: over prefetch_below
  ASSERT_TRUE(submit(1));
  EXPECT_FALSE(submit(2));
}

TEST_F(PrefetchTest, NotBehindAJobThatRanLongerThanTheLimitAlready) {
  make(prefetchPolicy());
  auto workers = startReady();
  runShortJobs(workers[0], 4);
  ASSERT_TRUE(submit(1));
  now_ += 2ms;  // job 1 turned out slow: the next job waits in the queue for any worker
  EXPECT_FALSE(submit(2));
  EXPECT_EQ(pool_->queueLength(), 1u);
}

TEST_F(PrefetchTest, OffByDefault) {
  PoolPolicy p = policy(1);
  p.queueLimit = 10;
  make(p);
  auto workers = startReady();
  runShortJobs(workers[0], 8);
  ASSERT_TRUE(submit(1));
  EXPECT_FALSE(submit(2));
}

TEST_F(PrefetchTest, AWorkerThatDiesBeforeItsAnswerSendsTheDeliveredJobBackWithNoAttempt) {
  make(prefetchPolicy());
  const WorkerId w = runningAndDelivered();
  auto actions = feed(WorkerExited{w, killedBy(11)});
  EXPECT_EQ(finished_.size(), 0u) << "job 1 is retried, job 2 never ran";
  EXPECT_EQ(pool_->queueLength(), 2u);
  EXPECT_EQ(pool_->jobStateName(2), "queued");
  auto spawn = only<SpawnWorker>(actions);
  ASSERT_EQ(spawn.size(), 1u);
  feed(WorkerSpawned{spawn[0].worker, 2000});
  auto sends = only<SendJob>(feed(WorkerReady{spawn[0].worker}));
  ASSERT_GE(sends.size(), 1u);
  EXPECT_EQ(sends[0].job, 1u) << "the retry goes first: it has run and waited longest";
  if (sends.size() == 1) {
    // Nothing sent ahead yet: job 2 follows on job 1's answer.
    sends = only<SendJob>(
        feed(JobResultReceived{spawn[0].worker, 1, ResultKind::kBytes, payload("r1")}));
  } else {
    EXPECT_EQ(sends[1].job, 2u);
    feed(JobResultReceived{spawn[0].worker, 1, ResultKind::kBytes, payload("r1")});
  }
  feed(JobResultReceived{spawn[0].worker, 2, ResultKind::kBytes, payload("r2")});
  ASSERT_EQ(finished_.size(), 2u);
  EXPECT_EQ(finished_[0].jobId, 1u);
  EXPECT_EQ(finished_[0].attempts.size(), 2u) << "crashed, then ok";
  EXPECT_EQ(finished_[1].jobId, 2u);
  EXPECT_EQ(finished_[1].outcome, Outcome::kOk);
  ASSERT_EQ(finished_[1].attempts.size(), 1u) << "its delivery to the dead worker was no attempt";
  EXPECT_EQ(finished_[1].attempts[0].outcome, Outcome::kOk);
}

TEST_F(PrefetchTest, AKillOfTheJobAheadSendsTheDeliveredJobBack) {
  make(prefetchPolicy());
  const WorkerId w = runningAndDelivered();
  advance(10s);  // job 1's job_timeout: stacks, then SIGTERM
  advance(200ms);
  feed(WorkerExited{w, killedBy(15)});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].jobId, 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kTimedOut);
  EXPECT_EQ(pool_->jobStateName(2), "queued");
  EXPECT_EQ(pool_->queueLength(), 1u);
}

TEST_F(PrefetchTest, ADeliveredJobsTimeoutCountsFromItsStart) {
  make(prefetchPolicy());
  const WorkerId w = runningAndDelivered();
  now_ += 500us;
  feed(JobResultReceived{w, 1, ResultKind::kBytes, payload("r1")});
  advance(9s);  // 10 s from its delivery would pass before 10 s from its start
  now_ += 999ms;
  feed(TimePassed{});
  EXPECT_EQ(pool_->jobStateName(2), "running");
  advance(2ms);
  refreshViews();
  EXPECT_NE(view(w)->state, WorkerState::kBusy) << "past its own job_timeout it is killed";
}

TEST_F(PrefetchTest, ACancelledDeliveredJobEndsAsItStarts) {
  make(prefetchPolicy());
  const WorkerId w = runningAndDelivered();
  feed(JobCancelled{2});
  EXPECT_EQ(finished_.size(), 0u) << "it is at the worker: the cancel waits for its start";
  auto actions = feed(JobResultReceived{w, 1, ResultKind::kBytes, payload("r1")});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kOk) << "the job ahead is not harmed";
  EXPECT_EQ(count<SignalWorkerGroup>(actions), 1u) << "killed as a running job's cancel is";
  feed(WorkerExited{w, killedBy(15)});
  ASSERT_EQ(finished_.size(), 2u);
  EXPECT_EQ(finished_[1].jobId, 2u);
  EXPECT_EQ(finished_[1].outcome, Outcome::kCancelled);
}

TEST_F(PrefetchTest, ACancelledDeliveredJobWhoseWorkerDiesFirstEndsCancelledUnrun) {
  make(prefetchPolicy());
  const WorkerId w = runningAndDelivered();
  feed(JobCancelled{2});
  feed(WorkerExited{w, killedBy(6)});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].jobId, 2u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kCancelled);
  EXPECT_TRUE(finished_[0].attempts.empty());
  EXPECT_EQ(pool_->jobStateName(1), "queued") << "job 1 waits for its retry";
}

TEST_F(PrefetchTest, MaxJobsIsNeverExceededByAJobSentAhead) {
  PoolPolicy p = prefetchPolicy();
  p.maxJobs = 6;
  p.maxJobsStrict = true;
  make(p);
  auto workers = startReady();
  runShortJobs(workers[0], 4);
  ASSERT_TRUE(submit(1));  // its fifth
  EXPECT_TRUE(submit(2)) << "its sixth: allowed";
  feed(JobResultReceived{workers[0], 1, ResultKind::kBytes, payload("r")});
  EXPECT_FALSE(submit(3)) << "a seventh: not";
}

TEST_F(PrefetchTest, AnExhaustedWorkerRunsItsDeliveredJobThenStops) {
  make(prefetchPolicy());
  const WorkerId w = runningAndDelivered();
  auto actions = feed(JobErrorReceived{w, 1, {"RuntimeError", "can't start new thread", "tb"}});
  EXPECT_EQ(count<SendShutdown>(actions), 0u) << "job 2 may have started: it runs";
  EXPECT_EQ(pool_->jobStateName(2), "running");
  refreshViews();
  EXPECT_TRUE(view(w)->retiring);
  EXPECT_FALSE(submit(3)) << "nothing more for a retiring worker";
}

}  // namespace
}  // namespace bulkhead::core
