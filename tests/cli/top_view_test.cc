// `bulkhead top`'s frames: pure rendering of fixed GET /v1/pools answers (no daemon, no clock).

#include "cli/top_view.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

namespace bulkhead::cli {
namespace {

using nlohmann::json;

json worker(const std::string& id, int pid, const std::string& state, int jobs = 0) {
  return {{"id", id},
          {"pid", pid},
          {"state", state},
          {"jobs_served", jobs},
          {"age_s", 65.0},
          {"sample", {{"rss_bytes", 50 << 20}, {"threads", 3}, {"maps", 120}, {"fds", 9}}}};
}

json pool(const std::string& name, json workers, json counters = json::object(),
          json events = json::array()) {
  json base = {{"submitted", 0}, {"ok", 0}, {"handler_error", 0}, {"crashed", 0}, {"hung", 0}};
  base.update(counters);
  return {{"name", name},
          {"mode", "spawn"},
          {"zygote", nullptr},
          {"workers_target", workers.size()},
          {"ready_workers", workers.size()},
          {"breaker", "closed"},
          {"queue_length", 0},
          {"in_flight", 0},
          {"counters", base},
          {"workers", std::move(workers)},
          {"events", std::move(events)}};
}

TopSnapshot snapshot(json pools, double at = 100, double uptime = 3725) {
  return {{{"pools", std::move(pools)}, {"uptime_s", uptime}, {"shutting_down", false}}, at};
}

std::vector<std::string> render(const TopSnapshot* current, const TopSnapshot* previous = nullptr,
                                int width = 150, int height = 45) {
  TopFrameInput in;
  in.url = "http://127.0.0.1:8787";
  in.current = current;
  in.previous = previous;
  in.width = width;
  in.height = height;
  return renderTopFrame(in);
}

std::string joined(const std::vector<std::string>& lines) {
  std::ostringstream out;
  for (const auto& l : lines) out << l << "\n";
  return out.str();
}

// The cells of the first row whose first word is `first`.
std::vector<std::string> rowOf(const std::vector<std::string>& lines, const std::string& first) {
  for (const auto& line : lines) {
    std::istringstream in(line);
    std::vector<std::string> words;
    for (std::string w; in >> w;) words.push_back(w);
    if (!words.empty() && words[0] == first) return words;
  }
  return {};
}

// The first line whose first word is `first`.
std::string lineOf(const std::vector<std::string>& lines, const std::string& first) {
  for (const auto& line : lines) {
    if (line.rfind(first + " ", 0) == 0) return line;
  }
  return "";
}

std::size_t indexOf(const std::vector<std::string>& lines, const std::string& needle) {
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find(needle) != std::string::npos) return i;
  }
  return lines.size();
}

TEST(TopView, ShowsTheHeaderPoolsAndWorkers) {
  auto s =
      snapshot(json::array({pool("faces", json::array({worker("faces-1", 4242, "idle", 5),
                                                       worker("faces-2", 4243, "busy", 7)}))}));
  auto lines = render(&s);
  std::string text = joined(lines);
  EXPECT_NE(lines[0].find("http://127.0.0.1:8787"), std::string::npos) << text;
  EXPECT_NE(lines[0].find("up 1h02m"), std::string::npos) << text;
  EXPECT_NE(lines[0].find("ready 2/2"), std::string::npos) << text;
  EXPECT_EQ(rowOf(lines, "faces"), (std::vector<std::string>{"faces", "spawn", "2/2", "0", "0",
                                                             "closed", "-", "0", "0", "-"}))
      << text;
  EXPECT_EQ(rowOf(lines, "faces-1"),
            (std::vector<std::string>{"faces-1", "4242", "idle", "1m05s", "5", "50.0MiB", "3",
                                      "120", "9", "-"}))
      << text;
  EXPECT_FALSE(rowOf(lines, "faces-2").empty()) << text;
}

