// The jobs service on a fake runner and fake timers: no processes, no sockets, no real time.
#include "jobs/jobs_service.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include "jobs/report_json.h"
#include "testlib/fake_jobs.h"

namespace bulkhead::jobs {
namespace {

using testlib::FakeRunner;
using testlib::FakeTimers;

core::Payload bytes(std::string s) { return core::makePayload(std::move(s)); }

SubmitRequest request(std::string payload = "x", std::string key = "") {
  SubmitRequest r;
  r.pool = "p";
  r.payload = bytes(std::move(payload));
  r.idempotencyKey = std::move(key);
  return r;
}

class JobsServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("bulkhead-jobs-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    service_.reset();
    std::filesystem::remove_all(dir_);
  }
  JobsService& journaled() {
    service_ = std::make_unique<JobsService>(
        runner_, timers_, std::make_unique<journal::Journal>((dir_ / "j.db").string()));
    return *service_;
  }
  JobsService& withoutJournal() {
    service_ = std::make_unique<JobsService>(runner_, timers_, nullptr);
    return *service_;
  }
  core::JobId acceptedId(std::variant<Accepted, SubmitError> answer) {
    EXPECT_TRUE(std::holds_alternative<Accepted>(answer));
    return std::get<Accepted>(answer).id;
  }
  // get() with no wait: the answer it gives at once.
  JobAnswer lookUp(JobsService& jobs, core::JobId id) {
    std::optional<JobAnswer> got;
    jobs.get(id, core::Duration(0), [&](JobAnswer a) { got = std::move(a); });
    EXPECT_TRUE(got) << "get() without a wait answers at once";
    return got ? *got : JobAnswer(LookupError::kUnknownJob);
  }

  std::filesystem::path dir_;
  FakeRunner runner_;
  FakeTimers timers_;
  std::unique_ptr<JobsService> service_;
};

TEST_F(JobsServiceTest, RefusalsComeInOneFixedOrder) {
  JobsService& jobs = withoutJournal();
  SubmitRequest bad = request(std::string(500, 'x'));
  bad.pool = "nope";
  bad.invalid = "X-Bulkhead-Timeout must be a positive duration";
  auto kind = [&](const SubmitRequest& r) {
    auto refused = jobs.submit(r, [](const core::JobReport&) { FAIL() << "refused jobs end"; });
    return refused ? std::optional(refused->kind) : std::nullopt;
  };
  runner_.shuttingDown_ = true;
  EXPECT_EQ(kind(bad), SubmitError::Kind::kShuttingDown) << "even a malformed request";
  runner_.shuttingDown_ = false;
  EXPECT_EQ(kind(bad), SubmitError::Kind::kInvalid);
  bad.invalid.reset();
  EXPECT_EQ(kind(bad), SubmitError::Kind::kUnknownPool);
  bad.pool = "p";
  auto tooLarge = jobs.submit(bad, [](const core::JobReport&) {});
  ASSERT_TRUE(tooLarge);
  EXPECT_EQ(tooLarge->kind, SubmitError::Kind::kPayloadTooLarge);
  EXPECT_EQ(tooLarge->payloadBytes, 500u);
  EXPECT_EQ(tooLarge->maxPayload, 100u);
  auto async = jobs.submitAsync(request());
  ASSERT_TRUE(std::holds_alternative<SubmitError>(async));
  EXPECT_EQ(std::get<SubmitError>(async).kind, SubmitError::Kind::kAsyncNeedsJournal);
  EXPECT_TRUE(runner_.running_.empty());
}

TEST_F(JobsServiceTest, ASyncJobsReportGoesToItsCallerWithTheDeadlineFromNow) {
  JobsService& jobs = withoutJournal();
  timers_.now_ = core::Time(std::chrono::seconds(100));
  SubmitRequest r = request("hello");
  r.timeout = std::chrono::seconds(2);
  r.budget = std::chrono::seconds(5);
  std::optional<core::JobReport> got;
  ASSERT_FALSE(jobs.submit(r, [&](const core::JobReport& report) { got = report; }));
  ASSERT_EQ(runner_.running_.size(), 1u);
  const auto& job = runner_.running_.begin()->second;
  EXPECT_EQ(job.options.deadline, core::Time(std::chrono::seconds(105)));
  EXPECT_EQ(job.options.timeout, std::chrono::seconds(2));
  EXPECT_FALSE(job.options.async);
  runner_.end(runner_.running_.begin()->first);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->result->bytes(), "hello");
}

