// When the shell samples: the after-job maps budget and the pool's periodic sample. Pure
// functions over simulated times and measured costs.

#include "core/sampling_schedule.h"

#include <gtest/gtest.h>

namespace bulkhead::core {
namespace {

using namespace std::chrono_literals;

const Time kNow{std::chrono::seconds(1000)};

ResourceBounds mapsOnly(int maxMaps) {
  ResourceBounds b;
  b.maxMaps = maxMaps;
  return b;
}

TEST(SamplingScheduleTest, NoBoundsNoSampleAfterJobs) {
  const AfterJobSampling s = afterJobSampling(ResourceBounds{}, MapsReads{}, kNow);
  EXPECT_FALSE(s.sample);
  EXPECT_FALSE(s.withMaps);
}

TEST(SamplingScheduleTest, FirstJobCountsMaps) {
  const AfterJobSampling s =
      afterJobSampling(mapsOnly(1000), MapsReads{10, std::nullopt, 2ms}, kNow);
  EXPECT_TRUE(s.sample);
  EXPECT_TRUE(s.withMaps);
}

TEST(SamplingScheduleTest, MapsOnlyPoolSkipsJobsWithinTheBudget) {
  // 2 ms per read: the next count is due 40 ms after the last one.
  const MapsReads maps{10, kNow - 39ms, 2ms};
  const AfterJobSampling s = afterJobSampling(mapsOnly(1000), maps, kNow);
  EXPECT_FALSE(s.sample) << "nothing cheap is bounded, and maps are not due";
  const AfterJobSampling later = afterJobSampling(mapsOnly(1000), maps, kNow + 1ms);
  EXPECT_TRUE(later.sample);
  EXPECT_TRUE(later.withMaps);
}

TEST(SamplingScheduleTest, NearTheBoundMapsAreCountedAfterEveryJob) {
  const MapsReads maps{750, kNow - 1ms, 2ms};  // 3/4 of 1000
  const AfterJobSampling s = afterJobSampling(mapsOnly(1000), maps, kNow);
  EXPECT_TRUE(s.sample);
  EXPECT_TRUE(s.withMaps);
  const MapsReads below{749, kNow - 1ms, 2ms};
  EXPECT_FALSE(afterJobSampling(mapsOnly(1000), below, kNow).sample);
}

TEST(SamplingScheduleTest, CheapBoundsSampleAfterEveryJobWithoutMapsWhenNotDue) {
  for (int which = 0; which < 3; ++which) {
    ResourceBounds b;
    if (which == 0) b.maxRssBytes = 1 << 30;
    if (which == 1) b.maxThreads = 64;
    if (which == 2) b.maxFds = 256;
    const AfterJobSampling s = afterJobSampling(b, MapsReads{10, kNow - 1ms, 2ms}, kNow);
    EXPECT_TRUE(s.sample) << which;
    EXPECT_FALSE(s.withMaps) << which;
  }
}

TEST(SamplingScheduleTest, UnboundedMapsAreNeverNearTheBound) {
  ResourceBounds b;
  b.maxRssBytes = 1 << 30;
  const AfterJobSampling s = afterJobSampling(b, MapsReads{100000, kNow - 1ms, 2ms}, kNow);
  EXPECT_TRUE(s.sample);
  EXPECT_FALSE(s.withMaps);
}

TEST(SamplingScheduleTest, PoolSampleIsDueAtItsTimeAndNextOneIntervalLater) {
  EXPECT_FALSE(poolSampleDue(kNow + 1ms, kNow));
  EXPECT_TRUE(poolSampleDue(kNow, kNow));
  EXPECT_TRUE(poolSampleDue(kNow - 1s, kNow));
  EXPECT_EQ(nextPoolSample(1s, kNow), kNow + 1s);
}

}  // namespace
}  // namespace bulkhead::core
