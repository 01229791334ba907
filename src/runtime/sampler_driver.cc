// The sampler driver: reads /proc (and cgroup counters, and for pools with `gpus` the GPU memory
// of the worker's processes) for each worker on the pool's sample_interval and after jobs, when
// core/sampling_schedule.h says a sample is due (the maps-reading budget included), and posts the
// samples to the core. May not touch: when a sample
// is due or what it means (core/sampling_schedule.h, core/resource_rules.h), or worker I/O.

#include <algorithm>

#include "core/sampling_schedule.h"
#include "runtime/shell_state.h"

namespace bulkhead::runtime {

using nlohmann::json;

void Supervisor::sampleAfterJob(WorkerIo& worker, bool afterAnswer) {
  worker.mapsStale = true;
  const core::ResourceBounds& bounds = worker.pool.pool.policy().bounds;
  if (!bounds.any()) return;
  const core::Time t = now();
  // Whether to sample and count maps is the core's (core/sampling_schedule.h: the maps budget).
  const core::AfterJobSampling plan = core::afterJobSampling(
      bounds, {worker.lastMaps, worker.lastJobEndSampleAt, worker.mapsReadCost}, t);
  if (!plan.sample) return;
  if (plan.withMaps) worker.lastJobEndSampleAt = t;
  // The GPU trend rule needs the GPU figure at each job's end, not the last tick's.
  std::optional<os::GpuReading> gpu;
  if (bounds.maxGpuMemoryBytes && !worker.pool.config.gpus.empty()) gpu = readGpus();
  if (auto sample = takeSample(worker, plan.withMaps, gpu ? &*gpu : nullptr)) {
    post(worker.pool, core::WorkerSampled{worker.id, *sample, !afterAnswer, afterAnswer});
  }
}

void Supervisor::startGpuReadings(const config::Config& config) {
  const bool gpuPools = std::any_of(config.pools.begin(), config.pools.end(),
                                    [](const config::PoolConfig& p) { return !p.gpus.empty(); });
  if (!gpuPools) return;
  std::string whyNot;
  gpu_ = host_->openGpuProbe(config.server.nvmlLibrary, &whyNot);
  if (gpu_) return logAt(LogLevel::kInfo, "GPU memory per worker from " + gpu_->describe());
  const bool gpuRules =
      std::any_of(config.pools.begin(), config.pools.end(),
                  [](const config::PoolConfig& p) { return p.maxGpuMemory || p.gpuMemoryLimit; });
  logLine("GPU readings are off: " + whyNot + " (nvml_library)" +
          (gpuRules ? "; max_gpu_memory and gpu_memory_limit are not enforced" : ""));
}

std::optional<os::GpuReading> Supervisor::readGpus() {
  if (!gpu_) return std::nullopt;
  auto snapshot = gpu_->read();
  if (!snapshot) return std::nullopt;
  return os::resolveGroups(std::move(*snapshot), [this](pid_t pid) -> std::optional<pid_t> {
    auto ids = host_->ids(pid);
    return ids ? std::optional<pid_t>(ids->group) : std::nullopt;
  });
}

std::optional<core::ResourceSample> Supervisor::takeSample(WorkerIo& worker, bool withMaps,
                                                           const os::GpuReading* gpu) {
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
  if (!gpu && !worker.pool.config.gpus.empty() && !worker.samples.empty()) {
    // After a job only /proc is read again: the GPU figure is the tick's, until the next tick.
    r.gpuMemoryBytes = worker.samples.back().sample.gpuMemoryBytes;
  } else if (gpu && !worker.pool.config.gpus.empty()) {
    // Workers lead their process groups: what they started counts with them.
    r.gpuMemoryBytes = static_cast<std::int64_t>(os::gpuMemoryOfGroup(*gpu, worker.pid));
  }
  worker.samples.push_back({now(), r});
  if (worker.samples.size() > kSamplesKept) worker.samples.pop_front();
  return r;
}

void Supervisor::sampleAll() {
  const core::Time t = now();
  // One GPU reading per tick, shared by every GPU pool due (NVML answers for all devices at once).
  std::optional<os::GpuReading> gpu;
  bool gpuRead = false;
  for (auto& pool : pools_) {
    if (!core::poolSampleDue(pool->nextSampleAt, t)) continue;
    if (gpu_ && !gpuRead && !pool->config.gpus.empty()) {
      gpu = readGpus();
      gpuRead = true;
    }
    pool->nextSampleAt = core::nextPoolSample(pool->config.sampleInterval, t);
    for (auto& [id, worker] : pool->workers) {
      if (worker->closed || worker->pid <= 0) continue;
      // /proc/PID/maps costs ~1 us per map (2 ms for a torch worker): read it only when jobs
      // ran since the last read, since an idle worker's maps do not grow.
      if (auto sample = takeSample(*worker, worker->mapsStale, gpu ? &*gpu : nullptr)) {
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
