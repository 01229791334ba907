// The shell on simulated time, the zygote driver: the zygote is started, FORK requests carry the
// new worker's fds once it is READY, a FORKED pid becomes a worker like a spawned one, a dead
// zygote is restarted with backoff, and an exit reaped before the FORKED that names it is claimed
// by it (docs/protocol.md, "Zygote"; core/zygote_lifecycle.h decides when).

#include <csignal>
#include <nlohmann/json.hpp>

#include "testlib/shell_fixture.h"

namespace bulkhead::testlib {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using proto::FrameType;

constexpr const char* kZygotePool = R"(
[pool.p]
handler = "h:handle"
preload = "h:preload"
python = "/usr/bin/python3"
mode = "zygote"
workers = 1
retries = 0
startup_timeout = "30s"
)";

class ZygoteTest : public ShellTest {
 protected:
  // The FORK requests the zygote has been sent since the last call, with their fds.
  struct Fork {
    std::uint64_t request;
    json body;
    std::vector<os::UniqueFd> fds;
  };
  std::vector<Fork> forksTo(pid_t zygote) {
    auto got = host_->receivedWithFds(zygote);
    std::vector<Fork> forks;
    std::size_t fd = 0;
    for (auto& frame : got.frames) {
      if (frame.type != FrameType::kFork) continue;
      Fork f{frame.jobId, json::parse(frame.body), {}};
      const std::size_t count = f.body["fds"].get<std::size_t>();
      for (std::size_t i = 0; i < count && fd < got.fds.size(); ++i) {
        f.fds.push_back(std::move(got.fds[fd++]));
      }
      forks.push_back(std::move(f));
    }
    return forks;
  }
  void forked(pid_t zygote, std::uint64_t request, pid_t pid) {
    host_->send(zygote, FrameType::kForked, request, json{{"pid", pid}}.dump());
  }
  std::vector<core::PoolEvent> events(const std::string& kind) {
    std::vector<core::PoolEvent> out;
    shell_->visitPool("p", [&](const runtime::Supervisor::PoolView& view) {
      for (const auto& e : view.pool.recentEvents()) {
        if (e.kind == kind) out.push_back(e);
      }
    });
    return out;
  }
};

TEST_F(ZygoteTest, AReadyZygoteIsAskedToForkAndItsChildServesJobs) {
  startShell(kZygotePool);
  const pid_t zygote = pidOf("p-zygote");
  ASSERT_GT(zygote, 0);
  ASSERT_EQ(host_->spawned().size(), 1u);  // workers come from the zygote, not from exec
  bool runsZygote = false;
  for (const auto& arg : host_->process(zygote).spec.argv) {
    runsZygote |= arg.find("'bulkhead.zygote'") != std::string::npos;
  }
  EXPECT_TRUE(runsZygote);
  EXPECT_TRUE(forksTo(zygote).empty());  // not before it is READY

  host_->ready(zygote);
  auto forks = forksTo(zygote);
  ASSERT_EQ(forks.size(), 1u);
  EXPECT_EQ(forks[0].body["worker"], "p-1");
  ASSERT_EQ(forks[0].fds.size(), 4u);  // control, stdout, stderr, stacks; no cgroup here

  host_->adopt(5000, std::move(forks[0].fds));
  forked(zygote, forks[0].request, 5000);
  host_->ready(5000);
  const core::JobId job = submit("p", "hello");
  auto jobs = framesOf(5000, FrameType::kJob);
  ASSERT_EQ(jobs.size(), 1u);
  host_->send(5000, FrameType::kResultText, job, "hi");
  ASSERT_NE(report(job), nullptr);
  EXPECT_EQ(report(job)->outcome, core::Outcome::kOk);
  EXPECT_EQ(report(job)->attempts.at(0).pid, 5000);

  // A worker of the zygote dies like a spawned one: its replacement is another FORK.
  host_->exit(5000, killedBy(SIGKILL));
  EXPECT_EQ(forksTo(zygote).size(), 1u);
}

TEST_F(ZygoteTest, ADeadZygoteIsRestartedWithBackoff) {
  startShell(kZygotePool);
  const pid_t first = pidOf("p-zygote");
  host_->ready(first);
  auto forks = forksTo(first);
  ASSERT_EQ(forks.size(), 1u);
  host_->adopt(5000, std::move(forks[0].fds));
  forked(first, forks[0].request, 5000);  // it worked once: its next death restarts at once

  host_->exit(first, killedBy(SIGSEGV));
  EXPECT_EQ(events("zygote_died").size(), 1u);
  host_->advance(0s);
  const pid_t second = pidOf("p-zygote");
  ASSERT_GT(second, 0);
  EXPECT_NE(second, first);

  // Dies before READY: each further death waits longer (100 ms, then 200 ms ...).
  const core::Time died = host_->now();
  host_->exit(second, exitedWith(1));
  host_->advanceTo(died + 100ms - 1ms);
  EXPECT_EQ(pidOf("p-zygote"), -1);
  host_->advanceTo(died + 100ms);
  const pid_t third = pidOf("p-zygote");
  ASSERT_GT(third, 0);

  host_->exit(third, exitedWith(1));
  host_->advanceTo(died + 300ms - 1ms);
  EXPECT_EQ(pidOf("p-zygote"), -1);
  host_->advanceTo(died + 300ms);
  EXPECT_GT(pidOf("p-zygote"), 0);
}

