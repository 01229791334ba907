#include "core/resource_rules.h"

#include <array>
#include <optional>
#include <string_view>

namespace bulkhead::core {

namespace {

// The kernel refuses new maps at vm.max_map_count (65530 by default): everything that needs a
// map then fails with ENOMEM while RAM is free (a memory-map leak).
constexpr int kMapsNearKernelLimit = 65000;

}  // namespace

std::optional<RecycleCause> recycleCause(const ResourceSample& s, const JobEndHistory& history,
                                         const ResourceBounds& b) {
  if (b.maxRssBytes && s.rssBytes > b.maxRssBytes) return RecycleCause::kRss;
  if (b.maxThreads && s.threads > b.maxThreads) return RecycleCause::kThreads;
  if (b.maxMaps && s.maps > b.maxMaps) return RecycleCause::kMaps;
  if (b.maxFds && s.fds > b.maxFds) return RecycleCause::kFds;
  if (b.maxGpuMemoryBytes && s.gpuMemoryBytes >= 0 &&
      static_cast<std::uint64_t>(s.gpuMemoryBytes) > b.maxGpuMemoryBytes) {
    return RecycleCause::kGpuMemory;
  }
  if (!b.trend) return std::nullopt;
  auto wouldCross = [&](auto measure, double current, double bound) {
    if (bound <= 0 || current < 0) return false;
    auto growth = history.growthPerJob(measure);
    // Samples may skip fast jobs: look as many jobs ahead as the last gap between samples.
    return growth && *growth > 0 && current + *growth * history.jobsPerSample() > bound;
  };
  if (wouldCross([](const ResourceSample& x) { return static_cast<double>(x.rssBytes); },
                 static_cast<double>(s.rssBytes), static_cast<double>(b.maxRssBytes))) {
    return RecycleCause::kTrendRss;
  }
  if (wouldCross([](const ResourceSample& x) { return static_cast<double>(x.threads); }, s.threads,
                 b.maxThreads)) {
    return RecycleCause::kTrendThreads;
  }
  if (wouldCross([](const ResourceSample& x) { return static_cast<double>(x.maps); }, s.maps,
                 b.maxMaps)) {
    return RecycleCause::kTrendMaps;
  }
  if (wouldCross([](const ResourceSample& x) { return static_cast<double>(x.fds); }, s.fds,
                 b.maxFds)) {
    return RecycleCause::kTrendFds;
  }
  if (wouldCross([](const ResourceSample& x) { return static_cast<double>(x.gpuMemoryBytes); },
                 static_cast<double>(s.gpuMemoryBytes), static_cast<double>(b.maxGpuMemoryBytes))) {
    return RecycleCause::kTrendGpuMemory;
  }
  return std::nullopt;
}

std::optional<RecycleCause> nextJobCrossing(const ResourceSample& s, const JobEndHistory& history,
                                            const ResourceBounds& b, std::uint64_t jobsServed) {
  ResourceBounds crossedOnly = b;
  crossedOnly.trend = false;
  if (auto crossed = recycleCause(s, history, crossedOnly)) return crossed;
  if (!b.trend) return std::nullopt;
  const auto last = history.last();
  if (!last) return std::nullopt;
  const double jobsAhead = static_cast<double>(jobsServed - last->first) + 1;
  auto crosses = [&](auto measure, double bound) {
    if (bound <= 0) return false;
    const double base = measure(last->second);
    auto growth = history.growthPerJob(measure);
    return base >= 0 && growth && *growth > 0 && base + *growth * jobsAhead > bound;
  };
  if (crosses([](const ResourceSample& x) { return static_cast<double>(x.rssBytes); },
              static_cast<double>(b.maxRssBytes))) {
    return RecycleCause::kTrendRss;
  }
  if (crosses([](const ResourceSample& x) { return static_cast<double>(x.threads); },
              b.maxThreads)) {
    return RecycleCause::kTrendThreads;
  }
  if (crosses([](const ResourceSample& x) { return static_cast<double>(x.maps); }, b.maxMaps)) {
    return RecycleCause::kTrendMaps;
  }
  if (crosses([](const ResourceSample& x) { return static_cast<double>(x.fds); }, b.maxFds)) {
    return RecycleCause::kTrendFds;
  }
  if (crosses([](const ResourceSample& x) { return static_cast<double>(x.gpuMemoryBytes); },
              static_cast<double>(b.maxGpuMemoryBytes))) {
    return RecycleCause::kTrendGpuMemory;
  }
  return std::nullopt;
}

bool nextJobWouldCross(const ResourceSample& s, const JobEndHistory& history,
                       const ResourceBounds& b, std::uint64_t jobsServed) {
  return nextJobCrossing(s, history, b, jobsServed).has_value();
}

namespace {

// The line of text holding `at`, at most 200 bytes of it: the evidence quoted in the cause.
std::string lineAround(const std::string& text, std::size_t at) {
  auto lineStart = text.rfind('\n', at);
  lineStart = lineStart == std::string::npos ? 0 : lineStart + 1;
  auto lineEnd = text.find('\n', at);
  std::string line = text.substr(
      lineStart, lineEnd == std::string::npos ? std::string::npos : lineEnd - lineStart);
  if (line.size() > 200) line = line.substr(0, 200);
  return line;
}

// What libraries print when the GPU's memory is full: PyTorch, cuBLAS/cuDNN, the CUDA runtime and
// driver, TensorFlow and Apple's MPS each say it their own way. (The Executor's in-worker check,
// python/bulkhead/_executor_task.py, lists both tables too; a test keeps them equal.)
constexpr std::array<std::string_view, 8> kGpuMemorySignatures = {
    "CUDA out of memory",         "OutOfMemoryError: CUDA",    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",  "cudaErrorMemoryAllocation", "CUDA_ERROR_OUT_OF_MEMORY",
    "OOM when allocating tensor", "MPS backend out of memory",
};
// What they print when a thread or a memory map cannot be created.
constexpr std::array<std::string_view, 6> kThreadOrMapSignatures = {
    "can't start new thread",
    "Thread creation failed",
    "pthread_create",
    "Resource temporarily unavailable",
    "[Errno 11]",
    "failed to map segment",
};

template <std::size_t N>
std::optional<std::size_t> findAny(const std::string& text,
                                   const std::array<std::string_view, N>& signatures) {
  for (std::string_view signature : signatures) {
    auto at = text.find(signature);
    if (at != std::string::npos) return at;
  }
  return std::nullopt;
}

}  // namespace

std::optional<Exhaustion> exhaustionOf(const LimitEvidence& l, const std::string& text) {
  if (l.pidsMaxEvents > 0) {
    return Exhaustion{"pids",
                      "pids limit " +
                          (l.pidsLimit ? std::to_string(l.pidsLimit) : std::string("?")) +
                          " reached (pids.events max " + std::to_string(l.pidsMaxEvents) + ")",
                      l.pidsLimit};
  }
  if (l.lastSample && l.lastSample->maps >= kMapsNearKernelLimit) {
    return Exhaustion{"threads_or_maps",
                      "memory maps exhausted (" + std::to_string(l.lastSample->maps) +
                          " maps, vm.max_map_count is about 65530)",
                      0};
  }
  // The GPU's memory is full. A fresh worker (the allocator's cache and whatever the failed job
  // pinned gone with the old one) may well succeed.
  if (auto at = findAny(text, kGpuMemorySignatures)) {
    return Exhaustion{"gpu_memory", "GPU memory exhausted: " + lineAround(text, *at), 0};
  }
  if (auto at = findAny(text, kThreadOrMapSignatures)) {
    return Exhaustion{"threads_or_maps", "thread or map creation failed: " + lineAround(text, *at),
                      0};
  }
  return std::nullopt;
}

}  // namespace bulkhead::core
