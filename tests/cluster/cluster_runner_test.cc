// The cluster's job policy on simulated time, without Redis: where a job runs, how a sent job's
// caller hears its outcome exactly once (outcome, deadline, cancel, failure to enqueue), how jobs
// taken from the streams run and report, and the cluster-wide poison rule under thousands of
// simulated node deaths.
#include "cluster/cluster_runner.h"

#include <gtest/gtest.h>

#include <deque>
#include <random>

#include "core/quarantine.h"
#include "jobs/report_json.h"
#include "testlib/fake_jobs.h"

namespace bulkhead::cluster {
namespace {

using testlib::FakeRunner;
using testlib::FakeTimers;

class FakeTransport : public JobTransport {
 public:
  bool connected() const override { return connected_; }
  void enqueue(JobEntry job) override { enqueued_.push_back(std::move(job)); }
  void finish(const Delivery& d, OutcomeEntry o) override { finished_.push_back({d, o}); }
  void wantJobs(std::map<std::string, std::size_t> wanted) override {
    wanted_ = wanted;
    ++wantCalls_;
  }
  void quarantine(Quarantined record) override { quarantined_.push_back(record); }

  bool connected_ = true;
  std::vector<JobEntry> enqueued_;
  std::vector<std::pair<Delivery, OutcomeEntry>> finished_;
  std::map<std::string, std::size_t> wanted_;
  int wantCalls_ = 0;
  std::vector<Quarantined> quarantined_;
};

std::string announcement(const std::string& node, const std::string& pool, std::uint64_t maxPayload,
                         bool shuttingDown = false) {
  return nlohmann::json{{"node", node},
                        {"shutting_down", shuttingDown},
                        {"pools", {{{"name", pool}, {"max_payload", maxPayload}}}}}
      .dump();
}

struct Node {
  explicit Node(std::string name = "a") {
    ClusterRunner::LocalPools pools;
    pools.freeWorkers = [this](std::string_view pool) {
      auto it = free.find(std::string(pool));
      return it == free.end() ? std::size_t{0} : it->second;
    };
    pools.names = [this] {
      std::vector<std::string> names;
      for (const auto& [n, limit] : local.pools_) names.push_back(n);
      return names;
    };
    pools.poisonAfter["p"] = 2;
    runner = std::make_unique<ClusterRunner>(local, timers, transport, std::move(name),
                                             std::move(pools), [this] { return unixMs; });
    handlers = runner->handlers();
  }

  // Submits and records every report its caller gets.
  std::optional<jobs::RunnerRefusal> submit(core::JobId id, const std::string& pool,
                                            jobs::RunOptions options = {}) {
    return runner->submitWithId(id, pool, core::makePayload("x" + std::to_string(id)), options,
                                [this](const core::JobReport& r) { answers.push_back(r); });
  }

