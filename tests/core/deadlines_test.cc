// Deadlines, one meaning each (docs/api.md, "Deadlines"), the crash backoff that only crash loops
// get, and outcomes that say what happened to the job. Simulated time only.

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

class DeadlineTest : public testlib::PoolFixture {
 protected:
  std::optional<SendJob> submitAsync(JobId id) {
    JobSubmitted e{id, payload("x"), std::nullopt};
    e.async = true;
    auto sends = only<SendJob>(feed(e));
    if (sends.empty()) return std::nullopt;
    return sends.front();
  }
  std::optional<SendJob> submitWithin(JobId id, Duration budget) {
    JobSubmitted e{id, payload("x"), std::nullopt};
    e.deadline = now_ + budget;
    auto sends = only<SendJob>(feed(e));
    if (sends.empty()) return std::nullopt;
    return sends.front();
  }
  const JobReport* report(JobId id) const {
    for (const auto& r : finished_) {
      if (r.jobId == id) return &r;
    }
    return nullptr;
  }
  // Runs the clock forward to the pool's next deadline, as the shell's timer would.
  void toNextDeadline() {
    ASSERT_TRUE(pool_->nextDeadline());
    now_ = *pool_->nextDeadline();
    feed(TimePassed{});
  }
};

TEST_F(DeadlineTest, JobTimeoutLimitsTheRunNotTheWaitInTheQueue) {
  auto p = policy(1);
  p.jobTimeout = 1s;
  p.queueTimeout = 30s;
  make(p);
  startReady();
  auto first = submit(1);
  ASSERT_TRUE(first);
  EXPECT_FALSE(submit(2));
  now_ += 900ms;
  auto next =
      only<SendJob>(feed(JobResultReceived{first->worker, 1, ResultKind::kBytes, payload("")}));
  ASSERT_EQ(next.size(), 1u);
  now_ += 900ms;  // 1.8 s since job 2 was submitted, 0.9 s of its own run
  feed(JobResultReceived{next[0].worker, 2, ResultKind::kBytes, payload("")});
  ASSERT_NE(report(2), nullptr);
  EXPECT_EQ(report(2)->outcome, Outcome::kOk);
  EXPECT_DOUBLE_EQ(report(2)->queueMs, 900.0);
}

TEST_F(DeadlineTest, AsyncJobsNeverExpireInTheQueueByDefault) {
  auto p = policy(1);
  p.queueTimeout = 1s;
  p.jobTimeout = 2h;
  p.queueLimit = 1000;
  make(p);
  auto workers = startReady();
  auto running = submitAsync(1);
  ASSERT_TRUE(running);
  for (JobId id = 2; id <= 300; ++id) EXPECT_FALSE(submitAsync(id));
  now_ += 1h;
  feed(TimePassed{});
  EXPECT_TRUE(finished_.empty()) << "accepted async jobs wait for a worker, however long";
  // Each job then runs in turn.
  SendJob send = *running;
  for (JobId id = 1; id <= 300; ++id) {
    auto next =
        only<SendJob>(feed(JobResultReceived{send.worker, id, ResultKind::kBytes, payload("")}));
    if (id < 300) {
      ASSERT_EQ(next.size(), 1u);
      send = next[0];
    }
  }
  ASSERT_EQ(finished_.size(), 300u);
  for (const auto& r : finished_) EXPECT_EQ(r.outcome, Outcome::kOk);
}

TEST_F(DeadlineTest, AsyncQueueTimeoutWhenThePoolSetsOne) {
  auto p = policy(1);
  p.asyncQueueTimeout = 5s;
  make(p);
  startReady();
  submitAsync(1);
  submitAsync(2);
  now_ += 5s;
  feed(TimePassed{});
  ASSERT_NE(report(2), nullptr);
  EXPECT_EQ(report(2)->outcome, Outcome::kOverloaded);
}

TEST_F(DeadlineTest, ColdStartJobWaitsForTheStartingWorkerPastQueueTimeout) {
  auto p = policy(1);
  p.queueTimeout = 500ms;
  p.startupTimeout = 5s;
  make(p);
  auto spawn = only<SpawnWorker>(feed(TimePassed{}));
  feed(WorkerSpawned{spawn[0].worker, 42});
  EXPECT_FALSE(submit(1));
  now_ += 500ms;
  feed(TimePassed{});
  EXPECT_TRUE(finished_.empty()) << "a worker still starting will have room for it";
  now_ += 2500ms;  // a slow preload: ready after 3 s
  auto sends = only<SendJob>(feed(WorkerReady{spawn[0].worker}));
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(sends[0].job, 1u);
}

TEST_F(DeadlineTest, ColdStartWaitEndsAtTheStartupDeadline) {
  auto p = policy(1);
  p.queueTimeout = 500ms;
  p.startupTimeout = 5s;
  make(p);
  auto spawn = only<SpawnWorker>(feed(TimePassed{}));
  feed(WorkerSpawned{spawn[0].worker, 42});
  submit(1);
  while (finished_.empty()) toNextDeadline();
  EXPECT_EQ(finished_[0].outcome, Outcome::kOverloaded);
  EXPECT_LE(finished_[0].queueMs, 5500.0);
}

TEST_F(DeadlineTest, CallersDeadlineInTheQueueIsTimedOutQueued) {
  make(policy(1));
  startReady();
  submit(1);
  EXPECT_FALSE(submitWithin(2, 2s));
  now_ += 2s;
  feed(TimePassed{});
  ASSERT_NE(report(2), nullptr);
  EXPECT_EQ(report(2)->outcome, Outcome::kTimedOut);
  EXPECT_EQ(report(2)->stage, "queued");
  EXPECT_TRUE(report(2)->attempts.empty());
}

