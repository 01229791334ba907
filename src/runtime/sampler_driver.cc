// The sampler driver: reads /proc (and cgroup counters) for each worker on the pool's
// sample_interval and after jobs, when core/sampling_schedule.h says a sample is due (the
// maps-reading budget included), and posts the samples to the core. May not touch: when a sample
// is due or what it means (core/sampling_schedule.h, core/resource_rules.h), or worker I/O.

#include "core/sampling_schedule.h"
#include "runtime/shell_state.h"

namespace bulkhead::runtime {

using nlohmann::json;

void Supervisor::sampleAfterJob(WorkerIo& worker) {
  worker.mapsStale = true;
  const core::ResourceBounds& bounds = worker.pool.pool.policy().bounds;
  if (!bounds.any()) return;
  const core::Time t = now();
  // Whether to sample and count maps is the core's (core/sampling_schedule.h: the maps budget).
  const core::AfterJobSampling plan = core::afterJobSampling(
      bounds, {worker.lastMaps, worker.lastJobEndSampleAt, worker.mapsReadCost}, t);
  if (!plan.sample) return;
  if (plan.withMaps) worker.lastJobEndSampleAt = t;
  if (auto sample = takeSample(worker, plan.withMaps)) {
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
    if (!core::poolSampleDue(pool->nextSampleAt, t)) continue;
    pool->nextSampleAt = core::nextPoolSample(pool->config.sampleInterval, t);
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
