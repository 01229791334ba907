// cgroups: parsers on fixtures (tests/data/cgroup/), and detection and the manager's logic on an
// in-memory fake host that emulates the kernel's rules (tests/os/fake_cgroup_host.h) and on a
// fake host in a temp dir. The real manager on this machine's hierarchy is
// tests/os/cgroups_real_test.cc's. Every wait is bounded.

#include "os/cgroups.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "os/fake_cgroup_host.h"
#include "testlib/fixtures.h"

namespace bulkhead::os {
namespace {

namespace fs = std::filesystem;
using namespace fake_cgroupfs;

// ---- parsers ----

TEST(ParseProcCgroup, HybridLayout) {
  auto lines = parseProcCgroup(fixture("v1_hybrid_proc_self_cgroup.txt"));
  ASSERT_EQ(lines.size(), 10u);
  auto memory = std::find_if(lines.begin(), lines.end(), [](const ProcCgroupLine& l) {
    return std::find(l.controllers.begin(), l.controllers.end(), "memory") != l.controllers.end();
  });
  ASSERT_NE(memory, lines.end());
  EXPECT_EQ(memory->hierarchyId, 4);
  EXPECT_EQ(memory->path, "/process_api/39e614791b7c495fee1053f771dc1896");
  EXPECT_EQ(lines.back().hierarchyId, 0);
  EXPECT_TRUE(lines.back().controllers.empty());
  EXPECT_EQ(lines.back().path, "/");
}

TEST(ParseProcCgroup, CombinedControllersColonsInPathAndJunk) {
  auto lines = parseProcCgroup("2:cpu,cpuacct:/a:b\nnonsense\n5::relative\n0::/x y\n");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].controllers, (std::vector<std::string>{"cpu", "cpuacct"}));
  EXPECT_EQ(lines[0].path, "/a:b");
  EXPECT_EQ(lines[1].path, "/x y");
}

TEST(ParseMountInfo, OptionalFieldsAndEscapes) {
  auto mounts = parseMountInfo(fixture("v2_mountinfo.txt"));
  auto cg = std::find_if(mounts.begin(), mounts.end(),
                         [](const MountInfoLine& m) { return m.fsType == "cgroup2"; });
  ASSERT_NE(cg, mounts.end());
  EXPECT_EQ(cg->mountPoint, "/sys/fs/cgroup");
  EXPECT_EQ(cg->root, "/");
  EXPECT_EQ(cg->superOptions,
            (std::vector<std::string>{"rw", "nsdelegate", "memory_recursiveprot"}));

  auto escaped = parseMountInfo(
      "40 31 0:37 /a\\040b /mnt/with\\040space\\134x rw - cgroup cgroup rw,pids\nshort line\n");
  ASSERT_EQ(escaped.size(), 1u);
  EXPECT_EQ(escaped[0].root, "/a b");
  EXPECT_EQ(escaped[0].mountPoint, "/mnt/with space\\x");
}

TEST(LocateOwnCgroups, ThisMachinesHybridLayout) {
  auto own = locateOwnCgroups(fixture("v1_hybrid_proc_self_cgroup.txt"),
                              fixture("v1_hybrid_mountinfo.txt"));
  EXPECT_EQ(own.v1Memory, "/sys/fs/cgroup/memory/process_api/39e614791b7c495fee1053f771dc1896");
  EXPECT_EQ(own.v1Pids, "/sys/fs/cgroup/pids");
  EXPECT_EQ(own.v2, "/sys/fs/cgroup/unified");
}

TEST(LocateOwnCgroups, PureV2) {
  auto own = locateOwnCgroups(fixture("v2_proc_self_cgroup.txt"), fixture("v2_mountinfo.txt"));
  EXPECT_FALSE(own.v1Memory);
  EXPECT_FALSE(own.v1Pids);
  EXPECT_EQ(own.v2, "/sys/fs/cgroup/system.slice/bulkhead.service");
}

