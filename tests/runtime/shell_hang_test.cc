// The shell on simulated time, hang detection and the event stream: heartbeats reach the core as
// they arrive, a job that stops making progress for hang_after is killed as hung (stacks first),
// and every pool event reaches the subscribers of GET /v1/events with its worker's pid.

#include <csignal>
#include <nlohmann/json.hpp>

#include "runtime/worker_spec.h"
#include "testlib/shell_fixture.h"

namespace bulkhead::testlib {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using proto::FrameType;

constexpr const char* kPool = R"(
[pool.p]
handler = "h:handle"
python = "/usr/bin/python3"
workers = 1
retries = 0
job_timeout = "60s"
hang_after = "3s"
)";

class HangTest : public ShellTest {
 protected:
  void beat(pid_t pid, core::JobId job, int progress) {
    host_->send(pid, FrameType::kHeartbeat, job,
                json{{"progress", progress}, {"cpu_seconds", 0.5}, {"stack", "h.py:3"}}.dump());
  }
};

TEST_F(HangTest, AJobSilentForHangAfterIsKilledAsHung) {
  startShell(kPool);
  const pid_t pid = pidOf("p-1");
  host_->ready(pid);
  const core::JobId job = submit("p", "x");
  const core::Time sent = host_->now();
  host_->advanceTo(sent + 1s);
  beat(pid, job, 1);
  host_->advanceTo(sent + 2s);
  beat(pid, job, 2);  // the last sign of life

  host_->advanceTo(sent + 5s - 1ms);
  EXPECT_TRUE(signalsTo(pid).empty());  // its heartbeats moved the deadline on
  host_->advanceTo(sent + 5s);
  auto signals = signalsTo(pid);
  ASSERT_EQ(signals.size(), 1u);
  EXPECT_EQ(signals[0].signal, runtime::kDumpSignal);

  host_->advanceTo(sent + 5s + 200ms);
  host_->exit(pid, killedBy(SIGTERM));
  const core::JobReport* r = report(job);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->outcome, core::Outcome::kHung);
  ASSERT_EQ(r->attempts.size(), 1u);
  EXPECT_NE(r->attempts[0].cause.find("no heartbeat for 3000 ms"), std::string::npos);
}

TEST_F(HangTest, HeartbeatsWithoutProgressDoNotKeepAJobAlive) {
  startShell(kPool);
  const pid_t pid = pidOf("p-1");
  host_->ready(pid);
  const core::JobId job = submit("p", "x");
  const core::Time sent = host_->now();
  for (int second = 1; second <= 4; ++second) {
    host_->advanceTo(sent + std::chrono::seconds(second));
    beat(pid, job, 7);  // alive, but stuck on the same line with the same CPU time
  }
  auto signals = signalsTo(pid);
  ASSERT_EQ(signals.size(), 1u);
  EXPECT_EQ(signals[0].at, sent + 4s);  // 3 s after the first beat, the last that moved
}

TEST_F(HangTest, PoolEventsReachSubscribersWithTheirPid) {
  startShell(kPool);
  std::vector<json> seen;
  shell_->subscribeEvents(0, [&](std::uint64_t, const json& event) { seen.push_back(event); });
  const pid_t pid = pidOf("p-1");
  host_->ready(pid);
  host_->exit(pid, killedBy(SIGKILL));
  std::vector<std::string> kinds;
  for (const auto& e : seen) {
    kinds.push_back(e["kind"]);
    EXPECT_EQ(e["pool"], "p");
  }
  ASSERT_GE(kinds.size(), 3u);
  EXPECT_EQ(kinds[0], "started");
  EXPECT_EQ(kinds[1], "ready");
  EXPECT_EQ(seen[1]["pid"], pid);
  EXPECT_EQ(kinds[2], "died");
}

}  // namespace
}  // namespace bulkhead::testlib
