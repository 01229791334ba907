#include "config/units.h"

#include <gtest/gtest.h>

namespace bulkhead::config {
namespace {

using namespace std::chrono_literals;

TEST(Units, Durations) {
  EXPECT_EQ(parseDuration("30s"), std::chrono::nanoseconds(30s));
  EXPECT_EQ(parseDuration("250ms"), std::chrono::nanoseconds(250ms));
  EXPECT_EQ(parseDuration("2m"), std::chrono::nanoseconds(2min));
  EXPECT_EQ(parseDuration("1.5s"), std::chrono::nanoseconds(1500ms));
  EXPECT_EQ(parseDuration("1h"), std::chrono::nanoseconds(1h));
  EXPECT_FALSE(parseDuration("30"));
  EXPECT_FALSE(parseDuration("30 parsecs"));
  EXPECT_FALSE(parseDuration("s"));
  EXPECT_FALSE(parseDuration("-1s"));
  EXPECT_FALSE(parseDuration("1..2s"));
  EXPECT_FALSE(parseDuration(""));
}

TEST(Units, Sizes) {
  EXPECT_EQ(parseSize("512MiB"), 512ull << 20);
  EXPECT_EQ(parseSize("4GiB"), 4ull << 30);
  EXPECT_EQ(parseSize("100KB"), 100000ull);
  EXPECT_EQ(parseSize("4096"), 4096ull);
  EXPECT_FALSE(parseSize("4 gigs"));
  EXPECT_FALSE(parseSize("MiB"));
}

}  // namespace
}  // namespace bulkhead::config
