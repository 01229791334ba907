// The shell on simulated time: a job past its job_timeout is taken down by the kill ladder, each
// rung at its own time, and the report carries what the worker left (docs/design.md, "The life
// of a job", step 5).

#include <csignal>

#include "runtime/worker_spec.h"
#include "testlib/shell_fixture.h"

namespace bulkhead::testlib {
namespace {

using namespace std::chrono_literals;

constexpr const char* kPool = R"(
[pool.p]
handler = "h:handle"
python = "/usr/bin/python3"
workers = 1
job_timeout = "2s"
kill_grace = "1s"
retries = 0
)";

TEST_F(ShellTest, TimedOutJobClimbsTheKillLadderAtItsTimes) {
  startShell(kPool);
  ASSERT_EQ(host_->spawned().size(), 1u);
  const pid_t pid = host_->spawned()[0];
  host_->ready(pid);

  const core::JobId job = submit("p", "sleep forever");
  auto jobs = framesOf(pid, proto::FrameType::kJob);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].jobId, job);
  EXPECT_EQ(jobs[0].body, "sleep forever");
  const core::Time sent = host_->now();

  host_->advanceTo(sent + 2s - 1ms);
  EXPECT_TRUE(signalsTo(pid).empty());

  // job_timeout: the stacks are asked for (one process, through its pidfd) ...
  host_->advanceTo(sent + 2s);
  auto signals = signalsTo(pid);
  ASSERT_EQ(signals.size(), 1u);
  EXPECT_EQ(signals[0].signal, runtime::kDumpSignal);
  EXPECT_FALSE(signals[0].group);
  host_->writeStacks(pid, "Thread 0x1 (most recent call first):\n  File \"h.py\", line 3\n");

  // ... SIGTERM to the group once the dump had 200 ms to land ...
  host_->advanceTo(sent + 2s + 200ms - 1ms);
  EXPECT_EQ(signalsTo(pid).size(), 1u);
  host_->advanceTo(sent + 2s + 200ms);
  signals = signalsTo(pid);
  ASSERT_EQ(signals.size(), 2u);
  EXPECT_EQ(signals[1].signal, SIGTERM);
  EXPECT_TRUE(signals[1].group);

  // ... and SIGKILL after kill_grace, which it does not survive.
  host_->advanceTo(sent + 3s + 200ms - 1ms);
  EXPECT_EQ(signalsTo(pid).size(), 2u);
  host_->advanceTo(sent + 3s + 200ms);
  signals = signalsTo(pid);
  ASSERT_EQ(signals.size(), 3u);
  EXPECT_EQ(signals[2].signal, SIGKILL);
  EXPECT_TRUE(signals[2].group);
  EXPECT_EQ(signals[2].at, sent + 3s + 200ms);

  ASSERT_EQ(report(job), nullptr);  // settled when the process is gone, not before
  host_->exit(pid, killedBy(SIGKILL));
  const core::JobReport* r = report(job);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->outcome, core::Outcome::kTimedOut);
  EXPECT_EQ(r->stage, "running");
  ASSERT_EQ(r->attempts.size(), 1u);
  EXPECT_EQ(r->attempts[0].pid, pid);
  EXPECT_EQ(r->attempts[0].exit.signal, SIGKILL);
  EXPECT_NE(r->attempts[0].exit.stacks.find("h.py\", line 3"), std::string::npos);
}

TEST_F(ShellTest, TheReplacementIsSpawnedWhenTheKillStarts) {
  startShell(kPool);
  const pid_t pid = host_->spawned()[0];
  host_->ready(pid);
  submit("p", "sleep forever");
  const core::Time sent = host_->now();
  host_->advanceTo(sent + 2s);
  EXPECT_EQ(host_->spawned().size(), 2u);  // not when the old one is reaped
}

}  // namespace
}  // namespace bulkhead::testlib