TEST_F(ZygoteTest, AZygoteThatNeverGetsReadyIsKilledAtStartupTimeout) {
  startShell(kZygotePool);
  const pid_t zygote = pidOf("p-zygote");
  host_->hello(zygote);
  host_->advanceTo(start_ + 30s - 1ms);
  EXPECT_TRUE(signalsTo(zygote).empty());
  host_->advanceTo(start_ + 30s);
  auto signals = signalsTo(zygote);
  ASSERT_FALSE(signals.empty());
  EXPECT_EQ(signals[0].signal, SIGKILL);
  EXPECT_TRUE(signals[0].group);
  EXPECT_EQ(events("zygote_died").size(), 1u);
}

TEST_F(ZygoteTest, AnExitReapedBeforeItsForkedFrameIsClaimedByIt) {
  startShell(kZygotePool);
  const pid_t zygote = pidOf("p-zygote");
  host_->ready(zygote);
  auto forks = forksTo(zygote);
  ASSERT_EQ(forks.size(), 1u);

  // The forked worker crashed at once, and SIGCHLD was handled before FORKED was read.
  host_->adopt(5000, std::move(forks[0].fds));
  host_->exit(5000, killedBy(SIGSEGV));
  EXPECT_EQ(shell_->orphansReaped(), 1u);  // a stranger, for now
  forked(zygote, forks[0].request, 5000);

  EXPECT_EQ(shell_->orphansReaped(), 0u);  // it was ours after all
  auto failed = events("start_failed");    // with its own exit status as the evidence
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].pid, 5000);
  EXPECT_NE(failed[0].detail.find("SIGSEGV"), std::string::npos);
  EXPECT_EQ(forksTo(zygote).size(), 1u);  // and it is replaced
}

TEST_F(ZygoteTest, AnUnclaimedExitExpiresAndALateForkedIsAVanishedWorker) {
  startShell(kZygotePool);
  const pid_t zygote = pidOf("p-zygote");
  host_->ready(zygote);
  auto forks = forksTo(zygote);
  host_->adopt(5000, std::move(forks[0].fds));
  forked(zygote, forks[0].request, 5000);
  host_->ready(5000);

  host_->exit(6000, killedBy(SIGKILL));  // a stranger's exit, kept for a FORKED to claim
  host_->advance(11s);
  host_->exit(6001, killedBy(SIGKILL));  // another: the first one has expired by now
  EXPECT_EQ(shell_->orphansReaped(), 2u);

  host_->exit(5000, killedBy(SIGKILL));  // the worker dies; its replacement is asked for
  forks = forksTo(zygote);
  ASSERT_EQ(forks.size(), 1u);
  forked(zygote, forks[0].request, 6000);  // names the long-gone pid: not taken as its exit
  auto failed = events("start_failed");
  ASSERT_FALSE(failed.empty());
  EXPECT_NE(failed.back().detail.find("vanished before it was seen"), std::string::npos);
  EXPECT_EQ(shell_->orphansReaped(), 2u);
}

TEST_F(ZygoteTest, AForkedPidThatIsNotOurChildIsRefusedAndTheZygoteKilled) {
  startShell(kZygotePool);
  const pid_t zygote = pidOf("p-zygote");
  host_->ready(zygote);
  auto forks = forksTo(zygote);
  ASSERT_EQ(forks.size(), 1u);
  host_->stranger(4242, os::ProcessIds{1, 4242});  // someone else's process
  forked(zygote, forks[0].request, 4242);

  EXPECT_TRUE(signalsTo(4242).empty());  // never signalled: it is not ours
  auto signals = signalsTo(zygote);
  ASSERT_FALSE(signals.empty());
  EXPECT_EQ(signals.back().signal, SIGKILL);
  auto died = events("zygote_died");
  ASSERT_EQ(died.size(), 1u);
  EXPECT_NE(died[0].detail.find("not a child of the supervisor"), std::string::npos);
}

TEST_F(ZygoteTest, APermanentRefusalWithSpawnFallbackStartsWorkersByExec) {
  startShell(std::string(kZygotePool) + "zygote_fallback = \"spawn\"\n");
  const pid_t zygote = pidOf("p-zygote");
  host_->ready(zygote);
  auto forks = forksTo(zygote);
  ASSERT_EQ(forks.size(), 1u);
  host_->send(zygote, FrameType::kForkRefused, forks[0].request,
              R"({"message": "CUDA is initialised in the zygote", "permanent": true})");

  const pid_t worker = pidOf("p-1");  // spawned by exec, as in spawn mode
  ASSERT_GT(worker, 0);
  EXPECT_NE(worker, zygote);
  EXPECT_EQ(events("zygote_fallback").size(), 1u);
  host_->ready(worker);
  const core::JobId job = submit("p", "x");
  host_->send(worker, FrameType::kResultBytes, job, "y");
  ASSERT_NE(report(job), nullptr);
  EXPECT_EQ(report(job)->outcome, core::Outcome::kOk);
}

}  // namespace
}  // namespace bulkhead::testlib
