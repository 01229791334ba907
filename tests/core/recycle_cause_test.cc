// The recycle cause is an enum inside the core; its words are what users already see in events,
// the operator log, the worker view and the metrics label, and must not change.

#include "core/recycle_cause.h"

#include <gtest/gtest.h>

namespace bulkhead::core {
namespace {

TEST(RecycleCause, PrintsTheWordsUsersAlreadySee) {
  EXPECT_EQ(recycleCauseName(RecycleCause::kJobs), "jobs");
  EXPECT_EQ(recycleCauseName(RecycleCause::kAge), "age");
  EXPECT_EQ(recycleCauseName(RecycleCause::kExhausted), "exhausted");
  EXPECT_EQ(recycleCauseName(RecycleCause::kRss), "rss");
  EXPECT_EQ(recycleCauseName(RecycleCause::kThreads), "threads");
  EXPECT_EQ(recycleCauseName(RecycleCause::kMaps), "maps");
  EXPECT_EQ(recycleCauseName(RecycleCause::kFds), "fds");
  EXPECT_EQ(recycleCauseName(RecycleCause::kTrendRss), "trend:rss");
  EXPECT_EQ(recycleCauseName(RecycleCause::kTrendThreads), "trend:threads");
  EXPECT_EQ(recycleCauseName(RecycleCause::kTrendMaps), "trend:maps");
  EXPECT_EQ(recycleCauseName(RecycleCause::kTrendFds), "trend:fds");
}

TEST(RecycleCause, OnlyACrossedBoundOrExhaustionStopsFurtherJobs) {
  EXPECT_TRUE(recycleCauseCrossedBound(RecycleCause::kRss));
  EXPECT_TRUE(recycleCauseCrossedBound(RecycleCause::kThreads));
  EXPECT_TRUE(recycleCauseCrossedBound(RecycleCause::kMaps));
  EXPECT_TRUE(recycleCauseCrossedBound(RecycleCause::kFds));
  EXPECT_TRUE(recycleCauseCrossedBound(RecycleCause::kExhausted));
  EXPECT_FALSE(recycleCauseCrossedBound(RecycleCause::kJobs));
  EXPECT_FALSE(recycleCauseCrossedBound(RecycleCause::kAge));
  EXPECT_FALSE(recycleCauseCrossedBound(RecycleCause::kTrendRss));
  EXPECT_FALSE(recycleCauseCrossedBound(RecycleCause::kTrendMaps));
}

}  // namespace
}  // namespace bulkhead::core