TEST(LocateOwnCgroups, V2WithoutV1ControllersMounted) {
  auto own = locateOwnCgroups(fixture("v2_nocontrollers_proc_self_cgroup.txt"),
                              fixture("v2_nocontrollers_mountinfo.txt"));
  EXPECT_FALSE(own.v1Memory);
  EXPECT_FALSE(own.v1Pids);
  EXPECT_EQ(own.v2, "/sys/fs/cgroup/unified/user.slice/user-1000.slice/session-2.scope");
}

TEST(LocateOwnCgroups, MountWhoseRootIsOurCgroup) {
  // A container without a cgroup namespace: the hierarchy is mounted from our own cgroup down.
  auto own =
      locateOwnCgroups("4:memory:/docker/abc\n8:pids:/docker/abc/inner\n",
                       "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
                       "39 31 0:36 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n");
  EXPECT_EQ(own.v1Memory, "/sys/fs/cgroup/memory");
  EXPECT_EQ(own.v1Pids, "/sys/fs/cgroup/pids/inner");
  // Outside the mount's root: not reachable.
  auto outside = locateOwnCgroups("4:memory:/other\n",
                                  "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup "
                                  "rw,memory\n");
  EXPECT_FALSE(outside.v1Memory);
  EXPECT_FALSE(outside.notes.empty());
}

TEST(ParseCounters, KernelFiles) {
  EXPECT_EQ(parseKeyedCounter(fixture("memory_oom_control_after_oom.txt"), "oom_kill"), 1u);
  EXPECT_EQ(parseKeyedCounter(fixture("memory_oom_control_after_oom.txt"), "under_oom"), 0u);
  EXPECT_EQ(parseKeyedCounter(fixture("pids_events_after_limit.txt"), "max"), 1u);
  EXPECT_EQ(parseKeyedCounter(fixture("memory_events_v2.txt"), "oom_kill"), 1u);
  EXPECT_EQ(parseKeyedCounter(fixture("memory_events_v2.txt"), "max"), 212u);
  EXPECT_FALSE(parseKeyedCounter(fixture("memory_events_v2.txt"), "oom_kil"));
  EXPECT_EQ(parseCounterFile("12345\n"), 12345u);
  EXPECT_FALSE(parseCounterFile("max\n"));
  EXPECT_FALSE(parseCounterFile(""));
  EXPECT_EQ(parsePidList("1\n22\n333\n"), (std::vector<pid_t>{1, 22, 333}));
  EXPECT_TRUE(parsePidList("").empty());
}

// ---- detection and the manager on the fake host ----

