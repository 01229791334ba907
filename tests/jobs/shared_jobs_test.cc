// The jobs service with [cluster]: async jobs shared through a fake SharedJobs (an in-memory
// stand-in for Redis whose answers arrive only when the test delivers them, as they would on the
// event loop after a round trip). Real Redis is in tests/python/test_cluster_records.py.
#include <gtest/gtest.h>
#include <unistd.h>

#include <deque>
#include <filesystem>
#include <map>

#include "jobs/foreign_jobs.h"
#include "jobs/jobs_service.h"
#include "testlib/fake_jobs.h"

namespace bulkhead::jobs {
namespace {

using testlib::FakeRunner;
using testlib::FakeTimers;

constexpr core::JobId kOtherNodesJob = (core::JobId{2} << 40) + 7;

class FakeShared : public SharedJobs {
 public:
  bool connected() const override { return connected_; }
  bool foreign(core::JobId id) const override { return (id >> 40) != 0 && (id >> 40) != 1; }
  void claimKey(const std::string& key, core::JobId id, const std::string& pool,
                std::function<void(std::optional<SharedClaim>)> done) override {
    later_.push_back([=, this] {
      if (failClaims_) return done(std::nullopt);
      auto [it, fresh] = keys_.emplace(key, id);
      if (fresh) records_[id] = SharedRecord{"a", pool, false, std::nullopt, std::nullopt};
      auto rec = records_.find(it->second);
      done(SharedClaim{it->second,
                       rec == records_.end() ? std::nullopt : std::optional(rec->second)});
    });
  }
  void releaseKey(const std::string& key, core::JobId id) override {
    released_.push_back(key);
    if (keys_[key] == id) keys_.erase(key);
  }
  void accepted(core::JobId id, const std::string& pool, std::function<void()> recorded) override {
    later_.push_back([=, this] {
      records_[id] = SharedRecord{"a", pool, false, std::nullopt, std::nullopt};
      if (recorded) recorded();
    });
  }
  void finished(const core::JobReport& report, std::optional<int> runs) override {
    later_.push_back([=, this] {  // in order with accepted(), as Redis gets them
      records_[report.jobId] = SharedRecord{"a", report.pool, true, report, runs};
    });
  }
  void lookup(core::JobId id, std::function<void(SharedLookup)> done) override {
    ++lookups_;
    later_.push_back([=, this] {
      if (!connected_) return done(SharedLookup{std::nullopt, true});
      auto it = records_.find(id);
      done(SharedLookup{it == records_.end() ? std::nullopt : std::optional(it->second), false});
    });
  }
  void requestCancel(core::JobId id, const std::string& origin) override {
    cancelRequests_.emplace_back(id, origin);
  }
  // Runs the answers that are on their way, as the event loop would.
  void deliver() {
    while (!later_.empty()) {
      auto f = std::move(later_.front());
      later_.pop_front();
      f();
    }
  }

