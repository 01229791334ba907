// The shell on simulated time, a job's other endings: cancelled while queued or running, a
// worker that survives SIGKILL (D state) given up but still reaped, and a pool whose workers
// cannot start answering unavailable with the start failure as evidence.

#include <cerrno>
#include <csignal>

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
retries = 0
job_timeout = "2s"
kill_grace = "1s"
)";

TEST_F(ShellTest, CancellingARunningJobTerminatesItsWorker) {
  startShell(kPool);
  const pid_t pid = pidOf("p-1");
  host_->ready(pid);
  const core::JobId job = submit("p", "long");
  ASSERT_EQ(framesOf(pid, FrameType::kJob).size(), 1u);

  shell_->cancel(job);
  host_->settle();
  auto signals = signalsTo(pid);
  ASSERT_EQ(signals.size(), 1u);  // no stacks: it was not stuck
  EXPECT_EQ(signals[0].signal, SIGTERM);
  EXPECT_TRUE(signals[0].group);
  EXPECT_EQ(report(job), nullptr);

  host_->exit(pid, killedBy(SIGTERM));
  ASSERT_NE(report(job), nullptr);
  EXPECT_EQ(report(job)->outcome, core::Outcome::kCancelled);
  EXPECT_GT(pidOf("p-2"), 0);
}

TEST_F(ShellTest, CancellingAQueuedJobAnswersAtOnceAndTouchesNoWorker) {
  startShell(kPool);
  const pid_t pid = pidOf("p-1");
  host_->ready(pid);
  const core::JobId running = submit("p", "first");
  const core::JobId queued = submit("p", "second");
  shell_->cancel(queued);
  host_->settle();
  ASSERT_NE(report(queued), nullptr);
  EXPECT_EQ(report(queued)->outcome, core::Outcome::kCancelled);
  EXPECT_TRUE(signalsTo(pid).empty());
  EXPECT_EQ(report(running), nullptr);
  auto jobs = framesOf(pid, FrameType::kJob);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].jobId, running);
}

TEST_F(ShellTest, AWorkerThatSurvivesSigkillIsGivenUpButStillReaped) {
  startShell(kPool);
  const pid_t pid = pidOf("p-1");
  host_->ready(pid);
  const core::JobId job = submit("p", "stuck in the kernel");
  const core::Time sent = host_->now();
  host_->advanceTo(sent + 3s + 200ms);  // timeout, stacks, SIGTERM, SIGKILL
  ASSERT_EQ(signalsTo(pid).size(), 3u);
  EXPECT_EQ(report(job), nullptr);

  // 5 s after SIGKILL (D state): the job is settled without waiting for the exit.
  host_->advanceTo(sent + 8s + 200ms);
  ASSERT_NE(report(job), nullptr);
  EXPECT_EQ(report(job)->outcome, core::Outcome::kTimedOut);
  auto signals = signalsTo(pid);
  ASSERT_EQ(signals.size(), 4u);  // the shell lets go with one more SIGKILL
  EXPECT_EQ(signals[3].signal, SIGKILL);

  // When it does die, it is reaped as the worker it was, not as a stranger.
  host_->exit(pid, killedBy(SIGKILL));
  EXPECT_EQ(shell_->orphansReaped(), 0u);
}

TEST_F(ShellTest, APoolWhoseWorkersCannotStartAnswersUnavailableWithTheCause) {
  startShell(kPool);
  // The first worker could start; its replacements cannot (the interpreter was removed).
  host_->failSpawns = os::SpawnError{"exec", ENOENT};
  const pid_t pid = pidOf("p-1");
  host_->exit(pid, exitedWith(1));  // died before READY: a start failure
  host_->advance(10s);
  const core::JobId job = submit("p", "x");
  host_->advance(10s);
  const core::JobReport* r = report(job);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->outcome, core::Outcome::kUnavailable);
  ASSERT_TRUE(r->lastStartFailure.has_value());
  EXPECT_NE(r->lastStartFailure->cause.find("exec"), std::string::npos);
  EXPECT_EQ(host_->spawned().size(), 1u);
}

}  // namespace
}  // namespace bulkhead::testlib