TEST(FakeHostV1, DetectsCreatesCountsRemoves) {
  auto s = hybridHost();
  std::string why;
  auto cg = detectHybrid(s, &why);
  ASSERT_EQ(cg->mode(), CgroupMode::kV1) << why;
  const std::string memBase = kOwnMemory + "/bulkhead-4242";
  EXPECT_EQ(cg->describe(),
            "cgroup v1: memory at " + memBase + ", pids at /sys/fs/cgroup/pids/bulkhead-4242");
  EXPECT_TRUE(s->dirs.count(memBase));

  std::string error;
  auto w = cg->create("pool-a.0", {64u << 20, 8}, &error);
  ASSERT_TRUE(w) << error;
  EXPECT_EQ(w->memoryDir(), memBase + "/pool-a.0");
  EXPECT_EQ(w->pidsDir(), "/sys/fs/cgroup/pids/bulkhead-4242/pool-a.0");
  EXPECT_EQ(w->procsFds().size(), 2u);
  EXPECT_EQ(s->files[memBase + "/pool-a.0/memory.limit_in_bytes"], "67108864");
  EXPECT_EQ(s->files[memBase + "/pool-a.0/memory.memsw.limit_in_bytes"], "67108864");
  EXPECT_EQ(s->files[memBase + "/pool-a.0/memory.swappiness"], "0");
  EXPECT_EQ(s->files[memBase + "/pool-a.0/memory.oom_control"], "0");  // inherited disable undone
  EXPECT_EQ(s->files["/sys/fs/cgroup/pids/bulkhead-4242/pool-a.0/pids.max"], "8");

  s->files[memBase + "/pool-a.0/memory.oom_control"] =
      "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n";
  s->files[memBase + "/pool-a.0/memory.max_usage_in_bytes"] = "67108864\n";
  s->files[memBase + "/pool-a.0/memory.usage_in_bytes"] = "1234\n";
  s->files["/sys/fs/cgroup/pids/bulkhead-4242/pool-a.0/pids.events"] = "max 3\n";
  s->files["/sys/fs/cgroup/pids/bulkhead-4242/pool-a.0/pids.current"] = "2\n";
  auto c = cg->counters(*w);
  EXPECT_EQ(c.oomKills, 1u);
  EXPECT_EQ(c.memoryPeakBytes, 67108864u);
  EXPECT_EQ(c.memoryCurrentBytes, 1234u);
  EXPECT_EQ(c.pidsMaxEvents, 3u);
  EXPECT_EQ(c.pidsCurrent, 2u);

  // A worker and its grandchild left inside: remove() kills both and removes both directories.
  s->files[memBase + "/pool-a.0/cgroup.procs"] = "500\n501\n";
  s->files["/sys/fs/cgroup/pids/bulkhead-4242/pool-a.0/cgroup.procs"] = "500\n501\n";
  s->alive.insert({500, 501});
  ASSERT_TRUE(cg->remove(*w, &error)) << error;
  EXPECT_FALSE(s->alive.count(500) || s->alive.count(501));
  EXPECT_FALSE(s->dirs.count(memBase + "/pool-a.0"));
  EXPECT_FALSE(s->dirs.count("/sys/fs/cgroup/pids/bulkhead-4242/pool-a.0"));
  EXPECT_TRUE(w->procsFds().empty());

  cg.reset();
  EXPECT_FALSE(s->dirs.count(memBase));
  EXPECT_FALSE(s->dirs.count("/sys/fs/cgroup/pids/bulkhead-4242"));
}

TEST(FakeHostV1, NoLimitsMakesAPidsCgroupOnly) {
  // Membership is all a worker without limits needs: the pids hierarchy holds its whole tree.
  auto s = hybridHost();
  auto cg = detectHybrid(s, nullptr);
  ASSERT_EQ(cg->mode(), CgroupMode::kV1);
  std::string error;
  auto w = cg->create("w", {}, &error);
  ASSERT_TRUE(w) << error;
  const std::string pids = "/sys/fs/cgroup/pids/bulkhead-4242/w";
  EXPECT_EQ(w->memoryDir(), "");
  EXPECT_EQ(w->directories(), std::vector<std::string>{pids});
  EXPECT_EQ(w->procsFds().size(), 1u);
  EXPECT_FALSE(s->dirs.count(kOwnMemory + "/bulkhead-4242/w"));
  EXPECT_EQ(s->files[pids + "/pids.max"], "max\n");  // untouched
  s->files[pids + "/pids.current"] = "3\n";
  auto c = cg->counters(*w);
  EXPECT_EQ(c.pidsCurrent, 3u);
  EXPECT_EQ(c.oomKills, 0u);
  EXPECT_EQ(c.memoryPeakBytes, 0u);
  s->files[pids + "/cgroup.procs"] = "700\n701\n";
  s->alive.insert({700, 701});
  ASSERT_TRUE(cg->remove(*w, &error)) << error;
  EXPECT_FALSE(s->alive.count(700) || s->alive.count(701));
  EXPECT_FALSE(s->dirs.count(pids));
}

