#pragma once
// The harness of tests/sim/pool_sim_test.cc: a core::Pool driven on simulated time by an agenda
// of events, against simulated workers that crash, hang, ignore SIGTERM, send bad frames, fail
// to start, or answer late, and read jobs sent ahead (prefetch) in order. It checks the pool's
// invariants after every event and the outcomes at the end. Owns: the simulation. The tests and
// their thresholds live in pool_sim_test.cc.

#include <gtest/gtest.h>

#include <cstdio>
#include <deque>
#include <map>
#include <queue>
#include <random>
#include <set>
#include <sstream>

#include "core/pool.h"
#include "testlib/actions.h"

namespace bulkhead::core::sim {

using namespace std::chrono_literals;

enum class Fate { kOk, kError, kCrash, kHang, kGarbage, kSlowOk };

struct SimWorker {
  bool alive = true;
  bool ignoresTerm = false;
  std::optional<JobId> job;
  // Prefetch: jobs in the worker's socket, read in order once `job` is answered. Two only for a
  // moment: the answer's event delivered the next job before this worker read the one ahead.
  std::deque<JobId> inbox;
  std::uint64_t rssBytes = 0;  // grows with each job in the heartbeats-and-recycling mode
};

// kHeartbeatsAndRecycling adds hang detection (heartbeats from long jobs) and RSS samples against a
// bound; kStandby the faults with standby workers, which must take every dead worker's place and
// never be sent a job while they stand by.
enum class Mode { kFaults, kHeartbeatsAndRecycling, kStandby, kPrefetch };

constexpr std::uint64_t kMiB = 1 << 20;

struct Scheduled {
  Time at;
  std::uint64_t seq;
  std::function<void()> run;
  bool operator>(const Scheduled& o) const { return std::tie(at, seq) > std::tie(o.at, o.seq); }
};

class Simulation {
 public:
  Simulation(unsigned seed, int jobs, Mode mode = Mode::kFaults)
      : rng_(seed), jobsToSubmit_(jobs), mode_(mode) {
    policy_.name = "sim";
    policy_.workers = 1 + static_cast<int>(rng_() % 4);
    policy_.queueLimit = 50;
    policy_.jobTimeout = 2s;
    policy_.startupTimeout = 3s;
    policy_.retries = static_cast<int>(rng_() % 3);
    policy_.maxJobs = rng_() % 2 ? 0 : 1 + rng_() % 20;
    policy_.killGrace = 500ms;
    policy_.stackSettle = 100ms;
    policy_.killWait = 2s;
    policy_.stopGrace = 1s;
    policy_.shutdownTimeout = 20s;
    if (mode_ == Mode::kHeartbeatsAndRecycling) {
      policy_.hangAfter = 800ms;
      policy_.bounds.maxRssBytes = 100 * kMiB;
      policy_.poisonAfter = 0;  // every job has the same payload: keep them all running
    }
    if (mode_ == Mode::kStandby) policy_.standby = 1 + static_cast<int>(seed % 2);
    if (mode_ == Mode::kPrefetch) {
      policy_.prefetchBelow = 50ms;  // the usual 1-40 ms jobs
      policy_.poisonAfter = 0;       // every job has the same payload: keep them all running
    }
    pool_ = std::make_unique<Pool>(policy_, now_);
  }

  void run() {
    apply(pool_->handle(TimePassed{}, now_));
    Time at = now_;
    for (int i = 0; i < jobsToSubmit_; ++i) {
      const std::uint64_t gapUs =
          mode_ == Mode::kPrefetch ? 250000 : 1600000;  // prefetch: a backlog
      at += std::chrono::microseconds(rng_() % gapUs) / policy_.workers;
      schedule(at, [this] { submitOne(); });
      if (mode_ == Mode::kPrefetch && rng_() % 20 == 0) {
        // This job or one just before it: queued, delivered or running by then.
        const JobId victim = std::max<JobId>(1, static_cast<JobId>(i + 1) - rng_() % 4);
        schedule(at + std::chrono::milliseconds(rng_() % 60), [this, victim] {
          if (submitted_.count(victim)) feed(JobCancelled{victim});
        });
      }
    }
    // Shut down after all jobs were submitted and had time to run.
    schedule(at + 60s, [this] { feed(ShutdownRequested{}); });
    if (mode_ == Mode::kHeartbeatsAndRecycling) {
      // The shell's periodic sampling: idle workers over the bound are recycled between jobs.
      for (Time t = now_ + 1s; t < at + 60s; t += 1s) schedule(t, [this] { sampleAll(); });
    }
    std::uint64_t steps = 0;
    while (!pool_->stopped()) {
      ASSERT_LT(++steps, 5'000'000u) << "simulation does not converge";
      auto deadline = pool_->nextDeadline();
      Time next = Time::max();
      if (!agenda_.empty()) next = agenda_.top().at;
      if (deadline && *deadline < next) next = *deadline;
      ASSERT_NE(next, Time::max()) << "pool stuck: nothing scheduled, no deadline" << trace();
      ASSERT_GE(next + 1ns, now_);
      now_ = std::max(now_, next);
      if (!agenda_.empty() && agenda_.top().at <= now_) {
        auto item = agenda_.top();
        agenda_.pop();
        item.run();
      } else {
        feed(TimePassed{});
      }
      if (::testing::Test::HasFatalFailure()) return;
    }
  }

