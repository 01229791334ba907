#include "core/fallback_route.h"

#include <gtest/gtest.h>

namespace bulkhead::core {
namespace {

TEST(FallbackRoute, OnlyAnOpenBreakerReroutes) {
  EXPECT_FALSE(fallbackRoute(false, "simple", 0, 2));
  auto route = fallbackRoute(true, "simple", 0, 2);
  ASSERT_TRUE(route);
  EXPECT_EQ(route->pool, "simple");
}

TEST(FallbackRoute, NoFallbackConfiguredMeansNoReroute) {
  EXPECT_FALSE(fallbackRoute(true, "", 0, 2));
}

// The real bound: total hops, not once per pool. With a <-> b (2 pools) a job may go a -> b -> a
// (2 hops), and no further.
TEST(FallbackRoute, TotalHopsAreBoundedByThePoolCount) {
  EXPECT_TRUE(fallbackRoute(true, "b", 0, 2));  // a -> b
  EXPECT_TRUE(fallbackRoute(true, "a", 1, 2));  // b -> a: a pool visited again
  EXPECT_FALSE(fallbackRoute(true, "b", 2, 2));
}

}  // namespace
}  // namespace bulkhead::core