  bool connected_ = true;
  bool failClaims_ = false;
  std::map<std::string, core::JobId> keys_;
  std::map<core::JobId, SharedRecord> records_;
  std::vector<std::string> released_;
  std::vector<std::pair<core::JobId, std::string>> cancelRequests_;
  std::deque<std::function<void()>> later_;
  int lookups_ = 0;
};

SubmitRequest request(std::string key = "") {
  SubmitRequest r;
  r.pool = "p";
  r.payload = core::makePayload("x");
  r.idempotencyKey = std::move(key);
  return r;
}

core::JobReport finishedReport(core::JobId id, core::Outcome outcome) {
  core::JobReport r;
  r.jobId = id;
  r.pool = "p";
  r.outcome = outcome;
  r.node = "b";
  if (outcome == core::Outcome::kOk) r.result = core::makePayload("done");
  return r;
}

class SharedJobsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("bulkhead-shared-jobs-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    runner_.startJobIdsAfter(core::JobId{1} << 40);  // this node is number 1
    jobs_ = std::make_unique<JobsService>(
        runner_, timers_, std::make_unique<journal::Journal>((dir_ / "j.db").string()));
    jobs_->shareWith(shared_);
  }
  void TearDown() override {
    jobs_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::optional<std::variant<Accepted, SubmitError>> submit(SubmitRequest r) {
    std::optional<std::variant<Accepted, SubmitError>> got;
    jobs_->submitAsync(std::move(r), [&](auto answer) { got = std::move(answer); });
    shared_.deliver();
    return got;
  }
  std::optional<JobAnswer> get(core::JobId id, core::Duration wait) {
    std::optional<JobAnswer> got;
    jobs_->get(id, wait, [&](JobAnswer a) { got = std::move(a); });
    shared_.deliver();
    return got;
  }
  std::optional<CancelAnswer> cancel(core::JobId id) {
    std::optional<CancelAnswer> got;
    jobs_->cancel(id, [&](CancelAnswer a) { got = std::move(a); });
    shared_.deliver();
    return got;
  }

  std::filesystem::path dir_;
  FakeRunner runner_;
  FakeTimers timers_;
  FakeShared shared_;
  std::unique_ptr<JobsService> jobs_;
};

TEST_F(SharedJobsTest, AKeyedSubmitIsAnsweredOnlyAfterTheClusterSaysTheKeyIsNew) {
  std::optional<std::variant<Accepted, SubmitError>> got;
  jobs_->submitAsync(request("k1"), [&](auto answer) { got = std::move(answer); });
  EXPECT_FALSE(got) << "no answer before the claim's round trip";
  EXPECT_TRUE(runner_.running_.empty()) << "nothing starts before the key is known to be new";
  shared_.deliver();
  ASSERT_TRUE(got && std::holds_alternative<Accepted>(*got));
  const Accepted a = std::get<Accepted>(*got);
  EXPECT_FALSE(a.duplicate);
  EXPECT_EQ(a.id >> 40, 1u) << "ids carry this node's number";
  EXPECT_TRUE(runner_.running_.count(a.id));
  EXPECT_EQ(shared_.keys_.at("k1"), a.id);
  // The same key again, here: answered from this node's journal, without a round trip.
  std::optional<std::variant<Accepted, SubmitError>> again;
  jobs_->submitAsync(request("k1"), [&](auto answer) { again = std::move(answer); });
  ASSERT_TRUE(again) << "a key this node holds answers at once";
  EXPECT_EQ(std::get<Accepted>(*again).id, a.id);
  EXPECT_TRUE(std::get<Accepted>(*again).duplicate);
  EXPECT_EQ(runner_.running_.size(), 1u);
}

TEST_F(SharedJobsTest, AnAsyncJobIsAnsweredOnceEveryNodeCanFindIt) {
  std::optional<std::variant<Accepted, SubmitError>> got;
  jobs_->submitAsync(request(), [&](auto answer) { got = std::move(answer); });
  EXPECT_FALSE(got) << "a caller that asks another node next must find the job there";
  EXPECT_EQ(runner_.running_.size(), 1u) << "journaled and started meanwhile";
  shared_.deliver();
  ASSERT_TRUE(got && std::holds_alternative<Accepted>(*got));
  EXPECT_TRUE(shared_.records_.count(std::get<Accepted>(*got).id));
}

TEST_F(SharedJobsTest, AJobThatEndsAtOnceIsRecordedAcceptedThenFinishedNeverTheOtherWayRound) {
  runner_.refuseNext_ = RunnerRefusal::kUnknownPool;  // the pool went away: ended on the spot
  for (bool keyed : {false, true}) {
    if (keyed) runner_.refuseNext_ = RunnerRefusal::kUnknownPool;
    auto got = submit(request(keyed ? "k-at-once" : ""));
    ASSERT_TRUE(got && std::holds_alternative<Accepted>(*got));
    const SharedRecord& record = shared_.records_.at(std::get<Accepted>(*got).id);
    EXPECT_TRUE(record.finished) << "its acceptance must not overwrite its outcome";
    ASSERT_TRUE(record.report);
    EXPECT_EQ(record.report->outcome, core::Outcome::kUnavailable);
  }
}

TEST_F(SharedJobsTest, AKeyAnotherNodeHoldsAnswersItsJobAndStartsNothing) {
  shared_.keys_["k2"] = kOtherNodesJob;
  shared_.records_[kOtherNodesJob] =
      SharedRecord{"b", "p", true, finishedReport(kOtherNodesJob, core::Outcome::kOk), 1};
  auto got = submit(request("k2"));
  ASSERT_TRUE(got && std::holds_alternative<Accepted>(*got));
  EXPECT_EQ(std::get<Accepted>(*got).id, kOtherNodesJob);
  EXPECT_TRUE(std::get<Accepted>(*got).duplicate);
  EXPECT_EQ(std::get<Accepted>(*got).state, "finished");
  EXPECT_TRUE(runner_.running_.empty());
}

TEST_F(SharedJobsTest, WithRedisAwayKeyedSubmitsAreRefusedAndOthersStillRun) {
  shared_.connected_ = false;
  auto keyed = submit(request("k3"));
  ASSERT_TRUE(keyed && std::holds_alternative<SubmitError>(*keyed));
  EXPECT_EQ(std::get<SubmitError>(*keyed).kind, SubmitError::Kind::kKeyUnchecked);
  auto plain = submit(request());
  ASSERT_TRUE(plain && std::holds_alternative<Accepted>(*plain));
  EXPECT_EQ(runner_.running_.size(), 1u);
  EXPECT_TRUE(shared_.records_.count(std::get<Accepted>(*plain).id))
      << "recorded for the other nodes (the real one keeps it until Redis is back)";
  // A claim lost on the way is refused the same way.
  shared_.connected_ = true;
  shared_.failClaims_ = true;
  auto lost = submit(request("k4"));
  ASSERT_TRUE(lost && std::holds_alternative<SubmitError>(*lost));
  EXPECT_EQ(std::get<SubmitError>(*lost).kind, SubmitError::Kind::kKeyUnchecked);
  EXPECT_EQ(runner_.running_.size(), 1u);
}

TEST_F(SharedJobsTest, AShutdownDuringTheRoundTripRefusesTheJobAndLetsGoOfTheKey) {
  std::optional<std::variant<Accepted, SubmitError>> got;
  jobs_->submitAsync(request("k5"), [&](auto answer) { got = std::move(answer); });
  runner_.shuttingDown_ = true;
  shared_.deliver();
  ASSERT_TRUE(got && std::holds_alternative<SubmitError>(*got));
  EXPECT_EQ(std::get<SubmitError>(*got).kind, SubmitError::Kind::kShuttingDown);
  EXPECT_EQ(shared_.released_, std::vector<std::string>{"k5"});
  EXPECT_FALSE(shared_.keys_.count("k5")) << "a later submit with the key can run";
  EXPECT_TRUE(runner_.running_.empty());
}

TEST_F(SharedJobsTest, AClaimArrivingAfterTheServiceIsGoneIsDropped) {
  jobs_->submitAsync(request("k6"), [](auto) { FAIL() << "nobody is left to answer"; });
  jobs_.reset();
  shared_.deliver();
}

TEST_F(SharedJobsTest, OutcomesArePublishedWithTheJournalsRunCount) {
  auto got = submit(request());
  const core::JobId id = std::get<Accepted>(*got).id;
  EXPECT_FALSE(shared_.records_.at(id).finished);
  runner_.end(id, core::Outcome::kCrashed);
  shared_.deliver();
  const SharedRecord& record = shared_.records_.at(id);
  ASSERT_TRUE(record.finished && record.report);
  EXPECT_EQ(record.report->outcome, core::Outcome::kCrashed);
  EXPECT_EQ(record.runs, 1);
}

TEST_F(SharedJobsTest, AnotherNodesJobIsLookedUpInTheCluster) {
  shared_.records_[kOtherNodesJob] =
      SharedRecord{"b", "p", true, finishedReport(kOtherNodesJob, core::Outcome::kOk), 2};
  auto got = get(kOtherNodesJob, core::Duration(0));
  ASSERT_TRUE(got && std::holds_alternative<Finished>(*got));
  EXPECT_EQ(std::get<Finished>(*got).report.result->bytes(), "done");
  EXPECT_EQ(std::get<Finished>(*got).runs, 2);
  auto unknown = get(kOtherNodesJob + 1, core::Duration(0));
  ASSERT_TRUE(unknown && std::holds_alternative<LookupError>(*unknown));
  EXPECT_EQ(std::get<LookupError>(*unknown), LookupError::kUnknownJob);
  shared_.connected_ = false;
  auto away = get(kOtherNodesJob, core::Duration(0));
  ASSERT_TRUE(away && std::holds_alternative<LookupError>(*away));
  EXPECT_EQ(std::get<LookupError>(*away), LookupError::kClusterUnavailable);
  // This node's own ids never go to the cluster: an unknown one is simply unknown.
  const int before = shared_.lookups_;
  auto own = get((core::JobId{1} << 40) + 999, core::Duration(0));
  ASSERT_TRUE(own && std::holds_alternative<LookupError>(*own));
  EXPECT_EQ(shared_.lookups_, before);
}

TEST_F(SharedJobsTest, AWaitForAnotherNodesJobEndsWhenItsOutcomeIsRecordedOrTheWaitIsOver) {
  shared_.records_[kOtherNodesJob] = SharedRecord{"b", "p", false, std::nullopt, std::nullopt};
  std::optional<JobAnswer> got;
  jobs_->get(kOtherNodesJob, std::chrono::seconds(5), [&](JobAnswer a) { got = std::move(a); });
  shared_.deliver();
  EXPECT_FALSE(got) << "still queued: the caller waits";
  for (int i = 0; i < 3; ++i) {
    timers_.advance(ForeignJobs::kPollEvery);
    shared_.deliver();
  }
  EXPECT_FALSE(got);
  EXPECT_GE(shared_.lookups_, 4) << "read again while it waits";
  shared_.records_[kOtherNodesJob] =
      SharedRecord{"b", "p", true, finishedReport(kOtherNodesJob, core::Outcome::kHung), 1};
  timers_.advance(ForeignJobs::kPollEvery);
  shared_.deliver();
  ASSERT_TRUE(got && std::holds_alternative<Finished>(*got));
  EXPECT_EQ(std::get<Finished>(*got).report.outcome, core::Outcome::kHung);
  EXPECT_TRUE(timers_.timers_.empty()) << "no read left scheduled";

  shared_.records_[kOtherNodesJob + 1] = SharedRecord{"b", "p", false, std::nullopt, std::nullopt};
  std::optional<JobAnswer> pending;
  jobs_->get(kOtherNodesJob + 1, std::chrono::milliseconds(250),
             [&](JobAnswer a) { pending = std::move(a); });
  for (int i = 0; i < 10 && !pending; ++i) {
    shared_.deliver();
    timers_.advance(ForeignJobs::kPollEvery);
  }
  shared_.deliver();
  ASSERT_TRUE(pending && std::holds_alternative<Pending>(*pending));
  EXPECT_EQ(std::get<Pending>(*pending).state, "queued");
  EXPECT_GE(timers_.now_, core::Time(std::chrono::milliseconds(250)));
}

TEST_F(SharedJobsTest, AnotherNodesJobIsCancelledByItsOrigin) {
  shared_.records_[kOtherNodesJob] = SharedRecord{"b", "p", false, std::nullopt, std::nullopt};
  auto got = cancel(kOtherNodesJob);
  ASSERT_TRUE(got && std::holds_alternative<Cancelling>(*got));
  ASSERT_EQ(shared_.cancelRequests_.size(), 1u);
  EXPECT_EQ(shared_.cancelRequests_[0], std::make_pair(kOtherNodesJob, std::string("b")));
  shared_.records_[kOtherNodesJob] =
      SharedRecord{"b", "p", true, finishedReport(kOtherNodesJob, core::Outcome::kCancelled), 1};
  auto ended = cancel(kOtherNodesJob);
  ASSERT_TRUE(ended && std::holds_alternative<AlreadyFinished>(*ended));
  EXPECT_EQ(std::get<AlreadyFinished>(*ended).outcome, "cancelled");
  auto unknown = cancel(kOtherNodesJob + 5);
  ASSERT_TRUE(unknown && std::holds_alternative<LookupError>(*unknown));
  EXPECT_EQ(shared_.cancelRequests_.size(), 1u);
  // This node's own job is cancelled here, as always.
  auto own = submit(request());
  const core::JobId id = std::get<Accepted>(*own).id;
  auto mine = cancel(id);
  ASSERT_TRUE(mine && std::holds_alternative<Cancelling>(*mine));
  EXPECT_EQ(runner_.cancelled_, std::vector<core::JobId>{id});
}

}  // namespace
}  // namespace bulkhead::jobs