TEST_F(DeadlineTest, CallersDeadlineWhileRunningKillsWithStacksAndIsNotRetried) {
  auto p = policy(1);
  p.jobTimeout = 100s;
  p.retries = 3;
  make(p);
  startReady();
  auto send = submitWithin(1, 2s);
  ASSERT_TRUE(send);
  now_ += 2s;
  EXPECT_EQ(count<DumpStacks>(feed(TimePassed{})), 1u) << "stacks before the kill";
  toNextDeadline();
  EXPECT_EQ(count<SignalWorkerGroup>(last_), 1u);
  feed(WorkerExited{send->worker, killedBy(15)});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kTimedOut);
  EXPECT_EQ(finished_[0].stage, "running");
  EXPECT_EQ(finished_[0].attempts.size(), 1u);
  EXPECT_NE(finished_[0].detail.find("caller's deadline"), std::string::npos);
}

TEST_F(DeadlineTest, NoRetryPastTheCallersDeadline) {
  auto p = policy(1);
  p.retries = 3;
  p.poisonAfter = 0;
  make(p);
  startReady();
  auto send = submitWithin(1, 2s);
  ASSERT_TRUE(send);
  now_ += 1s;
  feed(WorkerExited{send->worker, killedBy(11)});
  EXPECT_TRUE(finished_.empty()) << "still within the budget: retried";
  toNextDeadline();  // the replacement never gets ready in time
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kTimedOut);
  EXPECT_EQ(finished_[0].stage, "queued");
  EXPECT_NE(finished_[0].detail.find("SIGSEGV"), std::string::npos) << finished_[0].detail;
}

TEST_F(DeadlineTest, WorkerDyingWhileRunningAJobIsReplacedAtOnceEveryTime) {
  auto p = policy(1);
  p.crashLoop.deathsBeforeBackoff = 0;  // any death counted as a crash loop would delay
  p.poisonAfter = 0;
  p.retries = 0;
  make(p);
  auto spawn = only<SpawnWorker>(feed(TimePassed{}));
  WorkerId w = spawn[0].worker;
  for (JobId job = 1; job <= 20; ++job) {
    feed(WorkerSpawned{w, 500 + static_cast<int>(job)});
    feed(WorkerReady{w});
    ASSERT_TRUE(submit(job)) << "first job of a fresh worker";
    auto next = only<SpawnWorker>(feed(WorkerExited{w, killedBy(6)}));
    ASSERT_EQ(next.size(), 1u) << "death " << job << " under a job was treated as a crash loop";
    w = next[0].worker;
  }
}

TEST_F(DeadlineTest, WorkersDyingIdleOrBeforeReadyBackOff) {
  auto p = policy(1);
  p.crashLoop.deathsBeforeBackoff = 0;  // every counted death delays the next spawn
  p.crashLoop.baseDelay = 100ms;
  make(p);
  auto spawn = only<SpawnWorker>(feed(TimePassed{}));
  feed(WorkerSpawned{spawn[0].worker, 7});
  EXPECT_TRUE(only<SpawnWorker>(feed(WorkerExited{spawn[0].worker, exitedWith(1)})).empty())
      << "died before READY: a crash loop";
  toNextDeadline();
  auto again = only<SpawnWorker>(last_);
  ASSERT_EQ(again.size(), 1u);
  feed(WorkerSpawned{again[0].worker, 8});
  feed(WorkerReady{again[0].worker});
  EXPECT_TRUE(only<SpawnWorker>(feed(WorkerExited{again[0].worker, killedBy(11)})).empty())
      << "died idle: a crash loop";
}

TEST_F(DeadlineTest, HangAfterAPidsRefusalIsResourceExhausted) {
  auto p = policy(1);
  p.jobTimeout = 5s;
  p.pidsLimit = 8;
  p.retries = 0;
  make(p);
  auto workers = startReady();
  ResourceSample before;
  before.pidsMaxEvents = 2;  // refusals of an earlier job do not count against this one
  feed(WorkerSampled{workers[0], before});
  auto send = submit(1);
  ASSERT_TRUE(send);
  while (count<SignalWorkerGroup>(last_) == 0) toNextDeadline();
  ExitEvidence e = killedBy(15);
  e.stderrTail.clear();
  e.pidsMaxEvents = 3;
  feed(WorkerExited{send->worker, e});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kResourceExhausted);
  EXPECT_EQ(finished_[0].attempts[0].limit, "pids");
  EXPECT_NE(finished_[0].detail.find("pids_limit of 8"), std::string::npos) << finished_[0].detail;
}

TEST_F(DeadlineTest, PlainTimeoutWithoutPidsRefusalStaysTimedOut) {
  auto p = policy(1);
  p.jobTimeout = 5s;
  p.pidsLimit = 8;
  make(p);
  auto workers = startReady();
  ResourceSample before;
  before.pidsMaxEvents = 2;
  feed(WorkerSampled{workers[0], before});
  auto send = submit(1);
  while (count<SignalWorkerGroup>(last_) == 0) toNextDeadline();
  ExitEvidence e = killedBy(15);
  e.pidsMaxEvents = 2;
  feed(WorkerExited{send->worker, e});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kTimedOut);
  EXPECT_EQ(finished_[0].stage, "running");
}

}  // namespace
}  // namespace bulkhead::core
