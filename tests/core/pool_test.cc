// One rule per test, simulated time only.

#include "core/pool.h"

#include <gtest/gtest.h>

#include "testlib/actions.h"
#include "testlib/pool_fixture.h"

namespace bulkhead::core {
namespace {

using namespace std::chrono_literals;
using testlib::count;
using testlib::only;
using testlib::payload;

using PoolTest = testlib::PoolFixture;

TEST_F(PoolTest, StartsTheConfiguredNumberOfWorkers) {
  make(policy(3));
  EXPECT_EQ(count<SpawnWorker>(feed(TimePassed{})), 3u);
  EXPECT_EQ(count<SpawnWorker>(feed(TimePassed{})), 0u) << "spawning workers count as live";
}

TEST_F(PoolTest, OkResultFinishesTheJobWithOneAttempt) {
  make(policy());
  startReady();
  auto send = submit(1);
  ASSERT_TRUE(send);
  now_ += 5ms;
  feed(JobResultReceived{send->worker, 1, ResultKind::kJson, payload("{}")});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kOk);
  EXPECT_EQ(finished_[0].attempts.size(), 1u);
  EXPECT_EQ(finished_[0].resultKind, ResultKind::kJson);
  EXPECT_DOUBLE_EQ(finished_[0].runMs, 5.0);
}

TEST_F(PoolTest, HandlerErrorIsNeverRetried) {
  make(policy());
  startReady();
  auto send = submit(1);
  feed(JobErrorReceived{send->worker, 1, {"ValueError", "bad", "Traceback..."}});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kHandlerError);
  ASSERT_EQ(finished_[0].attempts.size(), 1u);
  EXPECT_EQ(finished_[0].attempts[0].error->type, "ValueError");
  EXPECT_EQ(count<SendJob>(last_), 0u);
}

TEST_F(PoolTest, CrashIsRetriedOnAnotherWorkerAndEveryAttemptIsReported) {
  make(policy());
  auto workers = startReady();
  auto first = submit(1);
  auto actions = feed(WorkerExited{first->worker, killedBy(6)});
  auto resend = only<SendJob>(actions);
  ASSERT_EQ(resend.size(), 1u) << "the other ready worker takes the retry at once";
  EXPECT_NE(resend[0].worker, first->worker);
  EXPECT_EQ(count<SpawnWorker>(actions), 1u) << "the dead worker is replaced at once";
  feed(JobResultReceived{resend[0].worker, 1, ResultKind::kBytes, payload("y")});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kOk);
  ASSERT_EQ(finished_[0].attempts.size(), 2u);
  EXPECT_EQ(finished_[0].attempts[0].outcome, Outcome::kCrashed);
  EXPECT_EQ(*finished_[0].attempts[0].exit.signal, 6);
  EXPECT_NE(finished_[0].attempts[0].exit.stderrTail.find("double free"), std::string::npos);
}

TEST_F(PoolTest, RetriesAreBoundedAndTheLastOutcomeIsCrashed) {
  auto p = policy(1);
  p.poisonAfter = 0;
  make(p);
  startReady();
  auto send = submit(1);
  for (int attempt = 0; attempt < 3; ++attempt) {
    ASSERT_TRUE(send) << "attempt " << attempt;
    auto actions = feed(WorkerExited{send->worker, killedBy(11)});
    auto spawn = only<SpawnWorker>(actions);
    send.reset();
    if (attempt == 2) break;
    ASSERT_EQ(spawn.size(), 1u);
    feed(WorkerSpawned{spawn[0].worker, 2000 + attempt});
    auto sends = only<SendJob>(feed(WorkerReady{spawn[0].worker}));
    ASSERT_EQ(sends.size(), 1u);
    send = sends[0];
  }
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kCrashed);
  EXPECT_EQ(finished_[0].attempts.size(), 3u);
  EXPECT_EQ(pool_->counters().retries, 2u);
}

