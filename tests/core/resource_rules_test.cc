#include "core/resource_rules.h"

#include <gtest/gtest.h>

namespace bulkhead::core {
namespace {

ResourceSample sample(std::uint64_t rssMiB, int threads, int maps, int fds = 10) {
  ResourceSample s;
  s.rssBytes = rssMiB << 20;
  s.threads = threads;
  s.maps = maps;
  s.fds = fds;
  return s;
}

TEST(RecycleRules, BoundsOnTheLatestSample) {
  ResourceBounds b;
  b.maxRssBytes = 100ull << 20;
  b.maxThreads = 20;
  b.maxMaps = 1000;
  b.maxFds = 50;
  JobEndHistory none;
  EXPECT_FALSE(recycleCause(sample(99, 20, 1000, 50), none, b));
  EXPECT_EQ(recycleCause(sample(101, 1, 1), none, b), RecycleCause::kRss);
  EXPECT_EQ(recycleCause(sample(1, 21, 1), none, b), RecycleCause::kThreads);
  EXPECT_EQ(recycleCause(sample(1, 1, 1001), none, b), RecycleCause::kMaps);
  EXPECT_EQ(recycleCause(sample(1, 1, 1, 51), none, b), RecycleCause::kFds);
}

TEST(RecycleRules, TrendRecyclesBeforeTheNextJobWouldCrossTheBound) {
  ResourceBounds b;
  b.maxMaps = 5000;
  JobEndHistory h;
  // A leaky cross-validation fold in numbers: about +730 maps per fold.
  int maps = 1700;
  for (std::uint64_t job = 1; job <= 4; ++job) {
    maps += 730;
    h.record(job, sample(10, 2, maps));
    auto cause = recycleCause(sample(10, 2, maps), h, b);
    if (maps + 730 > 5000) {
      EXPECT_EQ(cause, RecycleCause::kTrendMaps) << "at " << maps << " maps";
      return;
    }
    EXPECT_FALSE(cause) << "at " << maps << " maps";
  }
  FAIL() << "the trend rule never fired";
}

TEST(RecycleRules, TrendUsesJobCountsNotSampleCounts) {
  ResourceBounds b;
  b.maxRssBytes = 1000ull << 20;
  JobEndHistory h;
  h.record(10, sample(100, 2, -1));
  h.record(20, sample(200, 2, -1));  // +10 MiB per job over 10 jobs
  EXPECT_FALSE(recycleCause(sample(200, 2, -1), h, b));
  EXPECT_EQ(recycleCause(sample(995, 2, -1), h, b), RecycleCause::kTrendRss);
}

TEST(RecycleRules, TrendLooksAheadAsManyJobsAsSamplesSkip) {
  ResourceBounds b;
  b.maxMaps = 20000;
  JobEndHistory h;
  h.record(10, sample(10, 2, 2000));
  h.record(20, sample(10, 2, 12000));  // +1000 per job, sampled every 10 jobs
  // 12000 + 1000 would be fine for one job, but the next sample comes 10 jobs later.
  EXPECT_EQ(recycleCause(sample(10, 2, 12000), h, b), RecycleCause::kTrendMaps);
}

TEST(RecycleRules, FlatOrShrinkingMeasuresNeverTriggerTheTrend) {
  ResourceBounds b;
  b.maxThreads = 10;
  JobEndHistory h;
  h.record(1, sample(10, 9, 100));
  h.record(2, sample(10, 9, 100));
  EXPECT_FALSE(recycleCause(sample(10, 9, 100), h, b));
  b.trend = false;
  h.record(3, sample(10, 10, 100));
  EXPECT_FALSE(recycleCause(sample(10, 10, 100), h, b));
}

TEST(Recycle, GpuMemoryOverItsBoundAndByTheTrend) {
  ResourceBounds b;
  b.maxGpuMemoryBytes = 19ull << 29;  // 9.5 GiB
  JobEndHistory h;
  auto at = [](std::int64_t gib) {
    ResourceSample s;
    s.gpuMemoryBytes = gib << 30;
    return s;
  };
  EXPECT_EQ(recycleCause(at(10), h, b), RecycleCause::kGpuMemory);
  EXPECT_EQ(recycleCauseName(RecycleCause::kGpuMemory), "gpu_memory");
  ResourceSample unread;  // no GPU reading: never over
  EXPECT_FALSE(recycleCause(unread, h, b));
  // A leak of 1 GiB per job (the fold-3 failure): recycled before the job that would cross.
  for (std::uint64_t job = 1; job <= 4; ++job)
    h.record(job, at(static_cast<std::int64_t>(5 + job)));
  EXPECT_EQ(recycleCause(at(9), h, b), RecycleCause::kTrendGpuMemory);
  EXPECT_EQ(recycleCauseName(RecycleCause::kTrendGpuMemory), "trend:gpu_memory");
  EXPECT_TRUE(nextJobWouldCross(at(9), h, b, 4));
  b.trend = false;
  EXPECT_FALSE(recycleCause(at(9), h, b));
}

TEST(Exhaustion, PidsCounterComesFirst) {
  LimitEvidence l;
  l.pidsLimit = 40;
  l.pidsMaxEvents = 2;
  auto exhausted = exhaustionOf(l, "CUDA out of memory");
  ASSERT_TRUE(exhausted);
  EXPECT_EQ(exhausted->limit, "pids");
  EXPECT_NE(exhausted->cause.find("pids limit 40"), std::string::npos);
}

TEST(Exhaustion, LibraryMessagesFromFaultsMd) {
  LimitEvidence l;
  for (const char* text : {"RuntimeError: can't start new thread",
                           "libgomp: Thread creation failed: Resource temporarily unavailable",
                           "BlockingIOError: [Errno 11] Resource temporarily unavailable",
                           "ImportError: libfoo.so: failed to map segment from shared object"}) {
    auto exhausted = exhaustionOf(l, std::string("Traceback...\n") + text + "\n");
    ASSERT_TRUE(exhausted) << text;
    EXPECT_EQ(exhausted->limit, "threads_or_maps");
    EXPECT_NE(exhausted->cause.find(text), std::string::npos) << exhausted->cause;
  }
  EXPECT_FALSE(exhaustionOf(l, "ValueError: bad image"));
}

TEST(Exhaustion, GpuOutOfMemoryAsEachLibrarySaysIt) {
  LimitEvidence l;
  for (const char* text :
       {"torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; "
        "79.11 GiB total capacity; 70.02 GiB already allocated)",
        "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 MiB",
        "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "RuntimeError: cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
        "cupy.cuda.runtime.CUDARuntimeError: cudaErrorMemoryAllocation: out of memory",
        "CUDA_ERROR_OUT_OF_MEMORY: out of memory",
        "ResourceExhaustedError: OOM when allocating tensor with shape[8192,8192]",
        "RuntimeError: MPS backend out of memory (MPS allocated: 17.00 GB)"}) {
    auto exhausted = exhaustionOf(l, std::string("Traceback...\n") + text + "\n");
    ASSERT_TRUE(exhausted) << text;
    EXPECT_EQ(exhausted->limit, "gpu_memory") << text;
    EXPECT_EQ(exhausted->cause.rfind("GPU memory exhausted: ", 0), 0u) << exhausted->cause;
    EXPECT_NE(exhausted->cause.find(std::string(text).substr(0, 40)), std::string::npos);
  }
  // Host memory running out is not the GPU's, nor is a CUDA error of another kind.
  EXPECT_FALSE(exhaustionOf(l, "MemoryError: Unable to allocate 8.00 GiB"));
  EXPECT_FALSE(
      exhaustionOf(l, "RuntimeError: CUDA error: an illegal memory access was encountered"));
}

TEST(Exhaustion, MapsAtTheKernelLimit) {
  LimitEvidence l;
  l.lastSample = sample(10, 2, 65400);
  auto exhausted = exhaustionOf(l, "MemoryError");
  ASSERT_TRUE(exhausted);
  EXPECT_NE(exhausted->cause.find("maps"), std::string::npos);
}

TEST(NextJob, MapsOneJobShortOfTheBoundTakeNoFurtherJob) {
  // A leaky fold in numbers: +730 maps per job. Samples every 4 jobs; 29,300 after job 8.
  JobEndHistory h;
  h.record(4, sample(10, 2, 26380));
  h.record(8, sample(10, 2, 29300));
  ResourceBounds b;
  b.maxMaps = 30000;
  EXPECT_TRUE(nextJobWouldCross(sample(10, 2, 29300), h, b, 8)) << "29,300 + 730 > 30,000";
  b.maxMaps = 31000;
  EXPECT_FALSE(nextJobWouldCross(sample(10, 2, 29300), h, b, 8));
  EXPECT_TRUE(nextJobWouldCross(sample(10, 2, -1), h, b, 10))
      << "two unsampled jobs since: 29,300 + 3 x 730 > 31,000";
  b.trend = false;
  EXPECT_FALSE(nextJobWouldCross(sample(10, 2, 29300), h, b, 10)) << "no trend, no prediction";
}

TEST(NextJob, ThreadsAtTheBoundWithALeakTakeNoFurtherJob) {
  JobEndHistory h;
  h.record(1, sample(10, 19, 100));
  h.record(2, sample(10, 20, 100));
  ResourceBounds b;
  b.maxThreads = 20;
  EXPECT_TRUE(nextJobWouldCross(sample(10, 20, 100), h, b, 2)) << "one more thread would be 21";
  EXPECT_TRUE(nextJobWouldCross(sample(10, 21, 100), h, b, 2)) << "already over";
}

}  // namespace
}  // namespace bulkhead::core