TEST(FakeHostV1, AnyLimitKeepsTheMemoryCgroup) {
  auto s = hybridHost();
  auto cg = detectHybrid(s, nullptr);
  std::string error;
  auto w = cg->create("w", {std::nullopt, 8}, &error);
  ASSERT_TRUE(w) << error;
  EXPECT_EQ(w->memoryDir(), kOwnMemory + "/bulkhead-4242/w");
  EXPECT_EQ(s->files[w->memoryDir() + "/memory.limit_in_bytes"], "0\n");  // untouched
  EXPECT_EQ(s->files[w->memoryDir() + "/memory.oom_control"], "0");
  EXPECT_EQ(s->files[w->pidsDir() + "/pids.max"], "8");
}

TEST(FakeHostV1, RemoveKeepsKillingWhatForksMeanwhile) {
  // 800 forks 801 as it is killed, and 801 forks 802: each read finds the next generation.
  auto s = hybridHost();
  auto cg = detectHybrid(s, nullptr);
  std::string error;
  auto w = cg->create("w", {}, &error);
  ASSERT_TRUE(w);
  s->files[w->pidsDir() + "/cgroup.procs"] = "800\n";
  s->alive.insert(800);
  s->forkOnKill = {{800, 801}, {801, 802}};
  ASSERT_TRUE(cg->remove(*w, &error)) << error;
  for (pid_t pid : {800, 801, 802}) EXPECT_FALSE(s->alive.count(pid)) << pid;
  EXPECT_EQ(s->pauses, 3);  // three rounds found someone; the fourth found the cgroup empty
  EXPECT_FALSE(s->dirs.count(w->pidsDir()));
}

TEST(FakeHostV1, RejectsBadNamesAndZeroLimits) {
  auto s = hybridHost();
  auto cg = detectHybrid(s, nullptr);
  for (const char* bad : {"", ".", "..", "../x", "a/b", ".hidden", "sp ace", "x\n"}) {
    std::string error;
    EXPECT_FALSE(cg->create(bad, {}, &error)) << bad;
    EXPECT_NE(error.find("invalid name"), std::string::npos) << error;
  }
  std::string error;
  EXPECT_FALSE(cg->create(std::string(65, 'a'), {}, &error));
  EXPECT_FALSE(cg->create("w", {0, std::nullopt}, &error));
  EXPECT_FALSE(cg->create("w", {std::nullopt, 0}, &error));
  EXPECT_FALSE(s->dirs.count(kOwnMemory + "/bulkhead-4242/w"));
}

TEST(FakeHostV1, CreateReplacesALeftoverOfTheSameName) {
  auto s = hybridHost();
  auto cg = detectHybrid(s, nullptr);
  std::string error;
  auto first = cg->create("w", {1u << 30, 100}, &error);
  ASSERT_TRUE(first);
  s->files[first->memoryDir() + "/cgroup.procs"] = "777\n";
  s->alive.insert(777);
  auto second = cg->create("w", {2u << 30, 50}, &error);
  ASSERT_TRUE(second) << error;
  EXPECT_FALSE(s->alive.count(777));
  EXPECT_EQ(s->files[second->memoryDir() + "/memory.limit_in_bytes"], "2147483648");
}

TEST(FakeHostV1, FailedCreateLeavesNothing) {
  auto s = hybridHost();
  auto cg = detectHybrid(s, nullptr);
  s->readOnly.insert("/sys/fs/cgroup/pids/bulkhead-4242/");
  std::string error;
  EXPECT_FALSE(cg->create("w", {1u << 30, 8}, &error));
  EXPECT_NE(error.find("Permission denied"), std::string::npos) << error;
  EXPECT_FALSE(s->dirs.count(kOwnMemory + "/bulkhead-4242/w"));
}

TEST(FakeHostV1, RemoveGivesUpOnAnUnkillableProcessWithinBoundedRounds) {
  auto s = hybridHost();
  auto cg = detectHybrid(s, nullptr);
  std::string error;
  auto w = cg->create("w", {}, &error);
  ASSERT_TRUE(w);
  s->files[w->pidsDir() + "/cgroup.procs"] = "900\n";
  s->alive.insert(900);
  s->unkillable.insert(900);  // e.g. stuck in uninterruptible sleep
  EXPECT_FALSE(cg->remove(*w, &error));
  EXPECT_NE(error.find("Device or resource busy"), std::string::npos) << error;
  EXPECT_NE(error.find("still listed after 20 kill rounds: 900"), std::string::npos) << error;
  EXPECT_EQ(s->pauses, 20);
}