TEST_F(PoolTest, TimeoutDumpsStacksThenTerminatesThenKills) {
  make(policy(1));
  startReady();
  auto send = submit(1, 2s);
  advance(2s);
  EXPECT_EQ(count<DumpStacks>(last_), 1u);
  advance(200ms);
  auto term = only<SignalWorkerGroup>(last_);
  ASSERT_EQ(term.size(), 1u);
  EXPECT_EQ(term[0].signal, GroupSignal::kTerminate);
  advance(1s);
  auto kill = only<SignalWorkerGroup>(last_);
  ASSERT_EQ(kill.size(), 1u);
  EXPECT_EQ(kill[0].signal, GroupSignal::kKill);
  ExitEvidence e = killedBy(9);
  e.stacks = "Thread 0x1 (most recent call first):\n  File \"h.py\", line 3 in handler\n";
  feed(WorkerExited{send->worker, e});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kTimedOut);
  EXPECT_EQ(finished_[0].attempts.size(), 1u) << "a deadline that passed is not retried";
  EXPECT_NE(finished_[0].attempts[0].exit.stacks.find("handler"), std::string::npos);
}

TEST_F(PoolTest, WorkerThatExitsOnSigtermIsNotSentSigkill) {
  make(policy(1));
  startReady();
  auto send = submit(1, 1s);
  advance(1s);
  advance(200ms);
  feed(WorkerExited{send->worker, killedBy(15)});
  advance(5s);
  EXPECT_EQ(count<SignalWorkerGroup>(last_), 0u);
  EXPECT_EQ(finished_.at(0).outcome, Outcome::kTimedOut);
}

TEST_F(PoolTest, FullQueueRefusesAtOnceAsOverloaded) {
  make(policy(1));
  startReady();
  submit(1);  // runs
  submit(2);
  submit(3);
  submit(4);  // queue now holds 3
  feed(JobSubmitted{5, payload("x"), std::nullopt});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].jobId, 5u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kOverloaded);
  EXPECT_TRUE(finished_[0].queueFull);
  EXPECT_TRUE(finished_[0].retryAfterSeconds.has_value());
}

TEST_F(PoolTest, SyncJobWaitingPastQueueTimeoutIsOverloadedWithItsRealWait) {
  auto p = policy(1);
  p.queueTimeout = 3s;
  make(p);
  startReady();
  submit(1, 100s);
  submit(2);
  advance(3s);
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].jobId, 2u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kOverloaded);
  EXPECT_FALSE(finished_[0].queueFull);
  EXPECT_DOUBLE_EQ(finished_[0].queueMs, 3000.0);
}

TEST_F(PoolTest, RetryThatFindsNoWorkerBeforeItsDeadlineEndsWithTheCrash) {
  auto p = policy(1);
  p.queueTimeout = 2s;
  make(p);
  startReady();
  auto send = submit(1);
  feed(WorkerExited{send->worker, killedBy(6)});  // replacement is spawning, never gets ready
  advance(2s);
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kCrashed);
  EXPECT_EQ(finished_[0].attempts.size(), 1u);
  EXPECT_NE(finished_[0].detail.find("no retry possible"), std::string::npos);
}

TEST_F(PoolTest, StartupTimeoutKillsTheWorkerAndCountsAStartFailure) {
  make(policy(1));
  auto spawn = only<SpawnWorker>(feed(TimePassed{}));
  feed(WorkerSpawned{spawn[0].worker, 42});
  advance(5s);
  EXPECT_EQ(count<DumpStacks>(last_), 1u) << "stacks show where the start hangs";
  EXPECT_EQ(count<SpawnWorker>(last_), 1u) << "the replacement starts while the old one dies";
  advance(200ms);
  EXPECT_EQ(count<SignalWorkerGroup>(last_), 1u);
  feed(WorkerExited{spawn[0].worker, killedBy(15)});
  EXPECT_EQ(pool_->counters().startFailures, 1u);
}

