// Randomized fault simulation of core::Pool (the harness: tests/sim/pool_simulation.h):
// thousands of jobs against simulated workers that crash, hang, ignore SIGTERM, send bad frames,
// fail to start, or answer late. A failing seed prints its number and the tail of the event
// trace so it can be replayed. The second mode adds hang detection with heartbeats and resource
// samples that recycle growing workers, so the pool's worker indexes (checked after every event)
// see deadlines move and retirements. The prefetch mode sends jobs faster than the workers run
// them, with prefetch on and random cancels: a worker then holds a delivered job behind its
// running one, as a real worker's socket does.

#include <gtest/gtest.h>

#include <cstdio>
#include <map>

#include "sim/pool_simulation.h"

namespace bulkhead::core::sim {
namespace {

TEST(PoolSimulation, EveryJobGetsExactlyOneOutcomeUnderRandomFaults) {
  std::map<Outcome, int> total;
  for (unsigned seed = 1; seed <= 30; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Simulation sim(seed, 500);
    sim.run();
    if (HasFatalFailure()) return;
    sim.checkInvariants();
    sim.checkCapacityRestored();
    for (auto [o, n] : sim.tally()) total[o] += n;
  }
  for (auto [o, n] : total) std::printf("%-20s %d\n", std::string(outcomeName(o)).c_str(), n);
  // The simulation must actually exercise the failure paths it claims to.
  EXPECT_GT(total[Outcome::kOk], 5000);
  EXPECT_GT(total[Outcome::kHandlerError], 100);
  EXPECT_GT(total[Outcome::kCrashed] + total[Outcome::kTimedOut], 100);
  EXPECT_GT(total[Outcome::kTimedOut], 10);
}

TEST(PoolSimulation, IndexesHoldUnderHeartbeatsHangsAndRecycling) {
  std::map<Outcome, int> total;
  std::uint64_t recycles = 0;
  for (unsigned seed = 1; seed <= 30; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Simulation sim(seed, 500, Mode::kHeartbeatsAndRecycling);
    sim.run();
    if (HasFatalFailure()) return;
    sim.checkInvariants();
    sim.checkCapacityRestored();
    for (auto [o, n] : sim.tally()) total[o] += n;
    recycles += sim.recycles();
  }
  // Hang detection and the RSS bound must both have acted, or this mode tests nothing new.
  EXPECT_GT(total[Outcome::kHung], 10);
  EXPECT_GT(recycles, 100u);
  EXPECT_GT(total[Outcome::kOk], 5000);
}

TEST(PoolSimulation, StandbysTakeDeadWorkersPlacesAndNeverRunJobsWhileStandingBy) {
  std::map<Outcome, int> total;
  std::uint64_t promotions = 0;
  for (unsigned seed = 1; seed <= 30; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Simulation sim(seed, 500, Mode::kStandby);
    sim.run();
    if (HasFatalFailure()) return;
    sim.checkInvariants();
    sim.checkCapacityRestored();  // the serving workers and the standbys
    for (auto [o, n] : sim.tally()) total[o] += n;
    promotions += sim.promotions();
  }
  EXPECT_GT(promotions, 500u) << "the crashes must have been covered by standbys";
  EXPECT_GT(total[Outcome::kOk], 5000);
  EXPECT_GT(total[Outcome::kCrashed] + total[Outcome::kTimedOut], 100);
}

TEST(PoolSimulation, PrefetchedJobsGetOneOutcomeAndNoAttemptUnlessTheyRan) {
  std::map<Outcome, int> total;
  std::uint64_t prefetched = 0;
  for (unsigned seed = 1; seed <= 30; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Simulation sim(seed, 500, Mode::kPrefetch);
    sim.run();
    if (HasFatalFailure()) return;
    sim.checkInvariants();  // attempts never outnumber the runs the workers began
    sim.checkCapacityRestored();
    for (auto [o, n] : sim.tally()) total[o] += n;
    prefetched += sim.prefetched();
  }
  for (auto [o, n] : total) std::printf("%-20s %d\n", std::string(outcomeName(o)).c_str(), n);
  EXPECT_GT(prefetched, 2000u) << "the backlog must have made workers take jobs ahead";
  EXPECT_GT(total[Outcome::kOk], 5000);
  EXPECT_GT(total[Outcome::kCancelled], 50);
  EXPECT_GT(total[Outcome::kCrashed] + total[Outcome::kTimedOut], 100);
}

}  // namespace
}  // namespace bulkhead::core::sim
