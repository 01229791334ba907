// Poison quarantine and the circuit breaker, as the pool applies them.

#include <gtest/gtest.h>

#include "core/breaker.h"
#include "core/pool.h"
#include "testlib/actions.h"

namespace bulkhead::core {
namespace {

using namespace std::chrono_literals;
using testlib::count;
using testlib::only;
using testlib::payload;

class PolicyTest : public ::testing::Test {
 protected:
  void make(PoolPolicy p) {
    p.name = "q";
    pool_ = std::make_unique<Pool>(p, now_);
    for (const auto& s : only<SpawnWorker>(feed(TimePassed{}))) ready(s.worker);
  }
  std::vector<Action> ready(WorkerId w) {
    feed(WorkerSpawned{w, 700 + static_cast<int>(w)});
    return feed(WorkerReady{w});
  }
  std::vector<Action> feed(Event e) {
    last_ = pool_->handle(e, now_);
    // The worker indexes (idle lists, deadlines, counts) must equal a full scan after any event.
    EXPECT_EQ(pool_->indexProblems(), "") << "after event #" << e.index();
    for (const auto& f : only<FinishJob>(last_)) finished_.push_back(f.report);
    for (const auto& s : only<SpawnWorker>(last_)) spawning_.push_back(s.worker);
    return last_;
  }
  // Brings spawned workers up until one takes a job; returns that job's send.
  std::optional<SendJob> nextSend(std::vector<Action> actions) {
    auto sends = only<SendJob>(actions);
    while (sends.empty() && !spawning_.empty()) {
      WorkerId w = spawning_.front();
      spawning_.erase(spawning_.begin());
      sends = only<SendJob>(ready(w));
    }
    if (sends.empty()) return std::nullopt;
    return sends[0];
  }
  static ExitEvidence segv() {
    ExitEvidence e;
    e.signal = 11;
    return e;
  }
  // Submits a job that crashes every worker it touches until it ends.
  JobReport crashUntilDone(JobId id, const std::string& body, bool allowPoison = false) {
    std::size_t before = finished_.size();
    auto send = nextSend(feed(JobSubmitted{id, payload(body), std::nullopt, allowPoison}));
    while (finished_.size() == before) {
      EXPECT_TRUE(send);
      if (!send) break;
      send = nextSend(feed(WorkerExited{send->worker, segv()}));
    }
    return finished_.back();
  }