TEST_F(PoolTest, PoolThatCannotStartFailsQueuedAndNewJobsAsUnavailable) {
  make(policy(1));
  auto spawn = only<SpawnWorker>(feed(TimePassed{}));
  feed(JobSubmitted{1, payload("x"), std::nullopt});
  WorkerId w = spawn[0].worker;
  for (int i = 0; i < 3; ++i) {
    feed(WorkerSpawned{w, 100 + i});
    feed(WorkerStartFailed{w, {"ModuleNotFoundError", "No module named 'nope'", "tb"}});
    ExitEvidence e;
    e.exitCode = 3;
    auto next = only<SpawnWorker>(feed(WorkerExited{w, e}));
    ASSERT_EQ(next.size(), 1u);
    w = next[0].worker;
  }
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kUnavailable);
  ASSERT_TRUE(finished_[0].lastStartFailure);
  EXPECT_EQ(finished_[0].lastStartFailure->error->type, "ModuleNotFoundError");
  feed(JobSubmitted{2, payload("x"), std::nullopt});
  EXPECT_EQ(finished_.back().outcome, Outcome::kUnavailable);
  // A worker that finally starts makes the pool available again.
  feed(WorkerSpawned{w, 200});
  feed(WorkerReady{w});
  EXPECT_FALSE(pool_->unavailable());
  EXPECT_TRUE(submit(3));
}

TEST_F(PoolTest, CrashLoopDelaysReplacementsExponentially) {
  auto p = policy(1);
  p.crashLoop.deathsBeforeBackoff = 2;
  p.crashLoop.baseDelay = 100ms;
  make(p);
  auto spawn = only<SpawnWorker>(feed(TimePassed{}));
  WorkerId w = spawn[0].worker;
  std::vector<Duration> gaps;
  for (int i = 0; i < 5; ++i) {
    feed(WorkerSpawned{w, 300 + i});
    feed(WorkerReady{w});
    auto next = only<SpawnWorker>(feed(WorkerExited{w, killedBy(11)}));
    Duration waited{0};
    while (next.empty()) {
      ASSERT_TRUE(pool_->nextDeadline());
      waited += *pool_->nextDeadline() - now_;
      now_ = *pool_->nextDeadline();
      next = only<SpawnWorker>(feed(TimePassed{}));
    }
    gaps.push_back(waited);
    w = next[0].worker;
  }
  EXPECT_EQ(gaps[0], Duration(0));
  EXPECT_EQ(gaps[1], Duration(0));
  EXPECT_EQ(gaps[2], Duration(100ms));
  EXPECT_EQ(gaps[3], Duration(200ms));
  EXPECT_EQ(gaps[4], Duration(400ms));
}

TEST_F(PoolTest, WorkersKilledByJobsAfterServingAreReplacedWithoutBackoff) {
  auto p = policy(1);
  p.crashLoop.deathsBeforeBackoff = 2;
  p.poisonAfter = 0;
  p.retries = 0;
  make(p);
  auto spawn = only<SpawnWorker>(feed(TimePassed{}));
  WorkerId w = spawn[0].worker;
  for (JobId job = 1; job <= 10; ++job) {
    feed(WorkerSpawned{w, 400 + static_cast<int>(job)});
    feed(WorkerReady{w});
    auto ok = submit(job * 2);
    ASSERT_TRUE(ok);
    feed(JobResultReceived{w, job * 2, ResultKind::kBytes, payload("")});
    auto bad = submit(job * 2 + 1);
    ASSERT_TRUE(bad);
    auto next = only<SpawnWorker>(feed(WorkerExited{w, killedBy(11)}));
    ASSERT_EQ(next.size(), 1u) << "death " << job << " was treated as a crash loop";
    w = next[0].worker;
  }
}

TEST_F(PoolTest, RecycledWorkerRetiresOnlyAfterItsReplacementIsReady) {
  auto p = policy(1);
  p.maxJobs = 1;
  make(p);
  auto workers = startReady();
  auto send = submit(1);
  auto actions = feed(JobResultReceived{send->worker, 1, ResultKind::kBytes, payload("y")});
  auto spawn = only<SpawnWorker>(actions);
  ASSERT_EQ(spawn.size(), 1u);
  EXPECT_EQ(count<SendShutdown>(actions), 0u) << "no dip in capacity before the replacement is up";
  // While the replacement starts, the old worker still serves.
  auto again = submit(2);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->worker, workers[0]);
  feed(JobResultReceived{again->worker, 2, ResultKind::kBytes, payload("y")});
  feed(WorkerSpawned{spawn[0].worker, 77});
  auto ready = feed(WorkerReady{spawn[0].worker});
  auto stops = only<SendShutdown>(ready);
  ASSERT_EQ(stops.size(), 1u);
  EXPECT_EQ(stops[0].worker, workers[0]);
  EXPECT_EQ(pool_->counters().recycles, 1u);
  feed(WorkerExited{workers[0], exitedWith(0)});
  EXPECT_EQ(pool_->counters().workerDeaths, 0u) << "a graceful stop is not a death";
}

