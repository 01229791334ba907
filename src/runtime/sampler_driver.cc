// The sampler driver: reads /proc (and cgroup counters) for each worker on the pool's
// sample_interval and after jobs, within the maps-reading budget, and posts the samples to the
// core. May not touch: what a sample means (core/resource_rules.h) or worker I/O.

#include "runtime/shell_state.h"

namespace bulkhead::runtime {

using nlohmann::json;

void Supervisor::sampleAfterJob(WorkerIo& worker) {
  worker.mapsStale = true;
  const core::Pool& pool = worker.pool.pool;
  if (!pool.wantsSampleAfterJobs()) return;
  const core::Time t = now();
  // Maps cost ~1 us each to count, so counting them may take at most ~5% of the time since the
  // last count (every job for a small worker, every ~40 ms with torch loaded); the trend rule
  // looks as many jobs ahead as the samples skip. The cheap measures are read after every job
  // when the pool bounds them, so a fast leak is caught at the first job past its bound.
  const int maxMaps = pool.policy().bounds.maxMaps;
  const bool nearBound = maxMaps > 0 && worker.lastMaps >= maxMaps * 3 / 4;
  const bool mapsDue = nearBound || !worker.lastJobEndSampleAt ||
                       t - *worker.lastJobEndSampleAt >= 20 * worker.mapsReadCost;
  if (!mapsDue && !pool.wantsSampleAfterEveryJob()) return;
  if (mapsDue) worker.lastJobEndSampleAt = t;
  if (auto sample = takeSample(worker, mapsDue)) {
    post(worker.pool, core::WorkerSampled{worker.id, *sample, true});
  }
}

std::optional<core::ResourceSample> Supervisor::takeSample(WorkerIo& worker, bool withMaps) {
  const core::Time started = now();
  auto s = host_->sample(worker.pid, withMaps);
  if (!s) return std::nullopt;
  if (withMaps) {
    worker.mapsStale = false;
    worker.lastMaps = s->maps;
    // The cheapest read seen is the real cost; slower ones were preempted.
    worker.mapsReadCost = std::min(worker.mapsReadCost, core::Duration(now() - started));
  }
  core::ResourceSample r{s->rssBytes, s->threads, s->maps, s->fds, s->cpuSeconds};
  // With a pids limit, a refusal during a job turns its hang into resource_exhausted: the core
  // compares the counter at dispatch with the one at the worker's death.
  if (worker.cgroup && worker.pool.config.pidsLimit > 0) {
    r.pidsMaxEvents = cgroups_->counters(*worker.cgroup).pidsMaxEvents;
  }
  worker.samples.push_back({now(), r});
  if (worker.samples.size() > kSamplesKept) worker.samples.pop_front();
  return r;
}

void Supervisor::sampleAll() {
  const core::Time t = now();
  for (auto& pool : pools_) {
    if (t < pool->nextSampleAt) continue;
    pool->nextSampleAt = t + pool->config.sampleInterval;
    for (auto& [id, worker] : pool->workers) {
      if (worker->closed || worker->pid <= 0) continue;
      // /proc/PID/maps costs ~1 us per map (2 ms for a torch worker): read it only when jobs
      // ran since the last read, since an idle worker's maps do not grow.
      if (auto sample = takeSample(*worker, worker->mapsStale)) {
        post(*pool, core::WorkerSampled{id, *sample, false});
      }
    }
  }
  drain();
}

void Supervisor::armSampler() {
  core::Duration shortest = std::chrono::hours(1);
  for (const auto& pool : pools_)
    shortest = std::min(shortest, core::Duration(pool->config.sampleInterval));
  sampler_->expiresAt(now() + shortest, [this] {
    sampleAll();
    armSampler();
  });
}

}  // namespace bulkhead::runtime