TEST(FakeHostV1, UnwritableV1FallsToV2WithoutControllersAndSaysWhy) {
  auto s = hybridHost();
  s->readOnly.insert(kOwnMemory + "/");
  std::string why;
  auto cg = detectHybrid(s, &why);
  EXPECT_EQ(cg->mode(), CgroupMode::kNone);
  EXPECT_NE(why.find("v1: mkdir " + kOwnMemory + "/bulkhead-4242: Permission denied"),
            std::string::npos)
      << why;
  EXPECT_NE(why.find("v2: /sys/fs/cgroup/unified is not given the memory and pids"),
            std::string::npos)
      << why;
  EXPECT_NE(cg->describe().find("cgroups: none ("), std::string::npos);
  std::string error;
  EXPECT_FALSE(cg->create("w", {}, &error));
  EXPECT_NE(error.find("cgroups unavailable"), std::string::npos);
  // Nothing half-made remains.
  EXPECT_FALSE(s->dirs.count("/sys/fs/cgroup/pids/bulkhead-4242"));
}

TEST(FakeHostV1, AnEarlierSupervisorWithOurPidLeftItsBase) {
  auto s = hybridHost();
  FakeHost h(s);
  ASSERT_EQ(h.makeDirectory(kOwnMemory + "/bulkhead-4242"), 0);
  ASSERT_EQ(h.makeDirectory(kOwnMemory + "/bulkhead-4242/old"), 0);
  auto cg = detectHybrid(s, nullptr);
  EXPECT_EQ(cg->mode(), CgroupMode::kV1);
  EXPECT_FALSE(s->dirs.count(kOwnMemory + "/bulkhead-4242/old"));
}

TEST(FakeHostV2, MovesItselfIntoALeafToEnableControllers) {
  auto s = v2Host("4242\n");
  std::string why;
  auto cg = detectV2(s, &why);
  ASSERT_EQ(cg->mode(), CgroupMode::kV2) << why;
  EXPECT_EQ(FakeHost::procsIn(*s, kV2Own), std::vector<pid_t>{});
  EXPECT_EQ(FakeHost::procsIn(*s, kV2Own + "/supervisor"), std::vector<pid_t>{kSelf});
  EXPECT_EQ(s->files[kV2Own + "/cgroup.subtree_control"], "memory pids");
  EXPECT_EQ(s->files[kV2Own + "/bulkhead-4242/cgroup.subtree_control"], "memory pids");
  EXPECT_EQ(cg->describe(), "cgroup v2 at " + kV2Own + "/bulkhead-4242 (supervisor moved into " +
                                kV2Own + "/supervisor to enable controllers in " + kV2Own + ")");

  std::string error;
  auto w = cg->create("w0", {256u << 20, 40}, &error);
  ASSERT_TRUE(w) << error;
  const std::string dir = kV2Own + "/bulkhead-4242/w0";
  EXPECT_EQ(w->directories(), std::vector<std::string>{dir});
  EXPECT_EQ(w->procsFds().size(), 1u);
  EXPECT_EQ(s->files[dir + "/memory.max"], "268435456");
  EXPECT_EQ(s->files[dir + "/memory.swap.max"], "0");
  EXPECT_EQ(s->files[dir + "/memory.oom.group"], "1");
  EXPECT_EQ(s->files[dir + "/pids.max"], "40");

  s->files[dir + "/memory.events"] = fixture("memory_events_v2.txt");
  s->files[dir + "/memory.peak"] = "268000000\n";
  s->files[dir + "/pids.events"] = "max 2\n";
  auto c = cg->counters(*w);
  EXPECT_EQ(c.oomKills, 1u);
  EXPECT_EQ(c.memoryPeakBytes, 268000000u);
  EXPECT_EQ(c.pidsMaxEvents, 2u);

  // cgroup.kill empties it in one write.
  s->files[dir + "/cgroup.procs"] = "600\n601\n";
  s->alive.insert({600, 601});
  ASSERT_TRUE(cg->remove(*w, &error)) << error;
  EXPECT_FALSE(s->alive.count(600));
  EXPECT_EQ(s->pauses, 0);
  EXPECT_FALSE(s->dirs.count(dir));
  cg.reset();
  EXPECT_FALSE(s->dirs.count(kV2Own + "/bulkhead-4242"));
  EXPECT_TRUE(s->dirs.count(kV2Own + "/supervisor"));  // we still live there
}