TEST(TopView, APoolWithStandbysShowsHowManyAreReady) {
  json p = pool("faces",
                json::array({worker("faces-1", 4242, "idle"), worker("faces-3", 4244, "standby"),
                             worker("faces-4", 4245, "starting")}));
  p["workers_target"] = 1;
  p["ready_workers"] = 1;
  p["standby_target"] = 2;
  auto s = snapshot(json::array({p}));
  auto lines = render(&s);
  ASSERT_GE(rowOf(lines, "faces").size(), 3u) << joined(lines);
  EXPECT_EQ(rowOf(lines, "faces")[2], "1/1+1") << joined(lines);
  EXPECT_EQ(rowOf(lines, "faces-3")[2], "standby") << joined(lines);
}

TEST(TopView, CountsOkFailedAndEachFailureOutcome) {
  auto s = snapshot(json::array({pool("p", json::array({worker("p-1", 10, "idle")}),
                                      {{"ok", 12}, {"crashed", 2}, {"hung", 1}})}));
  auto lines = render(&s);
  auto row = rowOf(lines, "p");
  ASSERT_GE(row.size(), 9u) << joined(lines);
  EXPECT_EQ(row[7], "12");  // OK
  EXPECT_EQ(row[8], "3");   // FAILED
  EXPECT_NE(lineOf(lines, "p").find("crashed 2, hung 1"), std::string::npos) << joined(lines);
  EXPECT_NE(lines[1].find("jobs 15 done: 12 ok, 3 failed"), std::string::npos) << lines[1];
}

TEST(TopView, JobsPerSecondComeFromTheCountersChange) {
  auto before = snapshot(json::array({pool("p", json::array(), {{"ok", 10}})}), 10, 50);
  auto after =
      snapshot(json::array({pool("p", json::array(), {{"ok", 28}, {"crashed", 2}})}), 12, 52);
  auto lines = render(&after, &before);
  EXPECT_NE(lines[1].find("jobs/s 10"), std::string::npos) << lines[1];
  EXPECT_EQ(rowOf(lines, "p")[6], "10") << joined(lines);

  auto first = render(&after);
  EXPECT_NE(first[1].find("jobs/s -"), std::string::npos) << first[1];
}

TEST(TopView, ARestartedDaemonHasNoRateUntilTheNextAnswer) {
  auto before = snapshot(json::array({pool("p", json::array(), {{"ok", 100}})}), 10, 500);
  auto after = snapshot(json::array({pool("p", json::array(), {{"ok", 3}})}), 12, 1);
  auto lines = render(&after, &before);
  EXPECT_NE(lines[1].find("jobs/s -"), std::string::npos) << lines[1];
}

TEST(TopView, LastFailuresAreNewestFirstAndOnlyFailures) {
  json events = json::array({
      {{"kind", "started"}, {"worker", "p-1"}, {"detail", "pid 10"}, {"age_s", 30.0}},
      {{"kind", "crashed"}, {"worker", "p-1"}, {"detail", "SIGSEGV"}, {"age_s", 20.0}},
      {{"kind", "ready"}, {"worker", "p-2"}, {"detail", "ready"}, {"age_s", 19.0}},
      {{"kind", "hung"}, {"worker", "p-2"}, {"detail", "no heartbeat"}, {"age_s", 4.0}},
      {{"kind", "recycled"}, {"worker", "p-2"}, {"detail", "rss"}, {"age_s", 3.0}},
      {{"kind", "breaker_opened"}, {"worker", ""}, {"detail", "5 failures"}, {"age_s", 2.0}},
  });
  auto s = snapshot(json::array({pool("p", json::array(), json::object(), events)}));
  auto lines = render(&s);
  std::size_t title = indexOf(lines, "LAST FAILURES");
  ASSERT_LT(title + 4, lines.size()) << joined(lines);
  EXPECT_EQ(rowOf({lines[title + 2]}, "2s")[2], "breaker_opened") << joined(lines);
  EXPECT_EQ(rowOf({lines[title + 2]}, "2s")[3], "-") << joined(lines);
  EXPECT_NE(lines[title + 3].find("hung"), std::string::npos) << joined(lines);
  EXPECT_NE(lines[title + 4].find("crashed"), std::string::npos) << joined(lines);
  EXPECT_NE(lines[title + 4].find("SIGSEGV"), std::string::npos) << joined(lines);
  EXPECT_EQ(title + 5, lines.size()) << joined(lines);  // started, ready, recycled: not failures
}

