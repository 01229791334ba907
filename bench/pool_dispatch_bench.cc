// Microbenchmark of core::Pool's per-job cost as the pool grows ("O(1) dispatch").
//
// Drives one Pool of N workers (N = 2, 16, 64, 256) on a simulated clock: every worker is spawned
// and made ready, then M jobs go submit -> dispatch -> result, with about half the workers busy
// at any time (the oldest job in flight answers first). After every event the bench asks for
// nextDeadline(), as the shell does when it re-arms its timer. It prints ns per job for each N and
// the growth 256/2: work per job should not depend on how many workers sit idle.
//
// Deterministic: no randomness, the clock is a counter. Usage:
//   pool_dispatch_bench [--jobs M] [--repeats R] [--inflight K] [--workers N]
// --inflight fixes the number of jobs in flight for every N (default: N/2, at least 1). The best
// of R repeats is reported, which filters out the noise of a shared machine. --workers runs one
// size only (to profile it, or to count instructions under valgrind --tool=callgrind).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "core/pool.h"

namespace {

using bulkhead::core::Action;
using bulkhead::core::Event;
using bulkhead::core::FinishJob;
using bulkhead::core::JobId;
using bulkhead::core::JobResultReceived;
using bulkhead::core::JobSubmitted;
using bulkhead::core::Outcome;
using bulkhead::core::Payload;
using bulkhead::core::Pool;
using bulkhead::core::PoolPolicy;
using bulkhead::core::ResultKind;
using bulkhead::core::SendJob;
using bulkhead::core::SpawnWorker;
using bulkhead::core::Time;
using bulkhead::core::WorkerId;
using bulkhead::core::WorkerReady;
using bulkhead::core::WorkerSpawned;

struct Options {
  long jobs = 200000;
  int repeats = 5;
  int inflight = 0;  // 0: N/2
  int workers = 0;   // 0: every size
};

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "pool_dispatch_bench: %s\n", what);
  std::exit(1);
}

// One pool, its simulated clock, and the jobs it has sent to workers but not yet answered.
class Driver {
 public:
  explicit Driver(int workers) : pool_(policyFor(workers), now_) {
    std::vector<WorkerId> spawned;
    for (const Action& a : step(bulkhead::core::TimePassed{})) {
      if (const auto* s = std::get_if<SpawnWorker>(&a)) spawned.push_back(s->worker);
    }
    if (static_cast<int>(spawned.size()) != workers) fail("the pool did not spawn every worker");
    for (WorkerId id : spawned) step(WorkerSpawned{id, static_cast<int>(id) + 1000});
    for (WorkerId id : spawned) step(WorkerReady{id});
    if (pool_.readyWorkers() != static_cast<std::size_t>(workers)) fail("workers not ready");
  }

  // Submits one job; the pool must send it to a worker at once (one is idle).
  void submit() {
    const JobId id = nextJob_++;
    bool sent = false;
    for (const Action& a : step(JobSubmitted{id, payload_, std::nullopt})) {
      if (const auto* s = std::get_if<SendJob>(&a)) {
        inFlight_.push_back({s->worker, s->job});
        sent = true;
      }
    }
    if (!sent) fail("a submitted job was not dispatched");
  }

  // The oldest job in flight answers.
  void answerOldest() {
    const auto [worker, job] = inFlight_.front();
    inFlight_.pop_front();
    bool finished = false;
    for (const Action& a : step(JobResultReceived{worker, job, ResultKind::kJson, payload_})) {
      if (const auto* f = std::get_if<FinishJob>(&a)) {
        finished = f->report.outcome == Outcome::kOk;
      }
    }
    if (!finished) fail("a job did not finish ok");
  }

  std::size_t inFlight() const { return inFlight_.size(); }

 private:
  struct Sent {
    WorkerId worker;
    JobId job;
  };

  static PoolPolicy policyFor(int workers) {
    PoolPolicy p;
    p.name = "bench";
    p.workers = workers;
    p.queueLimit = 100000;
    return p;
  }

  // One event in, as the shell does it: handle, then ask when to wake up next.
  std::vector<Action> step(Event e) {
    now_ += std::chrono::microseconds(50);
    std::vector<Action> actions = pool_.handle(e, now_);
    deadlineSink_ ^= pool_.nextDeadline().has_value();
    return actions;
  }

  Time now_{};
  Pool pool_;
  Payload payload_ = bulkhead::core::makePayload("{}");
  JobId nextJob_ = 1;
  std::deque<Sent> inFlight_;
  bool deadlineSink_ = false;
};

double nsPerJob(int workers, const Options& o) {
  const std::size_t keep =
      static_cast<std::size_t>(o.inflight > 0 ? o.inflight : std::max(1, workers / 2));
  if (keep > static_cast<std::size_t>(workers)) fail("--inflight exceeds the pool's workers");
  double best = 0;
  for (int r = 0; r < o.repeats; ++r) {
    Driver d(workers);
    while (d.inFlight() < keep) d.submit();
    const auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < o.jobs; ++i) {
      d.answerOldest();
      d.submit();
    }
    const auto took = std::chrono::steady_clock::now() - start;
    const double ns = std::chrono::duration<double, std::nano>(took).count() / o.jobs;
    if (r == 0 || ns < best) best = ns;
  }
  return best;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    auto value = [&]() -> long {
      if (i + 1 >= argc) fail("missing value");
      return std::atol(argv[++i]);
    };
    if (!std::strcmp(argv[i], "--jobs")) {
      o.jobs = value();
    } else if (!std::strcmp(argv[i], "--repeats")) {
      o.repeats = static_cast<int>(value());
    } else if (!std::strcmp(argv[i], "--inflight")) {
      o.inflight = static_cast<int>(value());
    } else if (!std::strcmp(argv[i], "--workers")) {
      o.workers = static_cast<int>(value());
    } else {
      fail("usage: pool_dispatch_bench [--jobs M] [--repeats R] [--inflight K] [--workers N]");
    }
  }
  if (o.jobs <= 0 || o.repeats <= 0 || o.workers < 0) fail("--jobs and --repeats must be positive");
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const int sizes[] = {2, 16, 64, 256};
  std::printf("core::Pool submit -> dispatch -> result, %ld jobs, best of %d, in flight %s\n",
              o.jobs, o.repeats, o.inflight > 0 ? std::to_string(o.inflight).c_str() : "N/2");
  std::printf("%8s %12s\n", "workers", "ns/job");
  if (o.workers > 0) {
    std::printf("%8d %12.0f\n", o.workers, nsPerJob(o.workers, o));
    return 0;
  }
  double first = 0;
  double last = 0;
  for (int n : sizes) {
    const double ns = nsPerJob(n, o);
    std::printf("%8d %12.0f\n", n, ns);
    if (n == sizes[0]) first = ns;
    last = ns;
  }
  std::printf("growth 256/2: %.2fx\n", last / first);
  return 0;
}
