// The resource-guard rules as the pool applies them: recycling on samples, OOM and exhaustion
// outcomes, hang detection from heartbeats.

#include <gtest/gtest.h>

#include "core/pool.h"
#include "testlib/actions.h"

namespace bulkhead::core {
namespace {

using namespace std::chrono_literals;
using testlib::count;
using testlib::only;
using testlib::payload;

class ResourcePoolTest : public ::testing::Test {
 protected:
  void make(PoolPolicy p) {
    p.name = "r";
    pool_ = std::make_unique<Pool>(p, now_);
    auto spawns = only<SpawnWorker>(feed(TimePassed{}));
    for (const auto& s : spawns) {
      feed(WorkerSpawned{s.worker, 500 + static_cast<int>(s.worker)});
      feed(WorkerReady{s.worker});
      workers_.push_back(s.worker);
    }
  }

  std::vector<Action> feed(Event e) {
    last_ = pool_->handle(e, now_);
    // The worker indexes (idle lists, deadlines, counts) must equal a full scan after any event.
    EXPECT_EQ(pool_->indexProblems(), "") << "after event #" << e.index();
    for (const auto& f : only<FinishJob>(last_)) finished_.push_back(f.report);
    dumps_ += count<DumpStacks>(last_);
    return last_;
  }

  void advance(Duration d) {
    now_ += d;
    feed(TimePassed{});
  }

  SendJob submit(JobId id) {
    auto sends = only<SendJob>(feed(JobSubmitted{id, payload("x"), std::nullopt}));
    EXPECT_EQ(sends.size(), 1u);
    return sends.at(0);
  }

  static ExitEvidence terminated() {
    ExitEvidence e;
    e.signal = 15;
    return e;
  }

  static ResourceSample maps(int n) {
    ResourceSample s;
    s.rssBytes = 20 << 20;
    s.threads = 2;
    s.maps = n;
    s.fds = 8;
    return s;
  }

