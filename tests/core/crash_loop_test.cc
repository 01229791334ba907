#include "core/crash_loop.h"

#include <gtest/gtest.h>

namespace bulkhead::core {
namespace {

using namespace std::chrono_literals;

TEST(CrashLoop, NoDelayUntilTheThresholdThenDoublingUpToTheCap) {
  CrashLoopPolicy p{3, 10s, 100ms, 1s};
  CrashLoop loop(p);
  CrashLoop::Time t{1000s};
  for (int i = 0; i < 3; ++i) loop.recordDeath(t);
  EXPECT_EQ(loop.spawnDelay(t), 0ns);
  loop.recordDeath(t);
  EXPECT_EQ(loop.spawnDelay(t), 100ms);
  loop.recordDeath(t);
  EXPECT_EQ(loop.spawnDelay(t), 200ms);
  for (int i = 0; i < 10; ++i) loop.recordDeath(t);
  EXPECT_EQ(loop.spawnDelay(t), 1s);
}

TEST(CrashLoop, DeathsOutsideTheWindowAreForgotten) {
  CrashLoop loop(CrashLoopPolicy{1, 10s, 100ms, 1s});
  CrashLoop::Time t{1000s};
  loop.recordDeath(t);
  loop.recordDeath(t);
  EXPECT_GT(loop.spawnDelay(t), 0ns);
  EXPECT_EQ(loop.spawnDelay(t + 11s), 0ns);
  EXPECT_EQ(loop.recentDeaths(t + 11s), 0u);
}

}  // namespace
}  // namespace bulkhead::core
