#pragma once
// Soft recycle rules over per-worker resource samples, and the classification of failures caused
// by a hard limit. Pure functions over bounded history: each is tested alone.
//
// A rule fires on the latest sample (rss, threads, maps, fds, GPU memory over their bound) or on
// the trend:
// from the growth per job over the last few job ends, recycle when the next job would cross the
// bound (a training loop that adds ~730 maps per fold must be recycled before the limit).

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <utility>

#include "core/outcome.h"
#include "core/recycle_cause.h"

namespace bulkhead::core {

struct ResourceBounds {  // 0: no bound
  std::uint64_t maxRssBytes = 0;
  int maxThreads = 0;
  int maxMaps = 0;
  int maxFds = 0;
  std::uint64_t maxGpuMemoryBytes = 0;  // judged only on samples with a GPU reading
  bool trend = true;

  bool any() const { return maxRssBytes || maxThreads || maxMaps || maxFds || maxGpuMemoryBytes; }
};

// Samples taken right after jobs ended, with the job count at that moment.
class JobEndHistory {
 public:
  static constexpr std::size_t kDepth = 8;

  void record(std::uint64_t jobsServed, const ResourceSample& sample) {
    points_.push_back({jobsServed, sample});
    if (points_.size() > kDepth) points_.pop_front();
  }
  // Growth per job of one measure over the remembered window; nullopt with fewer than 2 points.
  template <class Measure>
  std::optional<double> growthPerJob(Measure measure) const {
    if (points_.size() < 2) return std::nullopt;
    const auto& first = points_.front();
    const auto& last = points_.back();
    if (last.jobs <= first.jobs) return std::nullopt;
    double a = measure(first.sample), b = measure(last.sample);
    if (a < 0 || b < 0) return std::nullopt;  // a measure not read in that sample
    return (b - a) / static_cast<double>(last.jobs - first.jobs);
  }
  bool empty() const { return points_.empty(); }
  // The last job-end sample and the job count it was taken at.
  std::optional<std::pair<std::uint64_t, ResourceSample>> last() const {
    if (points_.empty()) return std::nullopt;
    return std::make_pair(points_.back().jobs, points_.back().sample);
  }
  // Jobs between the last two samples (at least 1): how far ahead the next check is.
  double jobsPerSample() const {
    if (points_.size() < 2) return 1;
    auto gap = points_.back().jobs - points_[points_.size() - 2].jobs;
    return gap > 1 ? static_cast<double>(gap) : 1.0;
  }

 private:
  struct Point {
    std::uint64_t jobs;
    ResourceSample sample;
  };
  std::deque<Point> points_;
};

// A crossed bound (kRss, kThreads, kMaps, kFds), a predicted one (kTrendRss, ...) or nullopt.
std::optional<RecycleCause> recycleCause(const ResourceSample& latest, const JobEndHistory& history,
                                         const ResourceBounds& bounds);

// True when the worker is over a bound now or, with the trend rule, when its next job would take
// it over one (from the last job-end sample plus the growth per job of every job since): such a
// worker takes no further job, even while its replacement starts, so no bound is ever crossed by
// one more job (30,068 maps with max_maps = 30000 was such a case).
// The same, naming the bound: the crossed one, or the trend cause of the one the next job would
// cross.
std::optional<RecycleCause> nextJobCrossing(const ResourceSample& latest,
                                            const JobEndHistory& history,
                                            const ResourceBounds& bounds, std::uint64_t jobsServed);
bool nextJobWouldCross(const ResourceSample& latest, const JobEndHistory& history,
                       const ResourceBounds& bounds, std::uint64_t jobsServed);

// Hard-limit evidence from the OS layer, cumulative over the worker's life.
struct LimitEvidence {
  bool oomKilled = false;
  std::uint64_t memoryLimitBytes = 0;  // 0: none
  std::uint64_t memoryPeakBytes = 0;
  std::uint64_t pidsLimit = 0;  // 0: none
  std::uint64_t pidsMaxEvents = 0;
  std::optional<ResourceSample> lastSample;
};

// A limited resource that ran out: which one and why it is known.
struct Exhaustion {
  std::string limit;             // "pids", "threads_or_maps" or "gpu_memory": the attempt's `limit`
  std::string cause;             // "pids limit 64 reached (pids.events max 3)", ...
  std::uint64_t limitValue = 0;  // the configured bound (pids_limit), when there is one
};

// Why a failure is the exhaustion of a limited resource rather than the job's bug or a plain
// crash: from the kernel's counters first, then from the messages libraries print when the GPU's
// memory is full or when thread or map creation fails.
std::optional<Exhaustion> exhaustionOf(const LimitEvidence& limits, const std::string& text);

}  // namespace bulkhead::core