  Time now_{std::chrono::seconds(100)};
  std::unique_ptr<Pool> pool_;
  std::vector<WorkerId> workers_;
  std::vector<Action> last_;
  std::vector<JobReport> finished_;
  std::size_t dumps_ = 0;  // DumpStacks seen so far
};

TEST_F(ResourcePoolTest, MapsLeakIsRecycledByTheTrendBeforeTheBound) {
  PoolPolicy p;
  p.workers = 1;
  p.bounds.maxMaps = 10000;
  make(p);
  int current = 1700;
  for (JobId job = 1; job <= 20; ++job) {
    auto send = submit(job);
    current += 1000;
    ASSERT_LT(current, 10000) << "the leak reached the bound: the trend rule failed";
    feed(WorkerSampled{send.worker, maps(current), true});
    auto actions = feed(JobResultReceived{send.worker, job, ResultKind::kBytes, payload("")});
    if (!only<SpawnWorker>(actions).empty()) {
      EXPECT_EQ(pool_->counters().recyclesByCause.at("trend:maps"), 1u);
      EXPECT_GT(current + 1000, 10000);
      return;
    }
  }
  FAIL() << "never recycled";
}

// The shell answers first when nothing is queued and samples after the result: the same leak is
// caught by the same trend, each sample counted with the job that left it.
TEST_F(ResourcePoolTest, SamplesTakenAfterTheAnswerCountForTheJobJustAnswered) {
  PoolPolicy p;
  p.workers = 1;
  p.bounds.maxMaps = 10000;
  make(p);
  int current = 1700;
  for (JobId job = 1; job <= 20; ++job) {
    auto send = submit(job);
    current += 1000;
    ASSERT_LT(current, 10000) << "the leak reached the bound: the trend rule failed";
    // The result alone may decide it too: its projection covers the job since the last sample.
    auto spawns = only<SpawnWorker>(
        feed(JobResultReceived{send.worker, job, ResultKind::kBytes, payload("")}));
    const bool byResult = !spawns.empty();
    if (!byResult)
      spawns = only<SpawnWorker>(feed(WorkerSampled{send.worker, maps(current), false, true}));
    if (!spawns.empty()) {
      EXPECT_EQ(pool_->counters().recyclesByCause.at("trend:maps"), 1u);
      EXPECT_GT(current + (byResult ? 2000 : 1000), 10000);
      return;
    }
  }
  FAIL() << "never recycled";
}

// A job taken between the answer and its late sample (never by the shell, which answers first
// only with nothing queued): the sample is not that job's end, so no trend is drawn from it.
TEST_F(ResourcePoolTest, ALateSampleOfABusyWorkerIsNotCountedAsAJobsEnd) {
  PoolPolicy p;
  p.workers = 1;
  p.bounds.maxMaps = 10000;
  make(p);
  auto first = submit(1);
  feed(JobResultReceived{first.worker, 1, ResultKind::kBytes, payload("")});
  auto second = submit(2);
  ASSERT_EQ(second.worker, first.worker);
  // Were these counted as job ends (+3,000 maps per job), job 3 would be refused this worker.
  feed(WorkerSampled{first.worker, maps(3000), false, true});
  feed(JobResultReceived{second.worker, 2, ResultKind::kBytes, payload("")});
  feed(WorkerSampled{second.worker, maps(6000), false, true});
  EXPECT_EQ(pool_->counters().recyclesByCause.count("trend:maps"), 0u);
  EXPECT_EQ(submit(3).worker, first.worker);
}

// The maps budget skips the after-job count of fast jobs: counted at jobs 1-5 only, the pool must
// still see that job 8 would cross max_maps (7,058 + 1,000 > 8,000) and give it no job 8.
TEST_F(ResourcePoolTest, JobsWhoseMapsWentUncountedStillCountTowardTheBound) {
  PoolPolicy p;
  p.workers = 1;
  p.bounds.maxMaps = 8000;
  make(p);
  WorkerId worker = 0;
  for (JobId job = 1; job <= 7; ++job) {
    auto send = submit(job);
    ASSERT_EQ(send.job, job) << "job " << job << " was not dispatched to the worker";
    worker = send.worker;
    if (job <= 5) feed(WorkerSampled{send.worker, maps(57 + 1000 * static_cast<int>(job)), true});
    feed(JobResultReceived{send.worker, job, ResultKind::kBytes, payload("")});
  }
  EXPECT_EQ(pool_->counters().recyclesByCause.at("trend:maps"), 1u);
  auto next = feed(JobSubmitted{8, payload("x"), std::nullopt});
  for (const auto& send : only<SendJob>(next)) {
    EXPECT_NE(send.worker, worker) << "job 8 went to the worker it would take over max_maps";
  }
}

TEST_F(ResourcePoolTest, IdleWorkerOverItsRssBoundIsRecycled) {
  PoolPolicy p;
  p.workers = 1;
  p.bounds.maxRssBytes = 100ull << 20;
  make(p);
  ResourceSample big = maps(100);
  big.rssBytes = 200ull << 20;
  auto actions = feed(WorkerSampled{workers_[0], big, false});
  EXPECT_EQ(count<SpawnWorker>(actions), 1u) << "the replacement starts first";
  EXPECT_EQ(count<SendShutdown>(actions), 0u);
  EXPECT_EQ(pool_->workers()[0].recycleCause, "rss");
}

TEST_F(ResourcePoolTest, OomKillIsRetriedOnFreshWorkersAndEveryAttemptSaysOom) {
  PoolPolicy p;
  p.workers = 2;
  p.poisonAfter = 0;
  p.memoryLimitBytes = 256ull << 20;
  make(p);
  ExitEvidence oom;
  oom.signal = 9;
  oom.oomKilled = true;
  oom.memoryPeakBytes = 255ull << 20;
  auto send = submit(1);
  std::vector<SpawnWorker> spawned;
  for (int attempt = 1; attempt <= 3; ++attempt) {
    auto actions = feed(WorkerExited{send.worker, oom});
    for (const auto& s : only<SpawnWorker>(actions)) spawned.push_back(s);
    auto sends = only<SendJob>(actions);
    if (attempt == 3) break;
    while (sends.empty()) {
      ASSERT_FALSE(spawned.empty());
      auto s = spawned.front();
      spawned.erase(spawned.begin());
      feed(WorkerSpawned{s.worker, 900 + static_cast<int>(s.worker)});
      sends = only<SendJob>(feed(WorkerReady{s.worker}));
    }
    send = sends[0];
  }
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kOomKilled);
  ASSERT_EQ(finished_[0].attempts.size(), 3u);
  for (const auto& a : finished_[0].attempts) EXPECT_EQ(a.outcome, Outcome::kOomKilled);
}

TEST_F(ResourcePoolTest, OomKillReportsLimitAndPeak) {
  PoolPolicy p;
  p.workers = 1;
  p.retries = 0;
  p.memoryLimitBytes = 256ull << 20;
  make(p);
  auto send = submit(1);
  ExitEvidence e;
  e.signal = 9;
  e.oomKilled = true;
  e.memoryPeakBytes = 250ull << 20;
  feed(WorkerExited{send.worker, e});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kOomKilled);
  EXPECT_EQ(finished_[0].attempts[0].limit, "memory");
  EXPECT_EQ(finished_[0].attempts[0].limitValue, 256ull << 20);
  EXPECT_NE(finished_[0].detail.find("peak 250 MiB"), std::string::npos);
}

