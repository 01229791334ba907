// judgeStep and the printed forms of `bulkhead run`: pure functions over fixed facts.

#include "run/step_report.h"

#include <gtest/gtest.h>
#include <signal.h>

#include "run/step_verdict.h"

namespace bulkhead::run {
namespace {

int exitedWith(int code) { return (code & 0xff) << 8; }
int killedBy(int signal) { return signal & 0x7f; }

StepEnd ended(int rawStatus, std::string stderrTail = "") {
  StepEnd e;
  e.rawStatus = rawStatus;
  e.stderrTail = std::move(stderrTail);
  return e;
}
StepLimitsSet noLimits() { return StepLimitsSet{}; }

TEST(StepVerdict, ExitZeroIsOk) {
  StepVerdict v = judgeStep(ended(exitedWith(0)), noLimits());
  EXPECT_EQ(v.outcome, core::Outcome::kOk);
  EXPECT_FALSE(v.evidence.contains("cause"));
}

TEST(StepVerdict, AnOwnNonzeroExitIsHandlerError) {
  StepVerdict v = judgeStep(ended(exitedWith(3), "boom\n"), noLimits());
  EXPECT_EQ(v.outcome, core::Outcome::kHandlerError);
  EXPECT_EQ(v.evidence["exit_code"], 3);
  EXPECT_EQ(v.evidence["stderr_tail"], "boom\n");
}

TEST(StepVerdict, ASegfaultIsCrashedWithTheSignal) {
  StepVerdict v = judgeStep(ended(killedBy(SIGSEGV)), noLimits());
  EXPECT_EQ(v.outcome, core::Outcome::kCrashed);
  EXPECT_EQ(v.evidence["signal"], "SIGSEGV");
  EXPECT_EQ(v.evidence["cause"], "the step's command killed by SIGSEGV");
}

TEST(StepVerdict, TheOomKillerMakesItOomKilled) {
  StepEnd end = ended(killedBy(SIGKILL));
  end.oomKills = 1;
  StepLimitsSet limits;
  limits.memoryBytes = 64u << 20;
  StepVerdict v = judgeStep(end, limits);
  EXPECT_EQ(v.outcome, core::Outcome::kOomKilled);
  EXPECT_EQ(v.evidence["limit"], "memory");
}

TEST(StepVerdict, ARefusedThreadWithAnOwnExitIsResourceExhausted) {
  StepEnd end = ended(exitedWith(1), "RuntimeError: can't start new thread\n");
  end.pidsMaxEvents = 2;
  StepLimitsSet limits;
  limits.pids = 40;
  StepVerdict v = judgeStep(end, limits);
  EXPECT_EQ(v.outcome, core::Outcome::kResourceExhausted);
  EXPECT_EQ(v.evidence["limit"], "pids");
  EXPECT_EQ(v.evidence["limit_value"], 40);
}

TEST(StepVerdict, StoppedByUsEvenIfItExitedZero) {
  StepEnd end = ended(exitedWith(0));
  end.stopReason = core::StepStopReason::kTimeout;
  EXPECT_EQ(judgeStep(end, noLimits()).outcome, core::Outcome::kTimedOut);
  end.stopReason = core::StepStopReason::kInterrupted;
  end.interruptSignal = SIGINT;
  StepVerdict v = judgeStep(end, noLimits());
  EXPECT_EQ(v.outcome, core::Outcome::kCancelled);
  EXPECT_EQ(v.evidence["cause"], "cancelled by SIGINT");
}

TEST(StepReport, Formats) {
  EXPECT_EQ(formatBytes(512u << 20), "512MiB");
  EXPECT_EQ(formatBytes(3u << 29), "1.5GiB");
  EXPECT_EQ(formatDuration(850), "850ms");
  EXPECT_EQ(formatDuration(12300), "12.3s");
  EXPECT_EQ(formatDuration(125000), "2m05s");
  TreeSample s{1200u << 20, 36, 1850, 1850, 1, 506};
  EXPECT_EQ(liveLine("1", 1, 12000, s, 65530, 7680),
            "step 1  00:00:12  rss=1.2GiB threads=36 maps=1850/65530 pids=506/7680 procs=1");
}

TEST(StepReport, JsonHasOneEntryPerStep) {
  StepSummary a;
  a.name = "1";
  a.outcome = "ok";
  a.result = nlohmann::json{{"acc", 0.5}};
  StepSummary b;
  b.name = "2";
  auto j = runJson({a, b}, 1, false, 65530, "v1");
  ASSERT_EQ(j["steps"].size(), 2u);
  EXPECT_EQ(j["steps"][0]["result"]["acc"], 0.5);
  EXPECT_EQ(j["steps"][1]["outcome"], "not_run");
  EXPECT_TRUE(j["steps"][1]["result"].is_null());
  EXPECT_EQ(j["exit_code"], 1);
}

TEST(StepResult, JsonIsKeptTextIsKeptAsAStringAndTooLargeIsNot) {
  StepSummary summary;
  nlohmann::json evidence = nlohmann::json::object();
  keepStepResult(std::string(R"({"auc": 0.91})"), false, summary, evidence);
  ASSERT_TRUE(summary.result);
  EXPECT_EQ((*summary.result)["auc"], 0.91);
  EXPECT_FALSE(evidence.contains("result_error"));

  keepStepResult(std::string("not json"), false, summary, evidence);
  ASSERT_TRUE(summary.result);
  EXPECT_EQ(*summary.result, "not json");
  EXPECT_EQ(evidence["result_error"], "result file is not JSON: kept as a string");

  nlohmann::json tooLarge = nlohmann::json::object();
  keepStepResult(std::string(), true, summary, tooLarge);
  EXPECT_FALSE(summary.result) << "an earlier attempt's result is not kept either";
  EXPECT_EQ(tooLarge["result_error"], "result file larger than 1 MiB: not kept");

  nlohmann::json none = nlohmann::json::object();
  keepStepResult(std::nullopt, false, summary, none);
  EXPECT_FALSE(summary.result);
  EXPECT_TRUE(none.empty());
}

}  // namespace
}  // namespace bulkhead::run
