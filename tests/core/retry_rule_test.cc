// The one retry decision, one rule per test.

#include "core/retry_rule.h"

#include <gtest/gtest.h>

namespace bulkhead::core {
namespace {

RetryFacts crashed(int attemptsMade) { return {Outcome::kCrashed, attemptsMade, 2, false, false}; }

TEST(RetryRule, InfrastructureFailuresAreRetriedWithinTheRetries) {
  EXPECT_TRUE(shouldRetry(crashed(1)));
  EXPECT_TRUE(shouldRetry(crashed(2)));
  EXPECT_FALSE(shouldRetry(crashed(3))) << "retries = 2 allows 3 attempts";
}

TEST(RetryRule, OnlyInfrastructureFailuresAreRetried) {
  for (Outcome o :
       {Outcome::kCrashed, Outcome::kHung, Outcome::kOomKilled, Outcome::kResourceExhausted}) {
    EXPECT_TRUE(shouldRetry({o, 1, 2, false, false})) << outcomeName(o);
  }
  for (Outcome o : {Outcome::kOk, Outcome::kHandlerError, Outcome::kTimedOut, Outcome::kPoison,
                    Outcome::kOverloaded, Outcome::kUnavailable, Outcome::kCancelled}) {
    EXPECT_FALSE(shouldRetry({o, 1, 2, false, false})) << outcomeName(o);
  }
}

TEST(RetryRule, NeverWhileShuttingDown) {
  RetryFacts f = crashed(1);
  f.shuttingDown = true;
  EXPECT_FALSE(shouldRetry(f));
}

TEST(RetryRule, NeverAfterTheCallersDeadline) {
  RetryFacts f = crashed(1);
  f.deadlinePassed = true;
  EXPECT_FALSE(shouldRetry(f));
}

TEST(RetryRule, NoRetriesMeansOneAttempt) {
  EXPECT_FALSE(shouldRetry({Outcome::kCrashed, 1, 0, false, false}));
}

}  // namespace
}  // namespace bulkhead::core
