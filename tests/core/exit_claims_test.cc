// Exits reaped before the zygote's FORKED named their pid: kept, claimed once, expired, bounded.

#include "core/exit_claims.h"

#include <gtest/gtest.h>

namespace bulkhead::core {
namespace {

using namespace std::chrono_literals;

const Time kNow{std::chrono::seconds(1000)};

TEST(ExitClaimsTest, AnExitIsClaimedOnceWithItsStatus) {
  ExitClaims claims;
  claims.record(42, 9, kNow);
  EXPECT_EQ(claims.claim(42), 9);
  EXPECT_EQ(claims.claim(42), std::nullopt);
  EXPECT_EQ(claims.claim(43), std::nullopt);
}

TEST(ExitClaimsTest, ExitsOlderThanTenSecondsGoWhenTheNextIsRecorded) {
  ExitClaims claims;
  claims.record(1, 0, kNow);
  claims.record(2, 0, kNow + 10s);
  EXPECT_EQ(claims.size(), 2u) << "exactly 10 s old is still kept";
  claims.record(3, 0, kNow + 10s + 1ms);
  EXPECT_EQ(claims.size(), 2u);
  EXPECT_EQ(claims.claim(1), std::nullopt);
  EXPECT_EQ(claims.claim(2), 0);
  EXPECT_EQ(claims.claim(3), 0);
}

TEST(ExitClaimsTest, AtTheBoundNewExitsAreNotKept) {
  ExitClaims claims;
  for (int pid = 1; pid <= static_cast<int>(ExitClaims::kMaxKept); ++pid) {
    claims.record(pid, 0, kNow);
  }
  EXPECT_EQ(claims.size(), ExitClaims::kMaxKept);
  claims.record(999999, 1, kNow);
  EXPECT_EQ(claims.size(), ExitClaims::kMaxKept);
  EXPECT_EQ(claims.claim(999999), std::nullopt);
  EXPECT_EQ(claims.claim(1), 0) << "the old ones stay until they expire";
  claims.record(999999, 1, kNow + 11s);
  EXPECT_EQ(claims.size(), 1u) << "expiry makes room again";
}

TEST(ExitClaimsTest, ARecordedPidAgainKeepsTheLatestStatus) {
  ExitClaims claims;
  claims.record(7, 1, kNow);
  claims.record(7, 2, kNow + 1s);
  EXPECT_EQ(claims.claim(7), 2);
}

}  // namespace
}  // namespace bulkhead::core