TEST(FakeHostV2, RefusesToMoveOtherProcesses) {
  auto s = v2Host("4242\n77\n");
  std::string why;
  auto cg = detectV2(s, &why);
  EXPECT_EQ(cg->mode(), CgroupMode::kNone);
  EXPECT_NE(why.find("also holds processes 77"), std::string::npos) << why;
  EXPECT_EQ(FakeHost::procsIn(*s, kV2Own), (std::vector<pid_t>{4242, 77}));
  EXPECT_FALSE(s->dirs.count(kV2Own + "/supervisor"));
}

TEST(FakeHostV2, ControllersAlreadyEnabledNeedsNoMove) {
  // E.g. a second start after the first moved itself: <own> is already empty and enabled.
  auto s = v2Host("");
  s->files[kV2Own + "/cgroup.subtree_control"] = "memory pids";
  std::string why;
  auto cg = detectV2(s, &why);
  ASSERT_EQ(cg->mode(), CgroupMode::kV2) << why;
  EXPECT_EQ(cg->describe(), "cgroup v2 at " + kV2Own + "/bulkhead-4242");
  EXPECT_FALSE(s->dirs.count(kV2Own + "/supervisor"));
}

TEST(FakeHostV2, TheRootCgroupIsExemptFromTheRule) {
  auto s = std::make_shared<FakeHost::State>();
  FakeHost::addHierarchy(*s, "/sys/fs/cgroup", FakeHost::Kind::kV2, "/sys/fs/cgroup",
                         "memory pids");
  s->files["/sys/fs/cgroup/cgroup.subtree_control"] = "";
  s->files["/sys/fs/cgroup/cgroup.procs"] = "1\n4242\n";
  std::string why;
  auto cg = detectCgroupsOn(std::make_unique<FakeHost>(s), "0::/\n", fixture("v2_mountinfo.txt"),
                            kSelf, &why);
  ASSERT_EQ(cg->mode(), CgroupMode::kV2) << why;
  EXPECT_EQ(cg->describe(), "cgroup v2 at /sys/fs/cgroup/bulkhead-4242");
}

TEST(FakeHostV2, ControllersNotDelegatedIsNone) {
  auto s = std::make_shared<FakeHost::State>();
  FakeHost::addHierarchy(*s, "/sys/fs/cgroup/unified", FakeHost::Kind::kV2,
                         "/sys/fs/cgroup/unified/user.slice/user-1000.slice/session-2.scope", "");
  std::string why;
  auto cg = detectCgroupsOn(std::make_unique<FakeHost>(s),
                            fixture("v2_nocontrollers_proc_self_cgroup.txt"),
                            fixture("v2_nocontrollers_mountinfo.txt"), kSelf, &why);
  EXPECT_EQ(cg->mode(), CgroupMode::kNone);
  EXPECT_NE(why.find("is not given the memory and pids controllers (cgroup.controllers: '')"),
            std::string::npos)
      << why;
  EXPECT_NE(why.find("no v1 memory hierarchy"), std::string::npos) << why;
}

TEST(FakeHost, NothingMountedIsNone) {
  auto s = std::make_shared<FakeHost::State>();
  std::string why;
  auto cg = detectCgroupsOn(std::make_unique<FakeHost>(s), "", "", kSelf, &why);
  EXPECT_EQ(cg->mode(), CgroupMode::kNone);
  EXPECT_NE(why.find("no v2 hierarchy"), std::string::npos) << why;
}