TEST_F(JobsServiceTest, AnIdClashIsATypedErrorNotACallerLeftWaiting) {
  JobsService& jobs = withoutJournal();
  runner_.refuseNext_ = RunnerRefusal::kDuplicateId;
  bool called = false;
  auto refused = jobs.submit(request(), [&](const core::JobReport&) { called = true; });
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->kind, SubmitError::Kind::kDuplicateId);
  EXPECT_FALSE(called);
}

TEST_F(JobsServiceTest, FailedSyncJobsAreRecordedOkOnesAreNot) {
  JobsService& jobs = journaled();
  jobs.submit(request("fine"), [](const core::JobReport&) {});
  jobs.submit(request("bad"), [](const core::JobReport&) {});
  runner_.end(1);
  runner_.end(2, core::Outcome::kCrashed);
  EXPECT_EQ(std::get<LookupError>(lookUp(jobs, 1)), LookupError::kUnknownJob);
  auto failed = lookUp(jobs, 2);
  ASSERT_TRUE(std::holds_alternative<Finished>(failed));
  EXPECT_EQ(std::get<Finished>(failed).report.outcome, core::Outcome::kCrashed);
}

TEST_F(JobsServiceTest, AnAsyncJobIsJournaledThenAnsweredFromItsReport) {
  JobsService& jobs = journaled();
  auto answer = jobs.submitAsync(request("payload"));
  ASSERT_TRUE(std::holds_alternative<Accepted>(answer));
  const Accepted accepted = std::get<Accepted>(answer);
  EXPECT_FALSE(accepted.duplicate);
  EXPECT_EQ(accepted.state, "running");
  EXPECT_TRUE(runner_.running_.at(accepted.id).options.async);
  auto pending = lookUp(jobs, accepted.id);
  ASSERT_TRUE(std::holds_alternative<Pending>(pending));
  EXPECT_EQ(std::get<Pending>(pending).state, "running");
  runner_.end(accepted.id);
  auto done = lookUp(jobs, accepted.id);
  ASSERT_TRUE(std::holds_alternative<Finished>(done));
  EXPECT_EQ(std::get<Finished>(done).report.result->bytes(), "payload");
  EXPECT_EQ(std::get<Finished>(done).runs, 1);
  auto again = jobs.cancel(accepted.id);
  ASSERT_TRUE(std::holds_alternative<AlreadyFinished>(again));
  EXPECT_EQ(std::get<AlreadyFinished>(again).outcome, "ok");
  EXPECT_EQ(std::get<LookupError>(jobs.cancel(999)), LookupError::kUnknownJob);
}

TEST_F(JobsServiceTest, TheSameIdempotencyKeyIsTheSameJob) {
  JobsService& jobs = journaled();
  const core::JobId first = acceptedId(jobs.submitAsync(request("x", "k")));
  auto again = jobs.submitAsync(request("x", "k"));
  ASSERT_TRUE(std::holds_alternative<Accepted>(again));
  EXPECT_EQ(std::get<Accepted>(again).id, first);
  EXPECT_TRUE(std::get<Accepted>(again).duplicate);
  EXPECT_NE(acceptedId(jobs.submitAsync(request("x", "j"))), first);
  EXPECT_EQ(runner_.running_.size(), 2u);
}

TEST_F(JobsServiceTest, ALongPollEndsWithTheReportOrWithWhereTheJobIsWhenTheWaitEnds) {
  JobsService& jobs = journaled();
  const core::JobId id = acceptedId(jobs.submitAsync(request()));
  std::vector<JobAnswer> answers;
  jobs.get(id, std::chrono::seconds(10), [&](JobAnswer a) { answers.push_back(std::move(a)); });
  jobs.get(id, std::chrono::seconds(1), [&](JobAnswer a) { answers.push_back(std::move(a)); });
  EXPECT_TRUE(answers.empty());
  timers_.advance(std::chrono::seconds(1));
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(std::get<Pending>(answers[0]).state, "running") << "the short wait ran out";
  runner_.end(id);
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_EQ(std::get<Finished>(answers[1]).report.outcome, core::Outcome::kOk);
  EXPECT_TRUE(timers_.timers_.empty()) << "the long wait's timer was cancelled";
}