  void checkInvariants() {
    EXPECT_EQ(submitted_.size(), static_cast<std::size_t>(jobsToSubmit_));
    for (JobId id : submitted_) {
      EXPECT_EQ(outcomes_.count(id), 1u) << "job " << id << " got no outcome" << trace();
    }
    for (const auto& [id, report] : reports_) {
      EXPECT_LE(report.attempts.size(), static_cast<std::size_t>(policy_.retries + 1));
      // An attempt is a run: a job delivered to a worker that died first never counts one. (A
      // poison refusal carries the attempts that condemned its payload, from other jobs.)
      if (report.outcome != Outcome::kPoison) {
        EXPECT_LE(report.attempts.size(), starts_[id]) << "job " << id << trace();
      }
      std::set<std::string> workersTried;
      for (const auto& a : report.attempts) workersTried.insert(a.worker);
      EXPECT_EQ(workersTried.size(), report.attempts.size()) << "each retry runs on a fresh worker";
      if (report.outcome == Outcome::kOk) {
        EXPECT_EQ(report.attempts.back().outcome, Outcome::kOk);
      }
      if (report.outcome == Outcome::kHandlerError) {
        EXPECT_EQ(report.attempts.size(), 1u + retriedFailures(report))
            << "handler errors never retry";
      }
    }
    EXPECT_EQ(alive(), 0u) << "every worker process is gone after shutdown";
    EXPECT_GT(peakReady_, 0u);
  }

  void checkCapacityRestored() {
    // Before shutdown, after the last job, the pool was back to its full size of ready workers.
    EXPECT_EQ(readyAtQuiet_, static_cast<std::size_t>(policy_.workers)) << trace();
    EXPECT_EQ(standbyAtQuiet_, static_cast<std::size_t>(policy_.standby)) << trace();
  }

  std::uint64_t promotions() const { return pool_->counters().standbyPromotions; }

  std::uint64_t recycles() const { return pool_->counters().recycles; }

  std::uint64_t prefetched() const { return prefetched_; }

  std::map<Outcome, int> tally() const {
    std::map<Outcome, int> t;
    for (const auto& [id, o] : outcomes_) t[o]++;
    return t;
  }

 private:
  // Attempts that failed the infrastructure's way (crashed, hung...): the ones retried.
  std::size_t retriedFailures(const JobReport& r) const {
    std::size_t n = 0;
    for (const auto& a : r.attempts) n += isInfrastructureFailure(a.outcome);
    return n;
  }

  std::size_t alive() const {
    std::size_t n = 0;
    for (const auto& [id, w] : workers_) n += w.alive;
    return n;
  }

  void schedule(Time at, std::function<void()> fn) { agenda_.push({at, seq_++, std::move(fn)}); }

  void submitOne() {
    JobId id = nextJob_++;
    submitted_.insert(id);
    std::optional<Duration> timeout;
    if (rng_() % 10 == 0) timeout = std::chrono::milliseconds(100 + rng_() % 3000);
    feed(JobSubmitted{id, testlib::payload("p"), timeout});
    if (submitted_.size() == static_cast<std::size_t>(jobsToSubmit_)) {
      // Once the last job is in and everything settled, count ready workers.
      schedule(now_ + 50s, [this] {
        readyAtQuiet_ = 0;
        standbyAtQuiet_ = 0;
        for (const auto& v : pool_->workers()) {
          const bool idle = v.state == WorkerState::kIdle && !v.retiring;
          readyAtQuiet_ += idle && !v.standby;
          standbyAtQuiet_ += idle && v.standby;
        }
      });
    }
  }

