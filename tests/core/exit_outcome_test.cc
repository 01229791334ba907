// classifyExit: the classification shared by the pool (failInFlight) and `bulkhead run`, one rule
// per test.

#include "core/exit_outcome.h"

#include <gtest/gtest.h>

namespace bulkhead::core {
namespace {

ExitFacts signalled(int signal) {
  ExitFacts f;
  f.evidence.signal = signal;
  return f;
}
ExitFacts exited(int code, std::string stderrTail = "") {
  ExitFacts f;
  f.evidence.exitCode = code;
  f.evidence.stderrTail = std::move(stderrTail);
  return f;
}

TEST(ExitOutcome, ASignalIsACrashWithTheSignalInTheCause) {
  ExitVerdict v = classifyExit(signalled(11), "step");
  EXPECT_EQ(v.outcome, Outcome::kCrashed);
  EXPECT_NE(v.cause.find("SIGSEGV"), std::string::npos) << v.cause;
  EXPECT_TRUE(v.limit.empty());
}

TEST(ExitOutcome, AnOomKillWinsOverTheSignal) {
  ExitFacts f = signalled(9);
  f.evidence.oomKilled = true;
  f.evidence.memoryPeakBytes = 64u << 20;
  f.memoryLimitBytes = 64u << 20;
  ExitVerdict v = classifyExit(f, "worker");
  EXPECT_EQ(v.outcome, Outcome::kOomKilled);
  EXPECT_EQ(v.limit, "memory");
  EXPECT_EQ(v.limitValue, 64u << 20);
}

TEST(ExitOutcome, PidsEventsMakeAnAbnormalEndResourceExhausted) {
  ExitFacts f = exited(1);
  f.limits.pidsMaxEvents = 3;
  f.limits.pidsLimit = 40;
  f.pidsLimit = 40;
  ExitVerdict v = classifyExit(f, "step");
  EXPECT_EQ(v.outcome, Outcome::kResourceExhausted);
  EXPECT_EQ(v.limit, "pids");
  EXPECT_EQ(v.limitValue, 40u);
}

TEST(ExitOutcome, ALibraryMessageCountsOnlyForAnOwnExit) {
  const std::string text = "RuntimeError: can't start new thread\n";
  EXPECT_EQ(classifyExit(exited(1, text), "step").outcome, Outcome::kResourceExhausted);
  ExitFacts f = signalled(11);
  f.evidence.stderrTail = text;
  EXPECT_EQ(classifyExit(f, "step").outcome, Outcome::kCrashed);
}

TEST(ExitOutcome, ANonzeroExitReadsAsTheCallerSays) {
  EXPECT_EQ(classifyExit(exited(3), "worker").outcome, Outcome::kCrashed);
  ExitFacts f = exited(3);
  f.nonzeroExit = Outcome::kHandlerError;
  EXPECT_EQ(classifyExit(f, "step").outcome, Outcome::kHandlerError);
}

TEST(ExitOutcome, OurTimeoutKillIsTimedOutUnlessPidsWereRefused) {
  ExitFacts f = signalled(15);
  f.killReason = ExitKillReason::kTimeout;
  f.killCause = "ran past 1s";
  ExitVerdict v = classifyExit(f, "step");
  EXPECT_EQ(v.outcome, Outcome::kTimedOut);
  EXPECT_EQ(v.cause, "ran past 1s");
  f.pidsRefusedDuringWork = true;
  f.pidsLimit = 16;
  EXPECT_EQ(classifyExit(f, "step").outcome, Outcome::kResourceExhausted);
}

TEST(ExitOutcome, HungOnlyReplacesAPlainCrash) {
  ExitFacts f = signalled(9);
  f.killReason = ExitKillReason::kHung;
  EXPECT_EQ(classifyExit(f, "worker").outcome, Outcome::kHung);
  f.evidence.oomKilled = true;
  EXPECT_EQ(classifyExit(f, "worker").outcome, Outcome::kOomKilled);
}

TEST(ExitOutcome, CancelIsCancelledWhateverTheSignal) {
  ExitFacts f = signalled(15);
  f.killReason = ExitKillReason::kCancelled;
  f.killCause = "cancelled by SIGINT";
  ExitVerdict v = classifyExit(f, "step");
  EXPECT_EQ(v.outcome, Outcome::kCancelled);
  EXPECT_EQ(v.cause, "cancelled by SIGINT");
}

TEST(ExitOutcome, AWatchedBoundIsResourceExhaustedWithThatLimit) {
  ExitFacts f = signalled(15);
  f.killReason = ExitKillReason::kResourceBound;
  f.killCause = "maps";
  f.boundLimit = "maps";
  f.boundValue = 1000;
  ExitVerdict v = classifyExit(f, "step");
  EXPECT_EQ(v.outcome, Outcome::kResourceExhausted);
  EXPECT_EQ(v.limit, "maps");
  EXPECT_EQ(v.limitValue, 1000u);
}

TEST(ExitOutcome, StartupAndStopTimeoutsKeepTheEvidenceVerdict) {
  ExitFacts f = signalled(9);
  f.killReason = ExitKillReason::kOther;
  EXPECT_EQ(classifyExit(f, "worker").outcome, Outcome::kCrashed);
}

}  // namespace
}  // namespace bulkhead::core