TEST_F(ResourcePoolTest, PlainSigkillIsStillCrashed) {
  PoolPolicy p;
  p.workers = 1;
  p.retries = 0;
  make(p);
  auto send = submit(1);
  ExitEvidence e;
  e.signal = 9;
  feed(WorkerExited{send.worker, e});
  EXPECT_EQ(finished_.at(0).outcome, Outcome::kCrashed);
}

TEST_F(ResourcePoolTest, ThreadCreationFailureInTheHandlerIsExhaustionNotTheUsersBug) {
  PoolPolicy p;
  p.workers = 1;
  p.pidsLimit = 40;
  make(p);
  auto send = submit(1);
  JobErrorReceived err{send.worker, 1, {"RuntimeError", "can't start new thread", "tb"}, 1};
  auto actions = feed(err);
  EXPECT_TRUE(finished_.empty()) << "infrastructure failure: retried";
  EXPECT_EQ(count<SendShutdown>(actions), 1u) << "an exhausted worker takes no more jobs";
  EXPECT_EQ(count<SpawnWorker>(actions), 1u);
}

TEST_F(ResourcePoolTest, SignalDeathIsNeverClassifiedFromStderr) {
  PoolPolicy p;
  p.workers = 1;
  p.retries = 0;
  make(p);
  auto send = submit(1);
  ExitEvidence e;
  e.signal = 11;
  e.stderrTail = "warning: Resource temporarily unavailable\n";
  feed(WorkerExited{send.worker, e});
  EXPECT_EQ(finished_.at(0).outcome, Outcome::kCrashed);
}

TEST_F(ResourcePoolTest, LibgompExitIsResourceExhausted) {
  PoolPolicy p;
  p.workers = 1;
  p.retries = 0;
  make(p);
  auto send = submit(1);
  ExitEvidence e;
  e.exitCode = 1;
  e.stderrTail = "libgomp: Thread creation failed: Resource temporarily unavailable\n";
  feed(WorkerExited{send.worker, e});
  EXPECT_EQ(finished_.at(0).outcome, Outcome::kResourceExhausted);
}

static ResourceSample gpu(std::int64_t bytes) {
  ResourceSample s;
  s.rssBytes = 20 << 20;
  s.threads = 2;
  s.fds = 8;
  s.gpuMemoryBytes = bytes;
  return s;
}

TEST_F(ResourcePoolTest, ABusyWorkerOverTheGpuMemoryLimitIsKilledAndItsJobRetried) {
  PoolPolicy p;
  p.workers = 1;
  p.retries = 1;
  p.gpuMemoryLimitBytes = 8ull << 30;
  make(p);
  auto send = submit(1);
  feed(WorkerSampled{send.worker, gpu(4ll << 30), false});
  EXPECT_EQ(count<SignalWorkerGroup>(last_), 0u) << "under the limit";
  feed(WorkerSampled{send.worker, gpu(-1), false});
  EXPECT_EQ(count<SignalWorkerGroup>(last_), 0u) << "no GPU reading: nothing to judge";
  auto spawns = only<SpawnWorker>(feed(WorkerSampled{send.worker, gpu(9ll << 30), false}));
  auto signals = only<SignalWorkerGroup>(last_);
  ASSERT_EQ(signals.size(), 1u) << "over it: killed at once, no stacks first";
  EXPECT_EQ(dumps_, 0u);
  for (const auto& s : only<SpawnWorker>(feed(WorkerExited{send.worker, terminated()}))) {
    spawns.push_back(s);
  }
  ASSERT_TRUE(finished_.empty()) << "an infrastructure failure: retried on a fresh worker";
  ASSERT_EQ(spawns.size(), 1u) << "one replacement";
  for (const auto& s : spawns) {
    feed(WorkerSpawned{s.worker, 900});
    feed(WorkerReady{s.worker});
  }
  auto retried = only<SendJob>(last_);
  ASSERT_EQ(retried.size(), 1u);
  feed(WorkerSampled{retried[0].worker, gpu(9ll << 30), false});
  feed(WorkerExited{retried[0].worker, terminated()});
  ASSERT_EQ(finished_.size(), 1u);
  const JobReport& r = finished_[0];
  EXPECT_EQ(r.outcome, Outcome::kResourceExhausted);
  ASSERT_EQ(r.attempts.size(), 2u);
  const AttemptRecord& a = r.attempts[0];
  EXPECT_EQ(a.limit, "gpu_memory");
  EXPECT_EQ(a.limitValue, 8ull << 30);
  EXPECT_NE(a.cause.find("GPU memory 9216 MiB over gpu_memory_limit (8192 MiB)"), std::string::npos)
      << a.cause;
  ASSERT_TRUE(a.lastSample);
  EXPECT_EQ(a.lastSample->gpuMemoryBytes, 9ll << 30);
}