TEST_F(JobsServiceTest, CancelAsksThePoolsAndTheJobEndsThroughThem) {
  JobsService& jobs = journaled();
  const core::JobId id = acceptedId(jobs.submitAsync(request()));
  ASSERT_TRUE(std::holds_alternative<Cancelling>(jobs.cancel(id)));
  EXPECT_EQ(runner_.cancelled_, std::vector<core::JobId>{id});
  runner_.end(id, core::Outcome::kCancelled);
  EXPECT_EQ(std::get<AlreadyFinished>(jobs.cancel(id)).outcome, "cancelled");
}

TEST_F(JobsServiceTest, RecoveryRunsUnfinishedJobsAgainWithTheirIdsAndOptions) {
  core::JobId id = 0;
  {
    JobsService& jobs = journaled();
    SubmitRequest r = request("again");
    r.timeout = std::chrono::milliseconds(1500);
    r.allowPoison = true;
    id = acceptedId(jobs.submitAsync(r));
    acceptedId(jobs.submitAsync(request("done")));
    runner_.end(id + 1);
  }
  // A new supervisor: nothing running, ids start over.
  runner_ = FakeRunner();
  JobsService& jobs = journaled();
  EXPECT_EQ(runner_.nextId_, id + 2) << "new ids continue after the journal's";
  EXPECT_EQ(jobs.recover(), 1u);
  ASSERT_EQ(runner_.running_.count(id), 1u);
  const auto& job = runner_.running_.at(id);
  EXPECT_EQ(job.payload->bytes(), "again");
  EXPECT_EQ(job.options.timeout, std::chrono::milliseconds(1500));
  EXPECT_TRUE(job.options.allowPoison);
  EXPECT_TRUE(job.options.async);
  runner_.end(id);
  EXPECT_EQ(std::get<Finished>(lookUp(jobs, id)).runs, 2) << "it was submitted twice";
}

TEST_F(JobsServiceTest, ARecoveredJobWhosePoolIsGoneEndsUnavailable) {
  {
    JobsService& jobs = journaled();
    acceptedId(jobs.submitAsync(request()));
  }
  runner_ = FakeRunner();
  runner_.pools_ = {{"other", 100}};
  JobsService& jobs = journaled();
  EXPECT_EQ(jobs.recover(), 1u);
  const Finished done = std::get<Finished>(lookUp(jobs, 1));
  EXPECT_EQ(done.report.outcome, core::Outcome::kUnavailable);
  EXPECT_EQ(done.report.detail, "pool 'p' no longer exists");
}

// A journal that fails under the daemon (here its table is dropped by another program, as a full
// disk or an I/O error would fail it): async submits are refused, outcomes are kept in memory,
// sync jobs go on, and nothing throws.
TEST_F(JobsServiceTest, AJournalThatFailsDegradesInsteadOfThrowing) {
  JobsService& jobs = journaled();
  const core::JobId id = acceptedId(jobs.submitAsync(request()));
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "j.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "DROP TABLE jobs", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);

  auto refused = jobs.submitAsync(request());
  ASSERT_TRUE(std::holds_alternative<SubmitError>(refused));
  EXPECT_EQ(std::get<SubmitError>(refused).kind, SubmitError::Kind::kJournalUnavailable);
  runner_.end(id);
  const Finished kept = std::get<Finished>(lookUp(jobs, id));
  EXPECT_EQ(kept.report.outcome, core::Outcome::kOk) << "the outcome is kept in memory";
  EXPECT_FALSE(kept.runs);
  EXPECT_EQ(std::get<AlreadyFinished>(jobs.cancel(id)).outcome, "ok");
  EXPECT_EQ(std::get<LookupError>(lookUp(jobs, id + 100)), LookupError::kJournalUnavailable);
  bool ran = false;
  ASSERT_FALSE(jobs.submit(request(), [&](const core::JobReport&) { ran = true; }));
  runner_.end(runner_.running_.begin()->first, core::Outcome::kCrashed);  // recording it fails
  EXPECT_TRUE(ran);
  EXPECT_GE(jobs.journalErrors(), 4u);
}

}  // namespace
}  // namespace bulkhead::jobs
