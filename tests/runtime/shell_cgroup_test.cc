// The shell on simulated time with (fake) cgroups: each worker gets its own, with the pool's
// limits; at its death the cgroup's counters become the exit's evidence (an OOM kill is
// oom_killed, not crashed) and the cgroup is removed; a cgroup that cannot be had fails the start
// only when the pool asked for limits (docs/design.md, "Hard limits and containment").

#include <csignal>

#include "testlib/fake_cgroups.h"
#include "testlib/shell_fixture.h"

namespace bulkhead::testlib {
namespace {

using proto::FrameType;

constexpr const char* kLimited = R"(
[pool.p]
handler = "h:handle"
python = "/usr/bin/python3"
workers = 1
retries = 0
memory_limit = "256MiB"
)";

TEST_F(ShellTest, AnOomKilledWorkerEndsItsJobOomKilledAndItsCgroupIsRemoved) {
  auto owned = std::make_unique<FakeCgroups>();
  FakeCgroups& cgroups = *owned;
  startShell(kLimited, std::move(owned));
  ASSERT_EQ(cgroups.created.size(), 1u);
  EXPECT_EQ(cgroups.created[0].first, "p-1");
  EXPECT_EQ(cgroups.created[0].second.memoryBytes, 256ull << 20);

  const pid_t pid = pidOf("p-1");
  host_->ready(pid);
  const core::JobId job = submit("p", "allocate a lot");
  ASSERT_EQ(framesOf(pid, FrameType::kJob).size(), 1u);
  cgroups.countersOf["p-1"].oomKills = 1;
  cgroups.countersOf["p-1"].memoryPeakBytes = 256ull << 20;
  host_->exit(pid, killedBy(SIGKILL));

  const core::JobReport* r = report(job);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->outcome, core::Outcome::kOomKilled);
  ASSERT_EQ(r->attempts.size(), 1u);
  EXPECT_TRUE(r->attempts[0].exit.oomKilled);
  EXPECT_EQ(r->attempts[0].exit.memoryPeakBytes, 256ull << 20);
  EXPECT_EQ(cgroups.removed, std::vector<std::string>{"p-1"});
  EXPECT_EQ(cgroups.created.size(), 2u);  // its replacement has its own
}

TEST_F(ShellTest, WithoutTheCgroupItsLimitsNeedAWorkerDoesNotStart) {
  auto owned = std::make_unique<FakeCgroups>();
  owned->refuse = "mkdir: Permission denied";
  startShell(kLimited, std::move(owned));
  EXPECT_TRUE(host_->spawned().empty());
  bool failed = false;
  shell_->visitPool("p", [&](const runtime::Supervisor::PoolView& view) {
    for (const auto& e : view.pool.recentEvents()) {
      failed |= e.kind == "start_failed" &&
                e.detail.find("cgroup: mkdir: Permission denied") != std::string::npos;
    }
  });
  EXPECT_TRUE(failed);
}

TEST_F(ShellTest, WithoutLimitsAWorkerStartsEvenWhenItsCgroupCannotBeHad) {
  auto owned = std::make_unique<FakeCgroups>();
  owned->refuse = "mkdir: Permission denied";
  startShell("[pool.p]\nhandler = \"h:handle\"\npython = \"/usr/bin/python3\"\nworkers = 1\n",
             std::move(owned));
  EXPECT_EQ(host_->spawned().size(), 1u);  // contained through /proc instead
}

}  // namespace
}  // namespace bulkhead::testlib