TEST_F(ResourcePoolTest, EveryAttemptInAGpuPoolCarriesItsGpuMemory) {
  PoolPolicy p;
  p.workers = 1;
  make(p);
  auto send = submit(1);
  feed(JobResultReceived{send.worker, 1, ResultKind::kBytes, payload("plain")});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_FALSE(finished_[0].attempts.at(0).lastSample) << "no GPU reading: no sample attached";
  feed(WorkerSampled{send.worker, gpu(3ll << 30), false});
  send = submit(2);
  feed(JobResultReceived{send.worker, 2, ResultKind::kBytes, payload("on the gpu")});
  ASSERT_EQ(finished_.size(), 2u);
  ASSERT_TRUE(finished_[1].attempts.at(0).lastSample);
  EXPECT_EQ(finished_[1].attempts[0].lastSample->gpuMemoryBytes, 3ll << 30);
}

TEST_F(ResourcePoolTest, AnIdleWorkerOverMaxGpuMemoryIsRecycled) {
  PoolPolicy p;
  p.workers = 1;
  p.bounds.maxGpuMemoryBytes = 2ull << 30;
  make(p);
  feed(WorkerSampled{workers_[0], gpu(1ll << 30), false});
  EXPECT_EQ(count<SendShutdown>(last_), 0u);
  feed(WorkerSampled{workers_[0], gpu(3ll << 30), false});
  EXPECT_EQ(count<SpawnWorker>(last_), 1u) << "its replacement starts first";
  auto view = pool_->workers();
  ASSERT_FALSE(view.empty());
  EXPECT_EQ(view[0].recycleCause, "gpu_memory");
}

class HangTest : public ResourcePoolTest {
 protected:
  void SetUp() override {
    PoolPolicy p;
    p.workers = 1;
    p.retries = 0;
    p.jobTimeout = 100s;
    p.hangAfter = 4s;
    make(p);
    send_ = submit(1);
  }
  void beat(std::uint64_t progress, double cpu, std::string stack) {
    feed(WorkerHeartbeat{send_.worker, 1, progress, cpu, std::move(stack)});
  }
  SendJob send_;
};

TEST_F(HangTest, NoHeartbeatMeansHung) {
  advance(4s);
  EXPECT_EQ(count<DumpStacks>(last_), 1u);
  advance(200ms);
  ExitEvidence e;
  e.signal = 15;
  e.stacks = "Thread 0x1:\n  File \"h.py\", line 3 in spin\n";
  feed(WorkerExited{send_.worker, e});
  ASSERT_EQ(finished_.size(), 1u);
  EXPECT_EQ(finished_[0].outcome, Outcome::kHung);
  EXPECT_NE(finished_[0].detail.find("no heartbeat"), std::string::npos);
}

TEST_F(HangTest, HeartbeatsWithoutProgressMeanHung) {
  for (int i = 0; i < 5; ++i) {
    advance(1s);
    beat(0, 0.01, "abc");
  }
  EXPECT_EQ(dumps_, 1u) << "4 s without CPU, stack change or progress";
  advance(200ms);
  feed(WorkerExited{send_.worker, terminated()});
  EXPECT_EQ(finished_.at(0).outcome, Outcome::kHung);
  EXPECT_NE(finished_.at(0).detail.find("no progress"), std::string::npos);
}

TEST_F(HangTest, SlowJobThatReportsProgressIsNotKilled) {
  for (int i = 0; i < 30; ++i) {
    advance(1s);
    beat(static_cast<std::uint64_t>(i), 0.01, "abc");
    ASSERT_EQ(dumps_, 0u) << "killed at " << i << " s";
  }
  feed(JobResultReceived{send_.worker, 1, ResultKind::kBytes, payload("done")});
  EXPECT_EQ(finished_.at(0).outcome, Outcome::kOk);
}

TEST_F(HangTest, BurningCpuIsProgress) {
  for (int i = 0; i < 30; ++i) {
    advance(1s);
    beat(0, 1.0 * i, "abc");
    ASSERT_EQ(dumps_, 0u);
  }
}

TEST_F(HangTest, JobTimeoutStillAppliesToAHealthyLongJob) {
  for (int i = 0; i < 100; ++i) {
    advance(1s);
    beat(static_cast<std::uint64_t>(i), 0, "abc");
  }
  EXPECT_EQ(dumps_, 1u);
  advance(200ms);
  feed(WorkerExited{send_.worker, terminated()});
  EXPECT_EQ(finished_.at(0).outcome, Outcome::kTimedOut);
}

}  // namespace
}  // namespace bulkhead::core