  void feed(Event e) {
    std::ostringstream line;
    line << std::chrono::duration_cast<std::chrono::milliseconds>(now_.time_since_epoch()).count()
         << "ms event#" << e.index();
    log(line.str());
    apply(pool_->handle(e, now_));
    // After every event, faults included: the worker indexes equal a full scan of the workers.
    ASSERT_EQ(pool_->indexProblems(), "") << trace();
    std::size_t ready = 0;
    for (const auto& v : pool_->workers())
      ready += v.state == WorkerState::kIdle || v.state == WorkerState::kBusy;
    peakReady_ = std::max(peakReady_, ready);
  }

  void apply(const std::vector<Action>& actions) {
    for (const auto& action : actions) {
      std::visit([&](const auto& a) { act(a); }, action);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }

  void act(const SpawnWorker& a) {
    log("spawn " + std::to_string(a.worker));
    int r = static_cast<int>(rng_() % 100);
    if (r < 2) {
      schedule(now_, [this, id = a.worker] { feed(WorkerSpawnFailed{id, "fork: EAGAIN"}); });
      return;
    }
    workers_[a.worker] = SimWorker{};
    workers_[a.worker].ignoresTerm = rng_() % 5 == 0;
    if (mode_ == Mode::kHeartbeatsAndRecycling)
      workers_[a.worker].rssBytes = (40 + rng_() % 20) * kMiB;
    schedule(now_, [this, id = a.worker] { feed(WorkerSpawned{id, static_cast<int>(id) + 100}); });
    Duration startup = std::chrono::milliseconds(50 + rng_() % 1500);
    if (r < 5) {
      schedule(now_ + startup, [this, id = a.worker] {
        if (!workers_[id].alive) return;
        feed(WorkerStartFailed{id, {"ImportError", "no", "tb"}});
        die(id, std::nullopt, 3);
      });
    } else if (r < 7) {
      // hangs in preload: only the startup timeout finds it
    } else {
      schedule(now_ + startup, [this, id = a.worker] {
        if (workers_[id].alive) feed(WorkerReady{id});
      });
    }
  }

  void act(const SendJob& a) {
    auto& w = workers_.at(a.worker);
    ASSERT_TRUE(w.alive) << "job sent to a dead worker" << trace();
    for (const auto& v : pool_->workers()) {
      ASSERT_FALSE(v.id == a.worker && v.standby) << "job sent to a standby" << trace();
    }
    if (w.job || !w.inbox.empty()) {
      ASSERT_EQ(mode_, Mode::kPrefetch) << "two jobs in flight on one worker" << trace();
      ASSERT_LT(w.inbox.size() + (w.job ? 1 : 0), 2u) << "a third job sent to a worker" << trace();
      w.inbox.push_back(a.job);
      prefetched_++;
      return;
    }
    begin(a.worker, a.job);
  }

  // The worker answered: it reads its next job, if one was sent, and starts it.
  void answered(WorkerId id) {
    auto& w = workers_[id];
    if (!w.alive || w.inbox.empty()) return;
    const JobId next = w.inbox.front();
    w.inbox.pop_front();
    begin(id, next);
  }

  void begin(WorkerId workerId, JobId jobId) {
    auto& w = workers_.at(workerId);
    w.job = jobId;
    starts_[jobId]++;
    int r = static_cast<int>(rng_() % 100);
    Fate fate = r < 75   ? Fate::kOk
                : r < 82 ? Fate::kError
                : r < 90 ? Fate::kCrash
                : r < 95 ? Fate::kHang
                : r < 97 ? Fate::kGarbage
                         : Fate::kSlowOk;
    Duration run = std::chrono::milliseconds(1 + rng_() % 40);
    if (fate == Fate::kSlowOk) run = std::chrono::milliseconds(1500 + rng_() % 1500);
    WorkerId id = workerId;
    JobId job = jobId;
    if (mode_ == Mode::kHeartbeatsAndRecycling && fate != Fate::kHang) {
      // A live job beats every 300 ms with new progress: slow jobs outlive hang_after by it.
      std::uint64_t progress = 0;
      for (Duration t = 300ms; t < run; t += 300ms) {
        schedule(now_ + t, [this, id, job, p = ++progress] {
          if (workers_[id].alive && workers_[id].job == job)
            feed(WorkerHeartbeat{id, job, p, 0.0, ""});
        });
      }
    }
    switch (fate) {
      case Fate::kOk:
      case Fate::kSlowOk:
        schedule(now_ + run, [this, id, job] {
          if (!workers_[id].alive || workers_[id].job != job) return;
          workers_[id].job.reset();
          sampleAfterJob(id);
          feed(JobResultReceived{id, job, ResultKind::kBytes, testlib::payload("r")});
          answered(id);
        });
        break;
      case Fate::kError:
        schedule(now_ + run, [this, id, job] {
          if (!workers_[id].alive || workers_[id].job != job) return;
          workers_[id].job.reset();
          sampleAfterJob(id);
          feed(JobErrorReceived{id, job, {"ValueError", "m", "tb"}});
          answered(id);
        });
        break;
      case Fate::kCrash:
        schedule(now_ + run, [this, id] { die(id, rng_() % 2 ? 6 : 11, std::nullopt); });
        break;
      case Fate::kHang:
        break;
      case Fate::kGarbage:
        schedule(now_ + run, [this, id] {
          if (workers_[id].alive) feed(WorkerMisbehaved{id, "bad magic"});
        });
        break;
    }
  }

  void act(const SendShutdown& a) {
    auto& w = workers_.at(a.worker);
    if (!w.alive) return;
    schedule(now_ + std::chrono::milliseconds(rng_() % 1500),
             [this, id = a.worker] { die(id, std::nullopt, 0); });
  }

  void act(const DumpStacks&) {}

  void act(const SignalWorkerGroup& a) {
    auto& w = workers_.at(a.worker);
    if (!w.alive) return;
    if (a.signal == GroupSignal::kTerminate && w.ignoresTerm) return;
    schedule(now_ + 1ms, [this, id = a.worker, sig = a.signal] {
      die(id, sig == GroupSignal::kKill ? 9 : 15, std::nullopt);
    });
  }

  void act(const ReleaseWorker& a) {
    released_.insert(a.worker);
    auto it = workers_.find(a.worker);
    if (it != workers_.end() && it->second.alive) {
      it->second.alive = false;  // the shell SIGKILLs what it releases alive
    }
  }

  void act(const Resubmit& a) {
    ADD_FAILURE() << "resubmit of job " << a.job << " with no fallback configured" << trace();
  }

  void act(const FinishJob& a) {
    const JobReport& r = a.report;
    ASSERT_TRUE(submitted_.count(r.jobId)) << "outcome for an unknown job" << trace();
    ASSERT_EQ(outcomes_.count(r.jobId), 0u) << "second outcome for job " << r.jobId << trace();
    outcomes_[r.jobId] = r.outcome;
    reports_[r.jobId] = r;
  }

  // As the shell does right after a job ends, before its result: the worker grew a little.
  void sampleAfterJob(WorkerId id) {
    if (mode_ != Mode::kHeartbeatsAndRecycling) return;
    workers_[id].rssBytes += (rng_() % 6) * kMiB;
    feed(WorkerSampled{id, sampleOf(id), true});
  }

  void sampleAll() {
    std::vector<WorkerId> alive;
    for (const auto& [id, w] : workers_) {
      if (w.alive) alive.push_back(id);
    }
    for (WorkerId id : alive) {
      feed(WorkerSampled{id, sampleOf(id), false});
      if (::testing::Test::HasFatalFailure()) return;
    }
  }

  ResourceSample sampleOf(WorkerId id) {
    ResourceSample s;
    s.rssBytes = workers_[id].rssBytes;
    s.threads = 2;
    s.fds = 8;
    return s;
  }

  void die(WorkerId id, std::optional<int> signal, std::optional<int> code) {
    auto& w = workers_[id];
    if (!w.alive) return;
    w.alive = false;
    w.job.reset();
    w.inbox.clear();
    if (released_.count(id)) return;
    ExitEvidence e;
    e.signal = signal;
    e.exitCode = code;
    feed(WorkerExited{id, e});
  }

  void log(std::string line) {
    trace_.push_back(std::move(line));
    if (trace_.size() > 40) trace_.pop_front();
  }

  std::string trace() const {
    std::string out = "\nlast events:\n";
    for (const auto& l : trace_) out += "  " + l + "\n";
    return out;
  }

  std::mt19937_64 rng_;
  int jobsToSubmit_;
  Mode mode_;
  PoolPolicy policy_;
  std::unique_ptr<Pool> pool_;
  Time now_{std::chrono::seconds(1)};
  std::priority_queue<Scheduled, std::vector<Scheduled>, std::greater<>> agenda_;
  std::uint64_t seq_ = 0;
  std::map<WorkerId, SimWorker> workers_;
  std::set<WorkerId> released_;
  std::set<JobId> submitted_;
  std::map<JobId, Outcome> outcomes_;
  std::map<JobId, JobReport> reports_;
  JobId nextJob_ = 1;
  std::map<JobId, std::size_t> starts_;  // times a worker began the job
  std::uint64_t prefetched_ = 0;         // jobs sent to a busy worker
  std::size_t peakReady_ = 0;
  std::size_t readyAtQuiet_ = 0;
  std::size_t standbyAtQuiet_ = 0;
  std::deque<std::string> trace_;
};

}  // namespace bulkhead::core::sim