TEST_F(PoolTest, StrictMaxJobsWorkerTakesNoFurtherJobWhileItsReplacementStarts) {
  auto p = policy(1);
  p.maxJobs = 1;
  p.maxJobsStrict = true;
  make(p);
  auto workers = startReady();
  auto send = submit(1);
  auto actions = feed(JobResultReceived{send->worker, 1, ResultKind::kBytes, payload("y")});
  auto spawn = only<SpawnWorker>(actions);
  ASSERT_EQ(spawn.size(), 1u);
  // One job per process: the next job waits for the replacement.
  EXPECT_FALSE(submit(2)) << "the retired worker took a second job";
  feed(WorkerSpawned{spawn[0].worker, 77});
  auto ready = feed(WorkerReady{spawn[0].worker});
  auto sends = only<SendJob>(ready);
  ASSERT_EQ(sends.size(), 1u);
  EXPECT_EQ(sends[0].worker, spawn[0].worker);
  EXPECT_EQ(only<SendShutdown>(ready).size(), 1u);
}

TEST_F(PoolTest, BadFrameKillsTheWorkerAndTheJobIsRetriedAsCrashed) {
  make(policy());
  startReady();
  auto send = submit(1);
  auto actions = feed(WorkerMisbehaved{send->worker, "bad magic bytes 0x6761"});
  auto sig = only<SignalWorkerGroup>(actions);
  ASSERT_EQ(sig.size(), 1u);
  auto resend = only<SendJob>(feed(WorkerExited{send->worker, killedBy(15)}));
  ASSERT_EQ(resend.size(), 1u);
  feed(JobResultReceived{resend[0].worker, 1, ResultKind::kBytes, payload("y")});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].attempts[0].outcome, Outcome::kCrashed);
  EXPECT_EQ(finished_[0].attempts[0].cause.rfind("protocol_error: bad magic", 0), 0u);
}

TEST_F(PoolTest, ResultForAJobNotInFlightIsAProtocolError) {
  make(policy());
  auto workers = startReady();
  auto actions = feed(JobResultReceived{workers[0], 99, ResultKind::kBytes, payload("y")});
  EXPECT_EQ(count<SignalWorkerGroup>(actions), 1u);
}

TEST_F(PoolTest, LateResultAfterTimeoutIsIgnored) {
  make(policy(1));
  startReady();
  auto send = submit(1, 1s);
  advance(1s);
  feed(JobResultReceived{send->worker, 1, ResultKind::kBytes, payload("late")});
  EXPECT_TRUE(finished_.empty());
  feed(WorkerExited{send->worker, killedBy(15)});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kTimedOut);
}

TEST_F(PoolTest, ShutdownRunsQueuedJobsThenStopsWorkers) {
  make(policy(1));
  auto workers = startReady();
  auto send = submit(1);
  submit(2);
  feed(ShutdownRequested{});
  feed(JobSubmitted{3, payload("x"), std::nullopt});
  EXPECT_EQ(finished_.back().outcome, Outcome::kUnavailable);
  auto next =
      only<SendJob>(feed(JobResultReceived{send->worker, 1, ResultKind::kBytes, payload("")}));
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].job, 2u);
  auto stop = feed(JobResultReceived{send->worker, 2, ResultKind::kBytes, payload("")});
  EXPECT_EQ(count<SendShutdown>(stop), 1u);
  EXPECT_EQ(count<SpawnWorker>(stop), 0u);
  EXPECT_FALSE(pool_->stopped());
  feed(WorkerExited{workers[0], exitedWith(0)});
  EXPECT_TRUE(pool_->stopped());
}

