// The shell on simulated time, one worker's life: a crash mid-job and its retry on a fresh
// process, a worker that never gets ready, a worker that breaks the protocol, and the drain at
// shutdown (docs/design.md, "The life of a job" and "Shutdown").

#include <csignal>

#include "runtime/worker_spec.h"
#include "testlib/shell_fixture.h"

namespace bulkhead::testlib {
namespace {

using namespace std::chrono_literals;
using proto::FrameType;

constexpr const char* kPool = R"(
[pool.p]
handler = "h:handle"
python = "/usr/bin/python3"
workers = 1
retries = 1
startup_timeout = "5s"
kill_grace = "1s"
)";

TEST_F(ShellTest, ACrashMidJobIsRetriedOnAFreshWorker) {
  startShell(kPool);
  const pid_t first = pidOf("p-1");
  ASSERT_GT(first, 0);
  host_->ready(first);
  const core::JobId job = submit("p", "boom once");
  ASSERT_EQ(framesOf(first, FrameType::kJob).size(), 1u);

  host_->writeStderr(first, "Fatal Python error: Segmentation fault\n");
  host_->exit(first, killedBy(SIGSEGV) | 0x80);  // core dumped
  EXPECT_EQ(report(job), nullptr);               // a retry is due, not an answer
  ASSERT_EQ(host_->spawned().size(), 2u);        // replaced at once: the death was the job's
  const pid_t second = host_->spawned()[1];
  EXPECT_NE(second, first);

  host_->ready(second);
  auto jobs = framesOf(second, FrameType::kJob);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].jobId, job);
  EXPECT_EQ(jobs[0].body, "boom once");
  host_->send(second, FrameType::kResultText, job, "fine");

  const core::JobReport* r = report(job);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->outcome, core::Outcome::kOk);
  EXPECT_EQ(r->result->bytes(), "fine");
  ASSERT_EQ(r->attempts.size(), 2u);
  EXPECT_EQ(r->attempts[0].outcome, core::Outcome::kCrashed);
  EXPECT_EQ(r->attempts[0].pid, first);
  EXPECT_EQ(r->attempts[0].exit.signal, SIGSEGV);
  EXPECT_TRUE(r->attempts[0].exit.coreDumped);
  EXPECT_NE(r->attempts[0].exit.stderrTail.find("Segmentation fault"), std::string::npos);
}

TEST_F(ShellTest, ACrashWithNoRetryLeftEndsTheJobCrashed) {
  startShell(kPool);
  host_->ready(pidOf("p-1"));
  const core::JobId job = submit("p", "boom always");
  host_->exit(pidOf("p-1"), exitedWith(3));
  host_->ready(pidOf("p-2"));
  host_->exit(pidOf("p-2"), exitedWith(3));
  const core::JobReport* r = report(job);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->outcome, core::Outcome::kCrashed);
  ASSERT_EQ(r->attempts.size(), 2u);
  EXPECT_EQ(r->attempts[1].exit.exitCode, 3);
}

TEST_F(ShellTest, AWorkerThatNeverGetsReadyIsKilledAtStartupTimeout) {
  startShell(kPool);
  const pid_t pid = pidOf("p-1");
  host_->hello(pid);  // and nothing more
  host_->advanceTo(start_ + 5s - 1ms);
  EXPECT_TRUE(signalsTo(pid).empty());
  // The same ladder as a job's timeout: where its preload hangs, then SIGTERM, then SIGKILL.
  host_->advanceTo(start_ + 5s);
  auto signals = signalsTo(pid);
  ASSERT_EQ(signals.size(), 1u);
  EXPECT_EQ(signals[0].signal, runtime::kDumpSignal);
  host_->advanceTo(start_ + 5s + 200ms);
  host_->advanceTo(start_ + 6s + 200ms);
  signals = signalsTo(pid);
  ASSERT_EQ(signals.size(), 3u);
  EXPECT_EQ(signals[1].signal, SIGTERM);
  EXPECT_EQ(signals[1].at, start_ + 5s + 200ms);
  EXPECT_EQ(signals[2].signal, SIGKILL);
  EXPECT_EQ(signals[2].at, start_ + 6s + 200ms);
  host_->exit(pid, killedBy(SIGKILL));
  EXPECT_GT(pidOf("p-2"), 0);
}

