// The heap release rule (os/heap_reuse.h) and the allocator settings it relies on.
#include "os/heap_reuse.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>

namespace bulkhead::os {
namespace {

constexpr std::size_t kMiB = 1u << 20;

TEST(HeapRelease, AQuietDaemonWithFreeBlocksReleasesThemAfterTwoStillTicks) {
  HeapRelease rule(8 * kMiB, kMiB);
  EXPECT_FALSE(rule.due({3 * kMiB, 64 * kMiB}));        // first reading: nothing to compare
  EXPECT_FALSE(rule.due({3 * kMiB, 64 * kMiB}));        // still for one tick
  EXPECT_TRUE(rule.due({3 * kMiB + 1000, 64 * kMiB}));  // two: release
  EXPECT_FALSE(rule.due({3 * kMiB, 1 * kMiB}));         // released; and too little free anyway
  EXPECT_FALSE(rule.due({3 * kMiB, 1 * kMiB}));
  EXPECT_FALSE(rule.due({3 * kMiB, 1 * kMiB}));
}

TEST(HeapRelease, ABurstOfLargeJobsKeepsItsBlocks) {
  HeapRelease rule(8 * kMiB, kMiB);
  // Use swings by a payload between ticks while the last job's block is always free.
  for (int tick = 0; tick < 100; ++tick) {
    const std::size_t inUse = (tick % 2 ? 131 : 67) * kMiB;
    EXPECT_FALSE(rule.due({inUse, 64 * kMiB})) << tick;
  }
  EXPECT_FALSE(rule.due({3 * kMiB, 192 * kMiB}));  // the burst ends
  EXPECT_FALSE(rule.due({3 * kMiB, 192 * kMiB}));
  EXPECT_TRUE(rule.due({3 * kMiB, 192 * kMiB}));
}

#if !defined(__SANITIZE_ADDRESS__)
// With the daemon's settings a freed 48 MiB block (over glibc's largest mmap threshold) stays
// in the heap for the next one, and releaseFreeHeap() gives it back.
TEST(HeapReuse, AFreedLargeBlockIsKeptUntilReleased) {
  keepFreedBlocksForReuse();
  constexpr std::size_t kBlock = 48u << 20;
  {
    auto block = std::make_unique<char[]>(kBlock);
    std::memset(block.get(), 1, kBlock);
  }
  EXPECT_GE(heapUse().free, kBlock);
  releaseFreeHeap();
  EXPECT_LT(heapUse().free, kBlock);
}
#endif

}  // namespace
}  // namespace bulkhead::os
