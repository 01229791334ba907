#pragma once
// A core::Pool on simulated time with the helpers most pool tests share: feed events, advance the
// clock, bring workers to ready, submit jobs, make exit evidence.

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <vector>

#include "core/pool.h"
#include "testlib/actions.h"

namespace bulkhead::testlib {

using namespace std::chrono_literals;
using core::Action;
using core::Duration;
using core::Event;
using core::ExitEvidence;
using core::FinishJob;
using core::JobId;
using core::JobReport;
using core::JobSubmitted;
using core::Pool;
using core::PoolPolicy;
using core::SendJob;
using core::SpawnWorker;
using core::Time;
using core::TimePassed;
using core::WorkerId;
using core::WorkerReady;
using core::WorkerSpawned;

class PoolFixture : public ::testing::Test {
 protected:
  PoolPolicy policy(int workers = 2) {
    PoolPolicy p;
    p.name = "p";
    p.workers = workers;
    p.queueLimit = 3;
    p.jobTimeout = 10s;
    p.startupTimeout = 5s;
    p.retries = 2;
    p.killGrace = 1s;
    p.stackSettle = 200ms;
    p.killWait = 5s;
    p.stopGrace = 2s;
    p.shutdownTimeout = 30s;
    return p;
  }

  void make(PoolPolicy p) { pool_ = std::make_unique<Pool>(std::move(p), now_); }

  std::vector<Action> feed(Event e) {
    last_ = pool_->handle(e, now_);
    // The worker indexes (idle lists, deadlines, counts) must equal a full scan after any event.
    EXPECT_EQ(pool_->indexProblems(), "") << "after event #" << e.index();
    for (const auto& f : only<FinishJob>(last_)) finished_.push_back(f.report);
    return last_;
  }

  void advance(Duration d) {
    now_ += d;
    feed(TimePassed{});
  }

  // Starts the pool and brings every spawned worker to ready; returns their ids.
  std::vector<WorkerId> startReady() {
    auto spawns = only<SpawnWorker>(feed(TimePassed{}));
    std::vector<WorkerId> ids;
    for (const auto& s : spawns) {
      feed(WorkerSpawned{s.worker, 1000 + static_cast<int>(s.worker)});
      feed(WorkerReady{s.worker});
      ids.push_back(s.worker);
    }
    return ids;
  }

  std::optional<SendJob> submit(JobId id, std::optional<Duration> timeout = std::nullopt) {
    auto sends = only<SendJob>(feed(JobSubmitted{id, payload("x"), timeout}));
    if (sends.empty()) return std::nullopt;
    return sends.front();
  }

  ExitEvidence exitedWith(int code) {
    ExitEvidence e;
    e.exitCode = code;
    return e;
  }

  ExitEvidence killedBy(int sig) {
    ExitEvidence e;
    e.signal = sig;
    e.stderrTail = "free(): double free detected in tcache 2\n";
    return e;
  }

  Time now_{std::chrono::seconds(1000)};
  std::unique_ptr<Pool> pool_;
  std::vector<Action> last_;
  std::vector<JobReport> finished_;
};

}  // namespace bulkhead::testlib