TEST_F(PoolTest, ShutdownTimeoutCancelsWhatIsLeft) {
  auto p = policy(1);
  p.shutdownTimeout = 5s;
  make(p);
  auto workers = startReady();
  submit(1, 100s);
  submit(2, 100s);
  feed(ShutdownRequested{});
  advance(5s);
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].jobId, 2u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kCancelled);
  EXPECT_EQ(count<SignalWorkerGroup>(last_), 1u);
  feed(WorkerExited{workers[0], killedBy(15)});
  EXPECT_EQ(finished_.back().outcome, Outcome::kCancelled);
  EXPECT_TRUE(pool_->stopped());
}

TEST_F(PoolTest, WorkerThatIgnoresSigkillIsGivenUpAndReplaced) {
  make(policy(1));
  startReady();
  submit(1, 1s);
  advance(1s);
  EXPECT_EQ(count<SpawnWorker>(last_), 1u) << "the replacement starts while the old one dies";
  advance(200ms);
  advance(1s);
  advance(5s);
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kTimedOut);
  EXPECT_EQ(count<ReleaseWorker>(last_), 1u);
}

TEST_F(PoolTest, CancelledQueuedJobEndsCancelled) {
  make(policy(1));
  startReady();
  submit(1);
  submit(2);
  feed(JobCancelled{2});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kCancelled);
}

// Cancelling a running job kills its worker without a stack dump (KillReason::kCancelled) and
// ends the job `cancelled`, never retried, with the caller's words.
TEST_F(PoolTest, CancelledRunningJobKillsItsWorkerAndEndsCancelled) {
  make(policy(1));
  startReady();
  auto send = submit(1);
  ASSERT_TRUE(send);
  auto actions = feed(JobCancelled{1});
  EXPECT_EQ(count<DumpStacks>(actions), 0u);
  auto signals = only<SignalWorkerGroup>(actions);
  ASSERT_EQ(signals.size(), 1u);
  EXPECT_EQ(signals[0].signal, GroupSignal::kTerminate);
  feed(WorkerExited{send->worker, killedBy(15)});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kCancelled);
  EXPECT_EQ(finished_[0].detail, "cancelled by the caller");
  EXPECT_EQ(finished_[0].attempts.size(), 1u);
  EXPECT_EQ(pool_->counters().retries, 0u);
}

// A spawn that fails at once (a zygote that refuses, fork() failing) is answered within the same
// drain; without backoff the pool would ask again forever without time passing.
TEST_F(PoolTest, SpawnsThatFailAtOnceBackOffInsteadOfLooping) {
  make(policy(1));
  std::vector<Action> pending = feed(TimePassed{});
  int spawnsAtThisInstant = 0;
  for (int round = 0; round < 100; ++round) {
    auto spawns = only<SpawnWorker>(pending);
    if (spawns.empty()) break;
    spawnsAtThisInstant += static_cast<int>(spawns.size());
    pending = feed(WorkerSpawnFailed{spawns.front().worker, "zygote refused to fork"});
  }
  EXPECT_LE(spawnsAtThisInstant, 10);
  auto next = pool_->nextDeadline();
  ASSERT_TRUE(next);
  EXPECT_GT(*next, now_);
  EXPECT_TRUE(only<SpawnWorker>(feed(JobSubmitted{1, payload("x"), std::nullopt})).empty());
  // The job is told why, with the spawn failure's own words.
  advance(*next - now_);
  for (int round = 0; round < 100 && finished_.empty(); ++round) {
    auto spawns = only<SpawnWorker>(last_);
    if (!spawns.empty()) {
      feed(WorkerSpawnFailed{spawns.front().worker, "zygote refused to fork"});
    } else if (auto d = pool_->nextDeadline()) {
      advance(*d - now_);
    }
  }
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kUnavailable);
  EXPECT_NE(finished_[0].detail.find("zygote refused to fork"), std::string::npos);
}

}  // namespace
}  // namespace bulkhead::core
