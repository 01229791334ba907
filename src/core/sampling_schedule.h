#pragma once
// When the shell samples a worker's /proc: the pool's periodic sample and the sample after each
// job, within the maps-reading budget. Pure policy over times and costs the shell measured; the
// shell (src/runtime/sampler_driver.cc) only reads /proc when this says so. Owns: those
// decisions. May not touch: what a sample means (core/resource_rules.h).
//
// Why a budget: counting /proc/PID/maps costs ~1 us per map (2 ms for a torch worker), so after
// a job maps are counted at most every 20 cheapest reads (~5% of the time since the last count),
// or at once when the last count was near the bound. The cheap measures (rss, threads, fds,
// ~26 us) are read after every job when the pool bounds them, so a fast leak is caught at the
// first job past its bound. The trend rule looks as many jobs ahead as the samples skip.

#include <optional>

#include "core/resource_rules.h"
#include "core/time.h"

namespace bulkhead::core {

// How many cheapest maps reads must fit between two after-job counts.
constexpr int kMapsBudgetFactor = 20;

// What the shell knows about one worker's maps reads.
struct MapsReads {
  int lastCount = 0;                   // maps at the last count
  std::optional<Time> lastAfterJobAt;  // when an after-job sample last counted them; none: never
  Duration cheapestRead{};             // the cheapest maps read seen (slower ones were preempted)
};

struct AfterJobSampling {
  bool sample = false;    // read /proc now
  bool withMaps = false;  // and count the maps
};

// After a job: whether to sample at all (only when the pool bounds something), and whether the
// maps count is due (near the bound, never counted, or the budget allows it).
inline AfterJobSampling afterJobSampling(const ResourceBounds& bounds, const MapsReads& maps,
                                         Time now) {
  if (!bounds.any()) return {};
  const bool nearBound = bounds.maxMaps > 0 && maps.lastCount >= bounds.maxMaps * 3 / 4;
  const bool mapsDue = nearBound || !maps.lastAfterJobAt ||
                       now - *maps.lastAfterJobAt >= kMapsBudgetFactor * maps.cheapestRead;
  const bool cheapBounded = bounds.maxRssBytes || bounds.maxThreads || bounds.maxFds;
  if (!mapsDue && !cheapBounded) return {};
  return {true, mapsDue};
}

// The pool's periodic sample (sample_interval): due once its time has come; the next one is an
// interval after the sample taken now.
inline bool poolSampleDue(Time nextAt, Time now) { return now >= nextAt; }
inline Time nextPoolSample(Duration interval, Time now) { return now + interval; }

}  // namespace bulkhead::core