  FakeRunner local;
  FakeTimers timers;
  FakeTransport transport;
  std::map<std::string, std::size_t> free{{"p", 1}};
  std::int64_t unixMs = 1'000'000;
  std::unique_ptr<ClusterRunner> runner;
  TransportHandlers handlers;
  std::vector<core::JobReport> answers;
};

OutcomeEntry okOutcome(core::JobId id, const std::string& node, std::uint64_t runs = 1) {
  core::JobReport r;
  r.jobId = 999;  // the executing node's own id: the origin answers with its id
  r.pool = "q";
  r.worker = "q-1";
  r.attempts.resize(1);
  return OutcomeEntry{id, node, runs, jobs::reportToJson(r).dump(), "result"};
}

TEST(Directory, ListsLiveOtherNodesPoolsWithTheSmallestPayloadLimit) {
  const Directory d =
      directoryFrom({announcement("a", "self-only", 10), announcement("b", "q", 500),
                     announcement("c", "q", 300), announcement("d", "leaving", 1, true), "not json",
                     R"({"node":"e","pools":[{"nameless":1}]})"},
                    "a");
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d.at("q").nodes, 2u);
  EXPECT_EQ(d.at("q").maxPayload, 300u);
}

TEST(ClusterRunner, ALocalPoolWithAFreeWorkerRunsHereWithoutRedis) {
  Node n;
  n.runner->setDirectory(directoryFrom({announcement("b", "p", 100)}, "a"));
  ASSERT_FALSE(n.submit(1, "p"));
  EXPECT_TRUE(n.transport.enqueued_.empty());
  n.local.end(1);
  ASSERT_EQ(n.answers.size(), 1u);
  EXPECT_EQ(n.answers[0].node, "a");
  EXPECT_EQ(n.answers[0].runs, 0u);
}

TEST(ClusterRunner, ABusyLocalPoolOverflowsToTheStreamOnlyWhenAnotherNodeHasIt) {
  Node n;
  n.free["p"] = 0;
  ASSERT_FALSE(n.submit(1, "p"));  // no other node: queued here as always
  EXPECT_TRUE(n.local.running_.count(1));
  n.runner->setDirectory(directoryFrom({announcement("b", "p", 100)}, "a"));
  ASSERT_FALSE(n.submit(2, "p"));
  ASSERT_EQ(n.transport.enqueued_.size(), 1u);
  EXPECT_EQ(n.transport.enqueued_[0].originId, 2u);
  EXPECT_EQ(n.transport.enqueued_[0].origin, "a");
  EXPECT_EQ(n.transport.enqueued_[0].payload, "x2");
  n.transport.connected_ = false;  // Redis away: the local queue holds it
  ASSERT_FALSE(n.submit(3, "p"));
  EXPECT_TRUE(n.local.running_.count(3));
}

TEST(ClusterRunner, ARemotePoolsOutcomeReachesTheCallerOnceWithNodeAndRuns) {
  Node n;
  n.runner->setDirectory(directoryFrom({announcement("b", "q", 100)}, "a"));
  EXPECT_TRUE(n.runner->hasPool("q"));
  EXPECT_EQ(n.runner->maxPayload("q"), 100u);
  ASSERT_FALSE(n.submit(7, "q"));
  EXPECT_EQ(n.runner->jobState(7), "queued");
  n.handlers.outcome(okOutcome(7, "b", 2));
  n.handlers.outcome(okOutcome(7, "c", 3));  // a second run's outcome: dropped
  ASSERT_EQ(n.answers.size(), 1u);
  const core::JobReport& r = n.answers[0];
  EXPECT_EQ(r.jobId, 7u);
  EXPECT_EQ(r.outcome, core::Outcome::kOk);
  EXPECT_EQ(r.node, "b");
  EXPECT_EQ(r.runs, 2u);
  EXPECT_EQ(r.result->bytes(), "result");
  EXPECT_EQ(n.runner->jobState(7), std::nullopt);
}

TEST(ClusterRunner, RefusesWhatItCannotSend) {
  Node n;
  EXPECT_EQ(n.submit(1, "nowhere"), jobs::RunnerRefusal::kUnknownPool);
  n.runner->setDirectory(directoryFrom({announcement("b", "q", 1)}, "a"));
  EXPECT_EQ(n.submit(2, "q"), jobs::RunnerRefusal::kPayloadTooLarge);
  n.transport.connected_ = false;
  EXPECT_EQ(n.runner->unreachable("q"), "Redis is not reachable");
  EXPECT_EQ(n.runner->unreachable("p"), std::nullopt);  // local pools never need Redis
  EXPECT_EQ(n.submit(3, "q"), jobs::RunnerRefusal::kClusterUnavailable);
  EXPECT_TRUE(n.answers.empty());
}

TEST(ClusterRunner, TheDeadlineAnswersWhenNoNodeDoesAndTheLateOutcomeIsDropped) {
  Node n;
  n.runner->setDirectory(directoryFrom({announcement("b", "q", 100)}, "a"));
  jobs::RunOptions options;
  options.deadline = n.timers.now() + std::chrono::seconds(2);
  options.timeout = std::chrono::milliseconds(700);
  ASSERT_FALSE(n.submit(1, "q", options));
  EXPECT_EQ(n.transport.enqueued_[0].deadlineUnixMs, 1'002'000);
  EXPECT_EQ(n.transport.enqueued_[0].timeoutMs, 700);
  n.timers.advance(std::chrono::milliseconds(1999));
  EXPECT_TRUE(n.answers.empty());
  n.timers.advance(std::chrono::milliseconds(1));
  ASSERT_EQ(n.answers.size(), 1u);
  EXPECT_EQ(n.answers[0].outcome, core::Outcome::kTimedOut);
  EXPECT_EQ(n.answers[0].stage, "queued");
  n.handlers.outcome(okOutcome(1, "b"));
  EXPECT_EQ(n.answers.size(), 1u);
}

TEST(ClusterRunner, CancelAndAFailedEnqueueAnswerOnce) {
  Node n;
  n.runner->setDirectory(directoryFrom({announcement("b", "q", 100)}, "a"));
  ASSERT_FALSE(n.submit(1, "q"));
  ASSERT_FALSE(n.submit(2, "q"));
  n.runner->cancel(1);
  n.handlers.notQueued(2, "Redis: connection reset");
  n.handlers.outcome(okOutcome(1, "b"));
  n.handlers.notQueued(2, "again");
  ASSERT_EQ(n.answers.size(), 2u);
  EXPECT_EQ(n.answers[0].outcome, core::Outcome::kCancelled);
  EXPECT_EQ(n.answers[1].outcome, core::Outcome::kUnavailable);
  EXPECT_NE(n.answers[1].detail.find("connection reset"), std::string::npos);
  EXPECT_EQ(n.runner->sentWaiting(), 0u);
}

TEST(ClusterRunner, APoolMissingFromAnnouncementsIsKeptForForgetAfterThenItsJobsAnswered) {
  Node n;  // forgetAfter: the default 30 s
  n.runner->setDirectory(directoryFrom({announcement("b", "q", 100)}, "a"));
  ASSERT_FALSE(n.submit(1, "q"));
  n.timers.advance(std::chrono::seconds(20));
  n.runner->setDirectory({});  // node b missed a heartbeat (or is gone)
  EXPECT_TRUE(n.runner->hasPool("q"));
  ASSERT_FALSE(n.submit(2, "q"));  // still sent, not unknown_pool
  n.timers.advance(std::chrono::seconds(9));
  n.runner->setDirectory({});
  EXPECT_TRUE(n.answers.empty());
  n.timers.advance(std::chrono::seconds(1));  // 30 s since an announcement had it
  n.runner->setDirectory({});
  EXPECT_FALSE(n.runner->hasPool("q"));
  ASSERT_EQ(n.answers.size(), 2u);
  EXPECT_EQ(n.answers[0].outcome, core::Outcome::kUnavailable);
  EXPECT_NE(n.answers[0].detail.find("no live node has had pool 'q'"), std::string::npos);
  // A pool announced again is known again at once.
  n.runner->setDirectory(directoryFrom({announcement("c", "q", 100)}, "a"));
  EXPECT_TRUE(n.runner->hasPool("q"));
}

TEST(ClusterRunner, AStoppingNodeAnswersEveryJobItStillWaitsFor) {
  Node n;
  n.runner->setDirectory(directoryFrom({announcement("b", "q", 100)}, "a"));
  ASSERT_FALSE(n.submit(1, "q"));
  ASSERT_FALSE(n.submit(2, "q"));
  n.runner->abandonWaiting();
  n.handlers.outcome(okOutcome(1, "b"));
  ASSERT_EQ(n.answers.size(), 2u);
  for (const auto& r : n.answers) {
    EXPECT_EQ(r.outcome, core::Outcome::kUnavailable);
    EXPECT_NE(r.detail.find("stopped before the job's outcome came back"), std::string::npos);
  }
  EXPECT_EQ(n.runner->sentWaiting(), 0u);
}

TEST(ClusterRunner, ATakenJobRunsHereAndItsOutcomeGoesBackWithItsRuns) {
  Node n("b");
  Delivery d{"bulkhead:pool:p:jobs", "1-0", 2, {}, false};
  d.job = {"a", 41, "p", "payload", "", 500, 1'003'000, true};
  n.handlers.job(d);
  ASSERT_EQ(n.local.running_.size(), 1u);
  const auto& [localId, job] = *n.local.running_.begin();
  EXPECT_EQ(job.payload->bytes(), "payload");
  EXPECT_TRUE(job.options.async);
  EXPECT_TRUE(job.options.allowPoison);
  EXPECT_EQ(job.options.timeout, std::chrono::milliseconds(500));
  EXPECT_EQ(job.options.deadline, n.timers.now() + std::chrono::seconds(3));
  n.local.end(localId);
  ASSERT_EQ(n.transport.finished_.size(), 1u);
  const auto& [delivery, outcome] = n.transport.finished_[0];
  EXPECT_EQ(delivery.entryId, "1-0");
  EXPECT_EQ(outcome.originId, 41u);
  EXPECT_EQ(outcome.node, "b");
  EXPECT_EQ(outcome.runs, 2u);
  EXPECT_EQ(outcome.result, "payload");
  auto report = jobs::reportFromJson(outcome.reportJson, outcome.result);
  ASSERT_TRUE(report);
  EXPECT_EQ(report->jobId, 41u);
  EXPECT_EQ(report->outcome, core::Outcome::kOk);
}

TEST(ClusterRunner, AJobHandedOutMoreThanPoisonAfterTimesEndsPoisonWithoutRunning) {
  Node n("b");
  Delivery d{"bulkhead:pool:p:jobs", "1-0", 3, {}, false};
  d.job = {"a", 41, "p", "payload", "", {}, {}, false};
  n.handlers.job(d);
  EXPECT_TRUE(n.local.running_.empty());
  ASSERT_EQ(n.transport.finished_.size(), 1u);
  auto report = jobs::reportFromJson(n.transport.finished_[0].second.reportJson);
  ASSERT_TRUE(report);
  EXPECT_EQ(report->outcome, core::Outcome::kPoison);
  EXPECT_NE(report->detail.find("handed this job to a node 2 times"), std::string::npos);
}

TEST(ClusterRunner, AJobWhosePayloadKeyExpiredEndsUnavailableWithoutRunning) {
  Node n("b");
  Delivery d{"bulkhead:pool:p:jobs", "1-0", 1, {}, true};
  d.job = {"a", 41, "p", "", "bulkhead:payload:a:1:41", {}, {}, false};
  n.handlers.job(d);
  EXPECT_TRUE(n.local.running_.empty());
  ASSERT_EQ(n.transport.finished_.size(), 1u);
  auto report = jobs::reportFromJson(n.transport.finished_[0].second.reportJson);
  EXPECT_EQ(report->outcome, core::Outcome::kUnavailable);
  EXPECT_NE(report->detail.find("bulkhead:payload:a:1:41) expired"), std::string::npos);
}

// Ends a running job of the fake pools as crashed, its payload quarantined by this attempt.
void endQuarantined(FakeRunner& local, core::JobId id) {
  auto job = std::move(local.running_.at(id));
  local.running_.erase(id);
  core::JobReport r;
  r.jobId = id;
  r.pool = job.pool;
  r.outcome = core::Outcome::kCrashed;
  r.attempts.resize(2);
  r.attempts[0].worker = "p-1";
  r.quarantined = true;
  r.fingerprint = core::payloadFingerprint(*job.payload);
  job.reply(r);
}

TEST(ClusterRunner, APayloadQuarantinedHereIsRecordedForTheClusterAndRefusedAtOnce) {
  Node n;
  ASSERT_FALSE(n.submit(1, "p"));  // payload "x1"
  endQuarantined(n.local, 1);
  ASSERT_EQ(n.transport.quarantined_.size(), 1u);
  const Quarantined& q = n.transport.quarantined_[0];
  EXPECT_EQ(q.pool, "p");
  EXPECT_EQ(q.fingerprint, core::payloadFingerprint(std::string_view("x1")));
  EXPECT_EQ(jobs::reportFromJson(q.reportJson)->node, "a");
  n.runner->setQuarantine({});  // a heartbeat that read Redis before the record reached it
  EXPECT_EQ(n.runner->quarantine().at("p").size(), 1u);
  // The same payload again: refused here, before any worker, with the evidence.
  ASSERT_FALSE(n.runner->submitWithId(2, "p", core::makePayload("x1"), {},
                                      [&](const core::JobReport& r) { n.answers.push_back(r); }));
  EXPECT_FALSE(n.local.running_.count(2));
  ASSERT_EQ(n.answers.size(), 2u);
  EXPECT_EQ(n.answers[1].outcome, core::Outcome::kPoison);
  EXPECT_EQ(n.answers[1].attempts.size(), 2u);
  EXPECT_NE(n.answers[1].detail.find("payload quarantined on node 'a'"), std::string::npos);
  jobs::RunOptions allow;
  allow.allowPoison = true;
  ASSERT_FALSE(n.runner->submitWithId(3, "p", core::makePayload("x1"), allow,
                                      [&](const core::JobReport& r) { n.answers.push_back(r); }));
  EXPECT_TRUE(n.local.running_.count(3));
}

TEST(ClusterRunner, APayloadAnotherNodeQuarantinedIsRefusedBeforeSendingAndBeforeRunning) {
  Node n;
  n.runner->setDirectory(directoryFrom({announcement("b", "q", 100)}, "a"));
  core::JobReport condemned;
  condemned.jobId = 77;
  condemned.pool = "q";
  condemned.outcome = core::Outcome::kCrashed;
  condemned.node = "b";
  condemned.attempts.resize(2);
  const std::string json = jobs::reportToJson(condemned).dump();
  n.runner->setQuarantine({{"q", {{core::payloadFingerprint(std::string_view("x1")), json}}},
                           {"p", {{core::payloadFingerprint(std::string_view("bad")), json}}}});
  ASSERT_FALSE(n.submit(1, "q"));  // payload "x1": quarantined on b
  ASSERT_FALSE(n.submit(2, "q"));  // "x2": sent
  EXPECT_EQ(n.transport.enqueued_.size(), 1u);
  ASSERT_EQ(n.answers.size(), 1u);
  EXPECT_EQ(n.answers[0].outcome, core::Outcome::kPoison);
  EXPECT_EQ(n.answers[0].node, "b");
  EXPECT_NE(n.answers[0].detail.find("on node 'b': it crashed the workers of job 77"),
            std::string::npos);
  // Queued before the quarantine, taken here after it: ended poison, not run.
  Delivery d{"bulkhead:pool:p:jobs", "1-0", 1, {}, false};
  d.job = {"c", 5, "p", "bad", "", {}, {}, false};
  n.handlers.job(d);
  EXPECT_TRUE(n.local.running_.empty());
  ASSERT_EQ(n.transport.finished_.size(), 1u);
  EXPECT_EQ(jobs::reportFromJson(n.transport.finished_[0].second.reportJson)->outcome,
            core::Outcome::kPoison);
}

TEST(ClusterRunner, WantsAsManyJobsAsItHasFreeWorkersAndNoneWhenStopping) {
  Node n;
  n.local.pools_["r"] = 100;
  n.free = {{"p", 2}, {"r", 0}};
  n.runner->tend();
  EXPECT_TRUE(n.transport.wanted_.empty());  // the cluster's quarantine not read yet
  n.runner->setQuarantine({});
  n.runner->tend();
  EXPECT_EQ(n.transport.wanted_, (std::map<std::string, std::size_t>{{"p", 2}}));
  n.local.shuttingDown_ = true;
  n.runner->tend();
  EXPECT_TRUE(n.transport.wanted_.empty());
  Delivery d{"bulkhead:pool:p:jobs", "1-0", 1, {}, false};
  d.job = {"a", 1, "p", "x", "", {}, {}, false};
  n.handlers.job(d);  // taken just before: answered, not run
  ASSERT_EQ(n.transport.finished_.size(), 1u);
  EXPECT_EQ(jobs::reportFromJson(n.transport.finished_[0].second.reportJson)->outcome,
            core::Outcome::kUnavailable);
}

TEST(ClusterRunner, ALocalJobTellsTheTransportOnlyWhenItsPoolsFreeWorkersChange) {
  Node n;
  n.local.pools_["r"] = 100;
  n.free = {{"p", 1}, {"r", 3}};
  n.runner->setQuarantine({});
  n.runner->tend();
  ASSERT_EQ(n.transport.wanted_, (std::map<std::string, std::size_t>{{"p", 1}, {"r", 3}}));
  const int before = n.transport.wantCalls_;
  n.free["p"] = 0;  // the worker takes the job
  ASSERT_FALSE(n.submit(1, "p"));
  EXPECT_EQ(n.transport.wanted_, (std::map<std::string, std::size_t>{{"r", 3}}));
  EXPECT_EQ(n.transport.wantCalls_, before + 1);
  n.free["p"] = 0;  // a busy pool: the next job queues, its count stays 0
  ASSERT_FALSE(n.submit(2, "p"));
  EXPECT_EQ(n.transport.wantCalls_, before + 1) << "nothing changed: the transport is not told";
  n.local.end(1);
  EXPECT_EQ(n.transport.wantCalls_, before + 1) << "still no free worker: job 2 took it";
  n.free["p"] = 1;
  n.local.end(2);
  EXPECT_EQ(n.transport.wanted_, (std::map<std::string, std::size_t>{{"p", 1}, {"r", 3}}));
  EXPECT_EQ(n.transport.wantCalls_, before + 2);
  ASSERT_EQ(n.answers.size(), 2u);
}

// Thousands of jobs from node a, run by b, whose runs are lost at random (a node dying with the
// job, so the cluster hands it out again) or whose outcomes arrive twice: every caller hears
// exactly once, `poison` exactly when the job was handed out more than poison_after times.
TEST(ClusterRunner, EveryCallerHearsOnceUnderThousandsOfSimulatedNodeDeaths) {
  Node a("a");
  Node b("b");
  a.free["p"] = 0;
  a.runner->setDirectory(directoryFrom({announcement("b", "p", 1000)}, "a"));
  std::mt19937 random(7);
  constexpr int kJobs = 3000;
  std::map<core::JobId, std::uint64_t> runsSeen;
  for (core::JobId id = 1; id <= kJobs; ++id) ASSERT_FALSE(a.submit(id, "p"));
  ASSERT_EQ(a.transport.enqueued_.size(), static_cast<std::size_t>(kJobs));
  int deaths = 0;
  for (const JobEntry& entry : a.transport.enqueued_) {
    for (std::uint64_t runs = 1;; ++runs) {
      b.handlers.job(Delivery{"s", std::to_string(entry.originId), runs, entry, false});
      if (!b.transport.finished_.empty()) break;  // ended without running: poison
      const core::JobId localId = b.local.running_.begin()->first;
      if (random() % 3 == 0) {  // the node died with it: the cluster hands it out again
        b.local.running_.erase(localId);
        ++deaths;
        continue;
      }
      b.local.end(localId, random() % 2 ? core::Outcome::kOk : core::Outcome::kCrashed);
      break;
    }
    for (auto& [delivery, outcome] : b.transport.finished_) {
      runsSeen[outcome.originId] = outcome.runs;
      a.handlers.outcome(outcome);
      if (random() % 4 == 0) a.handlers.outcome(outcome);  // a duplicate outcome
    }
    b.transport.finished_.clear();
  }
  ASSERT_GT(deaths, kJobs / 4);
  ASSERT_EQ(a.answers.size(), static_cast<std::size_t>(kJobs));
  std::set<core::JobId> answered;
  for (const core::JobReport& r : a.answers) {
    EXPECT_TRUE(answered.insert(r.jobId).second) << "job " << r.jobId << " answered twice";
    EXPECT_EQ(r.runs, runsSeen.at(r.jobId));
    EXPECT_EQ(r.outcome == core::Outcome::kPoison, r.runs > 2) << "job " << r.jobId;
    EXPECT_EQ(r.node, "b");
  }
  EXPECT_EQ(a.runner->sentWaiting(), 0u);
  EXPECT_TRUE(b.local.running_.empty());
}

}  // namespace
}  // namespace bulkhead::cluster
