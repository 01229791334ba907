// The operator's log lines: exact text and JSON for the events an operator must see.

#include "runtime/operator_log.h"

#include <gtest/gtest.h>

namespace bulkhead::runtime {
namespace {

using nlohmann::json;

core::PoolEvent crash() {
  core::PoolEvent e;
  e.kind = "crashed";
  e.worker = "faces-3";
  e.pid = 4242;
  e.job = 17;
  e.detail =
      "worker killed by SIGSEGV while running the job; last stderr line: free(): double free "
      "detected in tcache 2";
  return e;
}

TEST(OperatorLog, CrashLineNamesPoolWorkerPidJobSignalAndStderr) {
  EventLine line = eventLine("faces", crash());
  EXPECT_EQ(line.level, LogLevel::kWarning);
  EXPECT_EQ(formatLogLine(LogFormat::kText, line.level, {}, line.message, line.fields),
            "bulkhead: warning: pool faces: crashed faces-3 (pid 4242, job 17): worker killed by "
            "SIGSEGV while running the job; last stderr line: free(): double free detected in "
            "tcache 2");
}

TEST(OperatorLog, JsonLineCarriesTheFieldsForAShipper) {
  EventLine line = eventLine("faces", crash());
  json j = json::parse(formatLogLine(LogFormat::kJson, line.level,
                                     std::chrono::system_clock::time_point{}, line.message,
                                     line.fields));
  EXPECT_EQ(j["time"], "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(j["level"], "warning");
  EXPECT_EQ(j["pool"], "faces");
  EXPECT_EQ(j["event"], "crashed");
  EXPECT_EQ(j["worker"], "faces-3");
  EXPECT_EQ(j["pid"], 4242);
  EXPECT_EQ(j["job"], "17");
  EXPECT_NE(j["message"].get<std::string>().find("SIGSEGV"), std::string::npos);
}

TEST(OperatorLog, WorkerOutputCannotBreakALine) {
  core::PoolEvent e;
  e.kind = "start_failed";
  e.worker = "p-1";
  e.detail = "start failed: ImportError\nsecond line";
  EventLine line = eventLine("p", e);
  std::string text = formatLogLine(LogFormat::kText, line.level, {}, line.message, line.fields);
  EXPECT_EQ(text.find('\n'), std::string::npos) << text;
  std::string js = formatLogLine(LogFormat::kJson, line.level, {}, line.message, line.fields);
  EXPECT_EQ(js.find('\n'), std::string::npos) << js;
}

TEST(OperatorLog, LevelsSeparateRoutineFromTrouble) {
  auto level = [](const char* kind) {
    core::PoolEvent e;
    e.kind = kind;
    return eventLine("p", e).level;
  };
  EXPECT_EQ(level("started"), LogLevel::kDebug);
  EXPECT_EQ(level("ready"), LogLevel::kDebug);
  EXPECT_EQ(level("recycled"), LogLevel::kInfo);
  EXPECT_EQ(level("promoted"), LogLevel::kInfo);
  EXPECT_EQ(level("swapped"), LogLevel::kDebug);
  EXPECT_EQ(level("breaker_closed"), LogLevel::kInfo);
  for (const char* bad :
       {"crashed", "timed_out", "hung", "oom_killed", "resource_exhausted", "start_failed",
        "poisoned", "breaker_opened", "died", "zygote_died", "zygote_fallback"}) {
    EXPECT_EQ(level(bad), LogLevel::kWarning) << bad;
  }
}

TEST(OperatorLog, ParsesFlags) {
  EXPECT_EQ(parseLogLevel("debug"), LogLevel::kDebug);
  EXPECT_EQ(parseLogLevel("warning"), LogLevel::kWarning);
  EXPECT_FALSE(parseLogLevel("loud"));
  EXPECT_EQ(parseLogFormat("json"), LogFormat::kJson);
  EXPECT_FALSE(parseLogFormat("xml"));
}

}  // namespace
}  // namespace bulkhead::runtime
