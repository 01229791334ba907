#include "core/zygote_lifecycle.h"

#include <gtest/gtest.h>

#include <random>

namespace bulkhead::core {
namespace {

using namespace std::chrono_literals;
using State = ZygoteLifecycle::State;

ZygotePolicy policy() {
  ZygotePolicy p;
  p.startupTimeout = 5s;
  p.forkTimeout = 2s;
  p.backoffBase = 100ms;
  p.backoffMax = 1s;
  return p;
}

TEST(ZygoteLifecycle, StartsAtOnceThenAcceptsForksWhenReady) {
  ZygoteLifecycle z(policy());
  ZygoteLifecycle::Time t{100s};
  EXPECT_TRUE(z.shouldStart(t));
  z.started(t);
  EXPECT_FALSE(z.shouldStart(t));
  EXPECT_FALSE(z.acceptsForks());
  EXPECT_EQ(z.nextDeadline(), t + 5s);
  z.ready();
  EXPECT_TRUE(z.acceptsForks());
  EXPECT_EQ(z.nextDeadline(), std::nullopt);
  EXPECT_STREQ(ZygoteLifecycle::stateName(z.state()), "ready");
}

TEST(ZygoteLifecycle, AHungPreloadIsOverdueAtTheStartupTimeout) {
  ZygoteLifecycle z(policy());
  ZygoteLifecycle::Time t{100s};
  z.started(t);
  EXPECT_FALSE(z.overdue(t + 4999ms));
  EXPECT_TRUE(z.overdue(t + 5s));
}

TEST(ZygoteLifecycle, AnUnansweredForkMakesItOverdueAndAnAnswerRestartsTheClock) {
  ZygoteLifecycle z(policy());
  ZygoteLifecycle::Time t{100s};
  z.started(t);
  z.ready();
  z.forkSent(t);
  z.forkSent(t + 1s);
  EXPECT_EQ(z.nextDeadline(), t + 2s);
  EXPECT_FALSE(z.overdue(t + 1999ms));
  z.forkAnswered(t + 1500ms);
  EXPECT_FALSE(z.overdue(t + 3s));
  EXPECT_TRUE(z.overdue(t + 3500ms));
  z.forkAnswered(t + 3500ms);
  EXPECT_FALSE(z.overdue(t + 100s));  // nothing in flight: an idle zygote is never overdue
}

TEST(ZygoteLifecycle, DeathsInARowBackOffExponentiallyUpToTheCapAndAForkResetsThem) {
  ZygoteLifecycle z(policy());
  ZygoteLifecycle::Time t{100s};
  z.started(t);
  z.exited(t);
  EXPECT_TRUE(z.shouldStart(t));  // the first death restarts at once
  std::chrono::nanoseconds expected[] = {100ms, 200ms, 400ms, 800ms, 1s, 1s};
  for (auto delay : expected) {
    z.started(t);
    z.exited(t);
    EXPECT_FALSE(z.shouldStart(t + delay - 1ms));
    EXPECT_TRUE(z.shouldStart(t + delay));
    EXPECT_EQ(z.nextDeadline(), t + delay);
  }
  z.started(t);
  z.ready();
  z.forkSent(t);
  z.forkAnswered(t);
  z.exited(t);
  EXPECT_TRUE(z.shouldStart(t));
  EXPECT_EQ(z.deaths(), 8);
  EXPECT_EQ(z.starts(), 8);
}

TEST(ZygoteLifecycle, ARefusalIsForGood) {
  ZygoteLifecycle z(policy());
  ZygoteLifecycle::Time t{100s};
  z.started(t);
  z.ready();
  z.forkSent(t);
  z.refused("3 threads");
  EXPECT_EQ(z.state(), State::kRefused);
  EXPECT_EQ(z.refusal(), "3 threads");
  z.exited(t);
  EXPECT_EQ(z.state(), State::kRefused);
  EXPECT_FALSE(z.shouldStart(t + 1h));
  EXPECT_FALSE(z.acceptsForks());
  EXPECT_FALSE(z.overdue(t + 1h));
  EXPECT_EQ(z.nextDeadline(), std::nullopt);
}

// Random event sequences: whatever happens, a zygote that is down restarts within the cap, one
// that is starting or has forks in flight has a deadline, and the deadline is when it is overdue.
TEST(ZygoteLifecycle, RandomHistoriesKeepTheInvariants) {
  for (unsigned seed = 1; seed <= 50; ++seed) {
    std::mt19937 rng(seed);
    ZygoteLifecycle z(policy());
    ZygoteLifecycle::Time t{100s};
    for (int step = 0; step < 2000; ++step) {
      t += std::chrono::milliseconds(rng() % 700);
      switch (rng() % 6) {
        case 0:
          if (z.shouldStart(t)) z.started(t);
          break;
        case 1:
          z.ready();
          break;
        case 2:
          if (z.acceptsForks()) z.forkSent(t);
          break;
        case 3:
          z.forkAnswered(t);
          break;
        case 4:
          if (z.state() != State::kDown) z.exited(t);
          break;
        case 5:
          if (z.overdue(t)) z.exited(t);
          break;
      }
      ASSERT_NE(z.state(), State::kRefused);
      if (z.state() == State::kDown) {
        ASSERT_TRUE(z.nextDeadline());
        ASSERT_LE(*z.nextDeadline() - t, 1s);
        ASSERT_TRUE(z.shouldStart(*z.nextDeadline()));
      }
      if (z.state() == State::kStarting) {
        ASSERT_TRUE(z.nextDeadline());
        ASSERT_TRUE(z.overdue(*z.nextDeadline()));
      }
      if (auto d = z.nextDeadline(); d && z.state() != State::kDown) {
        ASSERT_TRUE(z.overdue(*d));
      }
    }
  }
}

}  // namespace
}  // namespace bulkhead::core
