#pragma once
// Fakes of the jobs service's seams (jobs/pool_runner.h): pools that end jobs when a test says so,
// and timers that fire when a test advances simulated time.

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "jobs/pool_runner.h"

namespace bulkhead::testlib {

using jobs::PoolRunner;
using jobs::RunnerRefusal;
using jobs::RunOptions;
using jobs::Timers;

// Pools as the service sees them: it records what it was asked and ends jobs when told to.
class FakeRunner : public PoolRunner {
 public:
  bool shuttingDown() const override { return shuttingDown_; }
  bool hasPool(std::string_view pool) const override { return pools_.count(std::string(pool)); }
  std::uint64_t maxPayload(std::string_view pool) const override {
    return pools_.at(std::string(pool));
  }
  core::JobId reserveJobId() override { return nextId_++; }
  void startJobIdsAfter(core::JobId last) override { nextId_ = std::max(nextId_, last + 1); }
  std::optional<RunnerRefusal> submitWithId(core::JobId id, std::string_view pool,
                                            core::Payload payload, const RunOptions& options,
                                            Reply reply) override {
    if (!hasPool(pool)) return RunnerRefusal::kUnknownPool;
    if (refuseNext_) return std::exchange(refuseNext_, std::nullopt);
    if (running_.count(id)) return RunnerRefusal::kDuplicateId;
    startJobIdsAfter(id);
    running_[id] = {std::string(pool), std::move(payload), options, std::move(reply)};
    return std::nullopt;
  }
  void cancel(core::JobId id) override { cancelled_.push_back(id); }
  std::optional<std::string> jobState(core::JobId id) const override {
    if (!running_.count(id)) return std::nullopt;
    return "running";
  }

  // Ends a running job with this outcome (ok: the payload echoed).
  void end(core::JobId id, core::Outcome outcome = core::Outcome::kOk) {
    auto job = std::move(running_.at(id));
    running_.erase(id);
    core::JobReport report;
    report.jobId = id;
    report.pool = job.pool;
    report.outcome = outcome;
    report.attempts.resize(1);
    if (outcome == core::Outcome::kOk)
      report.result = job.payload;
    else
      report.detail = "it went wrong";
    job.reply(report);
  }

  struct Job {
    std::string pool;
    core::Payload payload;
    RunOptions options;
    Reply reply;
  };
  std::map<std::string, std::uint64_t> pools_{{"p", 100}};
  bool shuttingDown_ = false;
  std::optional<RunnerRefusal> refuseNext_;
  core::JobId nextId_ = 1;
  std::map<core::JobId, Job> running_;
  std::vector<core::JobId> cancelled_;
};

class FakeTimers : public Timers {
 public:
  core::Time now() const override { return now_; }
  TimerId startTimer(core::Duration after, std::function<void()> fire) override {
    timers_[nextId_] = {now_ + after, std::move(fire)};
    return nextId_++;
  }
  void cancelTimer(TimerId id) override { timers_.erase(id); }
  void advance(core::Duration by) {
    now_ += by;
    for (auto it = timers_.begin(); it != timers_.end();) {
      if (it->second.first > now_) {
        ++it;
        continue;
      }
      auto fire = std::move(it->second.second);
      it = timers_.erase(it);
      fire();
    }
  }

  core::Time now_{};
  TimerId nextId_ = 1;
  std::map<TimerId, std::pair<core::Time, std::function<void()>>> timers_;
};

}  // namespace bulkhead::testlib