  Time now_{std::chrono::seconds(10)};
  std::unique_ptr<Pool> pool_;
  std::vector<Action> last_;
  std::vector<JobReport> finished_;
  std::vector<WorkerId> spawning_;
};

TEST_F(PolicyTest, JobThatCrashesTwoWorkersEndsCrashedQuarantinedWithEveryAttempt) {
  PoolPolicy p;
  p.workers = 2;
  p.retries = 5;
  make(p);
  JobReport r = crashUntilDone(1, "evil");
  EXPECT_EQ(r.outcome, Outcome::kCrashed) << "the caller hears what happened, not 'poison'";
  EXPECT_TRUE(r.quarantined);
  ASSERT_EQ(r.attempts.size(), 2u);
  EXPECT_NE(r.attempts[0].worker, r.attempts[1].worker);
  EXPECT_EQ(r.fingerprint.rfind("fnv1a64:", 0), 0u);
  EXPECT_EQ(pool_->quarantine().size(), 1u);
}

TEST_F(PolicyTest, QuarantinedPayloadIsRefusedAtOnceUnlessOverridden) {
  PoolPolicy p;
  p.workers = 2;
  make(p);
  crashUntilDone(1, "evil");
  auto actions = feed(JobSubmitted{2, payload("evil"), std::nullopt});
  EXPECT_EQ(count<SendJob>(actions), 0u) << "no worker is risked again";
  EXPECT_EQ(finished_.back().outcome, Outcome::kPoison);
  EXPECT_EQ(finished_.back().attempts.size(), 2u) << "the original evidence comes back";
  // Another payload runs normally.
  EXPECT_TRUE(nextSend(feed(JobSubmitted{3, payload("fine"), std::nullopt})));
  // The caller may insist.
  EXPECT_TRUE(nextSend(feed(JobSubmitted{4, payload("evil"), std::nullopt, true})));
}

TEST_F(PolicyTest, PoisonOffMeansPlainRetries) {
  PoolPolicy p;
  p.workers = 1;
  p.poisonAfter = 0;
  p.retries = 2;
  make(p);
  JobReport r = crashUntilDone(1, "evil");
  EXPECT_EQ(r.outcome, Outcome::kCrashed);
  EXPECT_EQ(r.attempts.size(), 3u);
}

TEST(Breaker, OpensAfterFailuresInTheWindowProbesAfterCooldownAndCloses) {
  Breaker b({3, 30s, 10s});
  Breaker::Time t{100s};
  EXPECT_EQ(b.record(true, t), Breaker::Change::kNone);
  EXPECT_EQ(b.record(true, t + 1s), Breaker::Change::kNone);
  EXPECT_EQ(b.record(true, t + 2s), Breaker::Change::kOpened);
  EXPECT_EQ(b.admit(t + 5s), Breaker::Admission::kReject);
  EXPECT_EQ(b.admit(t + 12s), Breaker::Admission::kProbe);
  EXPECT_EQ(b.admit(t + 12s), Breaker::Admission::kReject) << "one probe at a time";
  EXPECT_EQ(b.record(false, t + 13s), Breaker::Change::kClosed);
  EXPECT_EQ(b.admit(t + 13s), Breaker::Admission::kAdmit);
}

TEST(Breaker, FailedProbeReopensAndOldFailuresAgeOut) {
  Breaker b({2, 10s, 5s});
  Breaker::Time t{100s};
  b.record(true, t);
  EXPECT_EQ(b.record(true, t + 11s), Breaker::Change::kNone) << "the first one left the window";
  EXPECT_EQ(b.record(true, t + 12s), Breaker::Change::kOpened);
  EXPECT_EQ(b.admit(t + 18s), Breaker::Admission::kProbe);
  EXPECT_EQ(b.record(true, t + 18s), Breaker::Change::kOpened);
  EXPECT_EQ(b.admit(t + 19s), Breaker::Admission::kReject);
}

TEST_F(PolicyTest, OpenBreakerRefusesJobsAsUnavailableAndSaysSo) {
  PoolPolicy p;
  p.workers = 2;
  p.poisonAfter = 0;
  p.retries = 0;
  p.breaker = {2, 30s, 10s};
  make(p);
  crashUntilDone(1, "a");
  crashUntilDone(2, "b");
  EXPECT_EQ(pool_->breakerState(), BreakerState::kOpen);
  auto actions = feed(JobSubmitted{3, payload("c"), std::nullopt});
  EXPECT_EQ(count<SendJob>(actions), 0u);
  EXPECT_EQ(finished_.back().outcome, Outcome::kUnavailable);
  EXPECT_TRUE(finished_.back().breakerOpen) << "with a fallback pool, Resubmit instead";
  now_ += 11s;
  auto probe = nextSend(feed(JobSubmitted{4, payload("d"), std::nullopt}));
  ASSERT_TRUE(probe);
  feed(JobResultReceived{probe->worker, 4, ResultKind::kBytes, payload("ok")});
  EXPECT_EQ(pool_->breakerState(), BreakerState::kClosed);
}

// Fallback routing is the pool's answer (core/fallback_route.h): a job refused by an open breaker
// is handed to the fallback pool as Resubmit, counted here as this pool's unavailable.
class FallbackTest : public PolicyTest {
 protected:
  void openBreaker(std::string fallback, std::size_t pools) {
    PoolPolicy p;
    p.workers = 2;
    p.poisonAfter = 0;
    p.retries = 0;
    p.breaker = {2, 30s, 10s};
    p.fallback = std::move(fallback);
    p.poolsInDaemon = pools;
    make(p);
    crashUntilDone(1, "a");
    crashUntilDone(2, "b");
    ASSERT_EQ(pool_->breakerState(), BreakerState::kOpen);
  }
  std::vector<Action> submitWithHops(JobId id, int hops) {
    JobSubmitted e{id, payload("c"), std::nullopt};
    e.hops = hops;
    return feed(e);
  }
};

TEST_F(FallbackTest, OpenBreakerResubmitsToTheFallbackPool) {
  openBreaker("small", 2);
  const std::size_t finishedBefore = finished_.size();
  auto actions = submitWithHops(3, 0);
  auto resubmits = only<Resubmit>(actions);
  ASSERT_EQ(resubmits.size(), 1u);
  EXPECT_EQ(resubmits[0].job, 3u);
  EXPECT_EQ(resubmits[0].pool, "small");
  EXPECT_EQ(resubmits[0].report.outcome, Outcome::kUnavailable);
  EXPECT_TRUE(resubmits[0].report.breakerOpen);
  EXPECT_EQ(count<FinishJob>(actions), 0u) << "the caller hears the fallback pool's answer";
  EXPECT_EQ(finished_.size(), finishedBefore);
  EXPECT_EQ(pool_->counters().outcomes.at(Outcome::kUnavailable), 1u);
}

TEST_F(FallbackTest, HopsAreBoundedByThePoolCount) {
  openBreaker("small", 2);
  auto actions = submitWithHops(3, 2);
  EXPECT_EQ(count<Resubmit>(actions), 0u);
  ASSERT_EQ(count<FinishJob>(actions), 1u);
  EXPECT_EQ(finished_.back().outcome, Outcome::kUnavailable);
  EXPECT_TRUE(finished_.back().breakerOpen);
  EXPECT_EQ(count<Resubmit>(submitWithHops(4, 1)), 1u) << "one hop left of two";
}

TEST_F(FallbackTest, WithoutAFallbackTheRefusalFinishes) {
  openBreaker("", 2);
  auto actions = submitWithHops(3, 0);
  EXPECT_EQ(count<Resubmit>(actions), 0u);
  EXPECT_EQ(count<FinishJob>(actions), 1u);
}

TEST_F(FallbackTest, JobsThatRanAreNeverRerouted) {
  openBreaker("small", 2);
  // The crashes that opened the breaker finished as crashed, where they ran.
  EXPECT_EQ(finished_.at(0).outcome, Outcome::kCrashed);
  EXPECT_EQ(finished_.at(1).outcome, Outcome::kCrashed);
}

TEST_F(PolicyTest, HandlerErrorsDoNotOpenTheBreaker) {
  PoolPolicy p;
  p.workers = 1;
  p.breaker = {2, 30s, 10s};
  make(p);
  for (JobId id = 1; id <= 5; ++id) {
    auto send = nextSend(feed(JobSubmitted{id, payload("x"), std::nullopt}));
    ASSERT_TRUE(send);
    feed(JobErrorReceived{send->worker, id, {"ValueError", "m", "tb"}});
  }
  EXPECT_EQ(pool_->breakerState(), BreakerState::kClosed);
}

}  // namespace
}  // namespace bulkhead::core