TEST(FakeHostV1, CleanupStaleRemovesOnlyDeadSupervisorsLeftovers) {
  auto s = hybridHost();
  FakeHost h(s);
  auto cg = detectHybrid(s, nullptr);
  // A dead supervisor 100 with a worker still running; a live supervisor 200; unrelated dirs.
  for (const std::string& root : {kOwnMemory, std::string("/sys/fs/cgroup/pids")}) {
    ASSERT_EQ(h.makeDirectory(root + "/bulkhead-100"), 0);
    ASSERT_EQ(h.makeDirectory(root + "/bulkhead-100/w0"), 0);
    s->files[root + "/bulkhead-100/w0/cgroup.procs"] = "1001\n";
    ASSERT_EQ(h.makeDirectory(root + "/bulkhead-200"), 0);
    ASSERT_EQ(h.makeDirectory(root + "/bulkhead-x"), 0);
    ASSERT_EQ(h.makeDirectory(root + "/other"), 0);
  }
  s->alive.insert({1001, 200});
  std::string error;
  EXPECT_EQ(cg->cleanupStale(&error), 1);
  EXPECT_EQ(error, "");
  EXPECT_FALSE(s->alive.count(1001));
  for (const std::string& root : {kOwnMemory, std::string("/sys/fs/cgroup/pids")}) {
    EXPECT_FALSE(s->dirs.count(root + "/bulkhead-100")) << root;
    EXPECT_TRUE(s->dirs.count(root + "/bulkhead-200")) << root;
    EXPECT_TRUE(s->dirs.count(root + "/bulkhead-4242")) << root;  // ours
    EXPECT_TRUE(s->dirs.count(root + "/bulkhead-x")) << root;
    EXPECT_TRUE(s->dirs.count(root + "/other")) << root;
  }
  EXPECT_EQ(cg->cleanupStale(&error), 0);
}

// ---- a fake host in a temp dir, through the real file calls ----

TEST(TempDirHost, PlainDirectoriesAreNotCgroupsAndNothingIsLeftBehind) {
  char tmpl[] = "/tmp/bulkhead-cg-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string root = tmpl;
  fs::create_directories(root + "/memory/process_api/abc");
  fs::create_directories(root + "/pids");
  fs::create_directories(root + "/unified");
  std::ofstream(root + "/unified/cgroup.controllers") << "cpu io\n";
  std::string mountinfo = "35 31 0:32 / " + root +
                          "/memory rw,relatime - cgroup cgroup rw,memory\n" + "39 31 0:36 / " +
                          root + "/pids rw,relatime - cgroup cgroup rw,pids\n" + "41 31 0:38 / " +
                          root + "/unified rw,relatime - cgroup2 cgroup2 rw\n";
  std::ofstream(root + "/cgroup") << "8:pids:/\n4:memory:/process_api/abc\n0::/\n";
  std::ofstream(root + "/mountinfo") << mountinfo;
  std::string why;
  auto cg = detectCgroups(root + "/cgroup", root + "/mountinfo", &why);
  EXPECT_EQ(cg->mode(), CgroupMode::kNone);
  EXPECT_NE(why.find("is not a memory cgroup"), std::string::npos) << why;
  EXPECT_NE(why.find("cgroup.controllers: 'cpu io'"), std::string::npos) << why;
  EXPECT_TRUE(fs::is_empty(root + "/memory/process_api/abc"));
  EXPECT_TRUE(fs::is_empty(root + "/pids"));

  std::string missing;
  auto none = detectCgroups(root + "/nope", root + "/mountinfo", &missing);
  EXPECT_EQ(none->mode(), CgroupMode::kNone);
  EXPECT_NE(missing.find("No such file"), std::string::npos) << missing;
  fs::remove_all(root);
}

}  // namespace
}  // namespace bulkhead::os