TEST(TopView, NoFailuresSaysNone) {
  auto s = snapshot(json::array({pool("p", json::array())}));
  auto lines = render(&s);
  std::size_t title = indexOf(lines, "LAST FAILURES");
  ASSERT_LT(title + 2, lines.size()) << joined(lines);
  EXPECT_EQ(lines[title + 2], "(none)");
}

TEST(TopView, EveryLineFitsTheWidth) {
  json events = json::array(
      {{{"kind", "crashed"}, {"worker", "p-1"}, {"detail", std::string(500, 'x')}, {"age_s", 1}}});
  auto s = snapshot(
      json::array({pool("p", json::array({worker("p-1", 10, "idle")}), json::object(), events)}));
  for (int width : {20, 40, 79}) {
    for (const auto& line : render(&s, nullptr, width)) {
      EXPECT_LE(line.size(), static_cast<std::size_t>(width)) << line;
    }
  }
}

TEST(TopView, AShortTerminalCutsTablesAndSaysHowManyRowsAreLeftOut) {
  json workers = json::array(), events = json::array();
  for (int i = 1; i <= 30; ++i) {
    workers.push_back(worker("p-" + std::to_string(i), 1000 + i, "idle"));
    events.push_back({{"kind", "crashed"}, {"worker", "p-1"}, {"detail", "d"}, {"age_s", 100 - i}});
  }
  auto s = snapshot(json::array({pool("p", workers, json::object(), events)}));
  auto lines = render(&s, nullptr, 100, 20);
  std::string text = joined(lines);
  EXPECT_EQ(lines.size(), 20u) << text;
  EXPECT_NE(text.find("more workers"), std::string::npos) << text;
  EXPECT_NE(text.find("more failures"), std::string::npos) << text;
  EXPECT_FALSE(rowOf(lines, "p").empty()) << text;
  // The failures keep a few rows however many workers there are.
  std::size_t title = indexOf(lines, "LAST FAILURES");
  EXPECT_LE(title + 3, lines.size() - 1) << text;
  // Rows shown plus the count of those left out is every worker.
  int shown = 0;
  for (int i = 1; i <= 30; ++i) shown += !rowOf(lines, "p-" + std::to_string(i)).empty();
  std::size_t more = indexOf(lines, "more workers");
  EXPECT_EQ(shown + std::stoi(lines[more].substr(4)), 30) << text;
}

TEST(TopView, ATinyTerminalStillGetsAtMostItsHeight) {
  auto s = snapshot(json::array({pool("p", json::array({worker("p-1", 10, "idle")}))}));
  for (int height : {1, 2, 5, 8})
    EXPECT_LE(render(&s, nullptr, 80, height).size(), static_cast<std::size_t>(height));
}

TEST(TopView, APlainFrameShowsEveryWorkerAndAtMostTwentyFailures) {
  json workers = json::array(), events = json::array();
  for (int i = 1; i <= 40; ++i) {
    workers.push_back(worker("p-" + std::to_string(i), 1000 + i, "idle"));
    events.push_back({{"kind", "crashed"}, {"worker", "p-1"}, {"detail", "d"}, {"age_s", 100 - i}});
  }
  auto s = snapshot(json::array({pool("p", workers, json::object(), events)}));
  TopFrameInput in;
  in.url = "unix:/run/bulkhead.sock";
  in.current = &s;
  in.width = 1 << 20;
  in.height = 0;
  in.live = false;
  auto lines = renderTopFrame(in);
  std::string text = joined(lines);
  for (int i = 1; i <= 40; ++i) EXPECT_FALSE(rowOf(lines, "p-" + std::to_string(i)).empty());
  EXPECT_NE(text.find("... 21 more failures"), std::string::npos) << text;
  EXPECT_EQ(text.find("q: quit"), std::string::npos) << text;
}