TEST_F(ShellTest, AMalformedFrameKillsOnlyThatWorker) {
  startShell(std::string(kPool) +
             "\n[pool.q]\nhandler = \"h:handle\"\npython = \"/usr/bin/python3\"\n");
  const pid_t bad = pidOf("p-1");
  const pid_t good = pidOf("q-1");
  ASSERT_GT(good, 0);
  host_->ready(bad);
  host_->ready(good);
  host_->writeBytes(bad, "this is not a frame header at all");
  // Its group is terminated at once (no stacks: it was not stuck), SIGKILL after kill_grace.
  const core::Time caught = host_->now();
  auto signals = signalsTo(bad);
  ASSERT_EQ(signals.size(), 1u);
  EXPECT_EQ(signals[0].signal, SIGTERM);
  EXPECT_TRUE(signals[0].group);
  host_->advanceTo(caught + 1s);
  signals = signalsTo(bad);
  ASSERT_EQ(signals.size(), 2u);
  EXPECT_EQ(signals[1].signal, SIGKILL);
  EXPECT_TRUE(signalsTo(good).empty());

  // The other pool's worker still serves.
  const core::JobId job = submit("q", "hi");
  ASSERT_EQ(framesOf(good, FrameType::kJob).size(), 1u);
  host_->send(good, FrameType::kResultBytes, job, "hi");
  ASSERT_NE(report(job), nullptr);
  EXPECT_EQ(report(job)->outcome, core::Outcome::kOk);

  host_->exit(bad, killedBy(SIGKILL));
  EXPECT_GT(pidOf("p-2"), 0);  // and the bad one is replaced
}

TEST_F(ShellTest, ShutdownLetsTheRunningJobEndThenStopsTheWorker) {
  startShell(kPool);
  const pid_t pid = pidOf("p-1");
  host_->ready(pid);
  const core::JobId job = submit("p", "slow");
  ASSERT_EQ(framesOf(pid, FrameType::kJob).size(), 1u);
  bool stopped = false;
  shell_->shutdown([&] { stopped = true; });
  host_->settle();
  EXPECT_TRUE(framesOf(pid, FrameType::kShutdown).empty());  // busy: after its job

  host_->send(pid, FrameType::kResultBytes, job, "done");
  ASSERT_NE(report(job), nullptr);
  EXPECT_EQ(report(job)->outcome, core::Outcome::kOk);
  EXPECT_EQ(framesOf(pid, FrameType::kShutdown).size(), 1u);
  EXPECT_FALSE(stopped);
  EXPECT_EQ(host_->spawned().size(), 1u);  // nothing is started while stopping

  host_->exit(pid, exitedWith(0));
  EXPECT_TRUE(stopped);
}

TEST_F(ShellTest, AWorkerIgnoringShutdownIsTerminatedAfterTheGrace) {
  startShell(kPool);
  const pid_t pid = pidOf("p-1");
  host_->ready(pid);
  bool stopped = false;
  shell_->shutdown([&] { stopped = true; });
  EXPECT_EQ(framesOf(pid, FrameType::kShutdown).size(), 1u);
  const core::Time asked = host_->now();
  host_->advanceTo(asked + 5s - 1ms);  // stop_grace
  EXPECT_TRUE(signalsTo(pid).empty());
  host_->advanceTo(asked + 5s);
  auto signals = signalsTo(pid);
  ASSERT_EQ(signals.size(), 1u);
  EXPECT_EQ(signals[0].signal, SIGTERM);
  host_->exit(pid, killedBy(SIGTERM));
  EXPECT_TRUE(stopped);
}

}  // namespace
}  // namespace bulkhead::testlib