TEST(TopView, AnUnreachableDaemonIsShownWithItsError) {
  TopOutage outage{"cannot talk to bulkhead at http://127.0.0.1:9: Connection refused", 4, 3.5};
  TopFrameInput in;
  in.url = "http://127.0.0.1:9";
  in.outage = &outage;
  in.width = 80;
  std::string text = joined(renderTopFrame(in));
  EXPECT_NE(text.find("DAEMON UNREACHABLE for 3s (4 tries), retrying"), std::string::npos) << text;
  EXPECT_NE(text.find("Connection refused"), std::string::npos) << text;

  // With an earlier answer, that answer stays below, said to be the last one.
  auto s = snapshot(json::array({pool("faces", json::array({worker("faces-1", 42, "idle")}))}));
  in.current = &s;
  text = joined(renderTopFrame(in));
  EXPECT_NE(text.find("its last answer"), std::string::npos) << text;
  EXPECT_NE(text.find("faces-1"), std::string::npos) << text;
}

TEST(TopView, AZygotePoolNotReadyAndASpawningWorkerWithoutPid) {
  json p = pool("z", json::array({worker("z-1", 0, "spawning")}));
  p["mode"] = "zygote";
  p["zygote"] = {{"state", "starting"}, {"pid", nullptr}};
  p["workers"][0]["pid"] = nullptr;
  p["workers"][0].erase("sample");
  auto s = snapshot(json::array({p}));
  auto lines = render(&s);
  EXPECT_EQ(rowOf(lines, "z")[1], "zygote:starting") << joined(lines);
  EXPECT_EQ(rowOf(lines, "z-1"), (std::vector<std::string>{"z-1", "-", "spawning", "1m05s", "0",
                                                           "-", "-", "-", "-", "-"}))
      << joined(lines);
}

TEST(TopView, FitToWidthReplacesControlCharactersAndKeepsCharactersWhole) {
  EXPECT_EQ(fitToWidth("a\x1b[2Jb\tc\n", 80), "a [2Jb c ");
  EXPECT_EQ(fitToWidth("\xc2\x9b"
                       "31m",
                       80),
            " 31m");                                      // C1 CSI
  EXPECT_EQ(fitToWidth("h\xc3\xa9llo", 2), "h\xc3\xa9");  // é is one column, never split
  EXPECT_EQ(fitToWidth("abc", 0), "");
  EXPECT_EQ(fitToWidth("\xff"
                       "a",
                       5),
            " a");  // not UTF-8: a space, not a broken character
}

TEST(TopView, FormatAge) {
  EXPECT_EQ(formatAge(0), "0s");
  EXPECT_EQ(formatAge(59.9), "59s");
  EXPECT_EQ(formatAge(185), "3m05s");
  EXPECT_EQ(formatAge(7620), "2h07m");
  EXPECT_EQ(formatAge(273600), "3d04h");
  EXPECT_EQ(formatAge(-1), "0s");
}

TEST(TopView, FailureKindsAreTheOperatorLogsWarnings) {
  for (const char* kind : {"crashed", "hung", "timed_out", "oom_killed", "resource_exhausted",
                           "start_failed", "died", "poisoned", "breaker_opened", "zygote_died"}) {
    EXPECT_TRUE(isFailureEvent(kind)) << kind;
  }
  for (const char* kind :
       {"started", "ready", "zygote_ready", "cancelled", "recycled", "breaker_closed"}) {
    EXPECT_FALSE(isFailureEvent(kind)) << kind;
  }
}

}  // namespace
}  // namespace bulkhead::cli
