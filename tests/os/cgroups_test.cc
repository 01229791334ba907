// cgroups: parsers on fixtures (tests/data/cgroup/), detection and the manager's logic on an
// in-memory fake host that emulates the kernel's rules, a fake host in a temp dir, and the real
// manager on this machine's hierarchy (v1 here; v2 where the host has it) with real OOM kills,
// pids limits, leftover processes and stale directories. Every wait is bounded.

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

#include "testlib/fixtures.h"

namespace bulkhead::os {
namespace {

namespace fs = std::filesystem;

std::string fixture(const std::string& name) { return testlib::readFixture("cgroup", name); }

bool startsWith(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

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

// ---- an in-memory host that behaves like cgroupfs ----

// Emulates what the code relies on: mkdir makes the control files of its hierarchy (v2: only
// of the controllers the parent enabled), cgroup.procs writes migrate, v2's no-internal-processes
// rule (EBUSY), rmdir refuses while processes or children remain, kill empties cgroup.procs.
class FakeHost final : public CgroupHost {
 public:
  enum class Kind { kV1Memory, kV1Pids, kV2 };
  struct State {
    std::map<std::string, Kind> hierarchies;  // root dir -> kind
    std::set<std::string> dirs;
    std::map<std::string, std::string> files;
    std::set<pid_t> alive;
    std::set<pid_t> unkillable;
    std::set<std::string> readOnly;     // mkdir under these prefixes: EACCES
    std::map<pid_t, pid_t> forkOnKill;  // killing the key leaves the value, its child, behind
    int pauses = 0;
  };

  explicit FakeHost(std::shared_ptr<State> s) : s_(std::move(s)) {}

  // Adds a hierarchy root and the directories down to `own`, with their control files.
  static void addHierarchy(State& s, const std::string& root, Kind kind, const std::string& own,
                           const std::string& rootControllers) {
    s.hierarchies[root] = kind;
    FakeHost h(std::shared_ptr<State>(&s, [](State*) {}));
    s.dirs.insert(root);
    h.populate(root, kind, rootControllers);
    if (kind == Kind::kV2) s.files[root + "/cgroup.subtree_control"] = rootControllers;
    std::string path = root;
    std::string rel = own.substr(root.size());
    std::size_t pos = 1;
    while (pos <= rel.size() && !rel.empty()) {
      std::size_t next = rel.find('/', pos);
      if (next == std::string::npos) next = rel.size();
      path = root + rel.substr(0, next);
      h.makeDirectory(path);
      if (kind == Kind::kV2 && path != own) {
        s.files[path + "/cgroup.subtree_control"] = rootControllers;  // delegated down to own
      }
      pos = next + 1;
    }
  }

  int makeDirectory(const std::string& path) override {
    for (const auto& ro : s_->readOnly) {
      if (startsWith(path, ro)) return EACCES;
    }
    if (s_->dirs.count(path)) return EEXIST;
    std::string parent = path.substr(0, path.rfind('/'));
    if (!s_->dirs.count(parent)) return ENOENT;
    auto h = hierarchyOf(path);
    if (!h) return EACCES;  // a plain directory, not ours to touch here
    s_->dirs.insert(path);
    std::string controllers;
    if (h->second == Kind::kV2) controllers = s_->files[parent + "/cgroup.subtree_control"];
    populate(path, h->second, controllers);
    return 0;
  }

  int removeDirectory(const std::string& path) override {
    if (!s_->dirs.count(path)) return ENOENT;
    if (!procs(path).empty()) return EBUSY;
    for (const auto& d : s_->dirs) {
      if (startsWith(d, path + "/")) return EBUSY;
    }
    s_->dirs.erase(path);
    for (auto it = s_->files.begin(); it != s_->files.end();) {
      it = startsWith(it->first, path + "/") ? s_->files.erase(it) : std::next(it);
    }
    return 0;
  }

  bool exists(const std::string& path) const override {
    return s_->dirs.count(path) || s_->files.count(path);
  }

  int readFile(const std::string& path, std::string* out) const override {
    auto it = s_->files.find(path);
    if (it == s_->files.end()) return ENOENT;
    *out = it->second;
    return 0;
  }

  int writeFile(const std::string& path, std::string_view text) override {
    if (!s_->files.count(path)) return ENOENT;
    std::string dir = path.substr(0, path.rfind('/'));
    std::string name = path.substr(path.rfind('/') + 1);
    auto h = hierarchyOf(dir);
    if (name == "cgroup.procs") {
      pid_t pid = std::stoi(std::string(text));
      if (h->second == Kind::kV2 && !s_->files[dir + "/cgroup.subtree_control"].empty() &&
          dir != h->first) {
        return EBUSY;  // no internal processes
      }
      for (auto& [p, content] : s_->files) {
        if (endsWith(p, "/cgroup.procs") && hierarchyOf(p)->first == h->first) {
          content = without(content, pid);
        }
      }
      s_->files[path] += std::to_string(pid) + "\n";
      s_->alive.insert(pid);
      return 0;
    }
    if (name == "cgroup.subtree_control") {
      if (dir != h->first && !procs(dir).empty()) return EBUSY;
      std::string current = s_->files[path];
      std::string available = s_->files[dir + "/cgroup.controllers"];
      std::istringstream words{std::string(text)};
      std::string w;
      while (words >> w) {
        std::string c = w.substr(1);
        if (available.find(c) == std::string::npos) return ENOENT;
        if (w[0] == '+' && current.find(c) == std::string::npos) {
          current += (current.empty() ? "" : " ") + c;
        }
      }
      s_->files[path] = current;
      return 0;
    }
    if (name == "cgroup.kill") {
      for (const auto& d : s_->dirs) {
        if (d == dir || startsWith(d, dir + "/")) {
          for (pid_t pid : procs(d)) killProcess(pid);
        }
      }
      return 0;
    }
    s_->files[path] = std::string(text);
    return 0;
  }

  int openForWrite(const std::string& path, UniqueFd* out) override {
    if (!s_->files.count(path)) return ENOENT;
    out->reset(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    return 0;
  }

  int listSubdirectories(const std::string& path, std::vector<std::string>* names) const override {
    names->clear();
    if (!s_->dirs.count(path)) return ENOENT;
    for (const auto& d : s_->dirs) {
      if (startsWith(d, path + "/") && d.find('/', path.size() + 1) == std::string::npos) {
        names->push_back(d.substr(path.size() + 1));
      }
    }
    return 0;
  }

  int killProcess(pid_t pid) override {
    if (s_->unkillable.count(pid)) return 0;
    s_->alive.erase(pid);
    auto child = s_->forkOnKill.find(pid);
    for (auto& [p, content] : s_->files) {
      if (!endsWith(p, "/cgroup.procs")) continue;
      auto listed = parsePidList(content);
      bool had = std::find(listed.begin(), listed.end(), pid) != listed.end();
      content = without(content, pid);
      // The child it forked just before dying is in the same cgroup (fork inherits it).
      if (had && child != s_->forkOnKill.end()) content += std::to_string(child->second) + "\n";
    }
    if (child != s_->forkOnKill.end()) s_->alive.insert(child->second);
    return 0;
  }

  bool isAlive(pid_t pid) const override { return s_->alive.count(pid) > 0; }
  void pause(int) override { ++s_->pauses; }

  // Test helpers.
  static std::vector<pid_t> procsIn(const State& s, const std::string& dir) {
    auto it = s.files.find(dir + "/cgroup.procs");
    return it == s.files.end() ? std::vector<pid_t>{} : parsePidList(it->second);
  }

 private:
  static bool endsWith(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  }
  static std::string without(const std::string& list, pid_t pid) {
    std::string out;
    for (pid_t p : parsePidList(list)) {
      if (p != pid) out += std::to_string(p) + "\n";
    }
    return out;
  }
  std::vector<pid_t> procs(const std::string& dir) const { return procsIn(*s_, dir); }

  std::optional<std::pair<std::string, Kind>> hierarchyOf(const std::string& path) const {
    std::optional<std::pair<std::string, Kind>> best;
    for (const auto& [root, kind] : s_->hierarchies) {
      if ((path == root || startsWith(path, root + "/")) &&
          (!best || root.size() > best->first.size())) {
        best = std::make_pair(root, kind);
      }
    }
    return best;
  }

  void populate(const std::string& dir, Kind kind, const std::string& controllers) {
    auto& f = s_->files;
    f[dir + "/cgroup.procs"] = "";
    switch (kind) {
      case Kind::kV1Memory:
        for (const char* name : {"memory.limit_in_bytes", "memory.memsw.limit_in_bytes",
                                 "memory.max_usage_in_bytes", "memory.usage_in_bytes"}) {
          f[dir + "/" + name] = "0\n";
        }
        f[dir + "/memory.swappiness"] = "60\n";
        f[dir + "/memory.oom_control"] = "oom_kill_disable 1\nunder_oom 0\noom_kill 0\n";
        break;
      case Kind::kV1Pids:
        f[dir + "/pids.max"] = "max\n";
        f[dir + "/pids.current"] = "0\n";
        f[dir + "/pids.events"] = "max 0\n";
        break;
      case Kind::kV2:
        f[dir + "/cgroup.controllers"] = controllers;
        f[dir + "/cgroup.subtree_control"] = "";
        f[dir + "/cgroup.kill"] = "";
        if (controllers.find("memory") != std::string::npos) {
          f[dir + "/memory.max"] = "max\n";
          f[dir + "/memory.swap.max"] = "max\n";
          f[dir + "/memory.oom.group"] = "0\n";
          f[dir + "/memory.current"] = "0\n";
          f[dir + "/memory.peak"] = "0\n";
          f[dir + "/memory.events"] = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n";
        }
        if (controllers.find("pids") != std::string::npos) {
          f[dir + "/pids.max"] = "max\n";
          f[dir + "/pids.current"] = "0\n";
          f[dir + "/pids.events"] = "max 0\n";
        }
        break;
    }
  }

  std::shared_ptr<State> s_;
};

constexpr pid_t kSelf = 4242;
const std::string kOwnMemory = "/sys/fs/cgroup/memory/process_api/39e614791b7c495fee1053f771dc1896";
const std::string kV2Own = "/sys/fs/cgroup/system.slice/bulkhead.service";

std::shared_ptr<FakeHost::State> hybridHost() {
  auto s = std::make_shared<FakeHost::State>();
  FakeHost::addHierarchy(*s, "/sys/fs/cgroup/memory", FakeHost::Kind::kV1Memory, kOwnMemory, "");
  FakeHost::addHierarchy(*s, "/sys/fs/cgroup/pids", FakeHost::Kind::kV1Pids, "/sys/fs/cgroup/pids",
                         "");
  FakeHost::addHierarchy(*s, "/sys/fs/cgroup/unified", FakeHost::Kind::kV2,
                         "/sys/fs/cgroup/unified", "");
  s->files[kOwnMemory + "/cgroup.procs"] = std::to_string(kSelf) + "\n";
  s->files["/sys/fs/cgroup/pids/cgroup.procs"] = std::to_string(kSelf) + "\n";
  s->alive.insert(kSelf);
  return s;
}

std::shared_ptr<FakeHost::State> v2Host(const std::string& ownProcs) {
  auto s = std::make_shared<FakeHost::State>();
  FakeHost::addHierarchy(*s, "/sys/fs/cgroup", FakeHost::Kind::kV2, kV2Own,
                         "cpuset cpu io memory hugetlb pids rdma misc");
  s->files[kV2Own + "/cgroup.procs"] = ownProcs;
  for (pid_t p : parsePidList(ownProcs)) s->alive.insert(p);
  return s;
}

std::unique_ptr<Cgroups> detectHybrid(std::shared_ptr<FakeHost::State> s, std::string* why) {
  return detectCgroupsOn(std::make_unique<FakeHost>(s), fixture("v1_hybrid_proc_self_cgroup.txt"),
                         fixture("v1_hybrid_mountinfo.txt"), kSelf, why);
}

std::unique_ptr<Cgroups> detectV2(std::shared_ptr<FakeHost::State> s, std::string* why) {
  return detectCgroupsOn(std::make_unique<FakeHost>(s), fixture("v2_proc_self_cgroup.txt"),
                         fixture("v2_mountinfo.txt"), kSelf, why);
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

// ---- the real hierarchy ----

using namespace std::chrono_literals;

// Waits for pid to end, at most limitMs; on timeout SIGKILLs it, reaps it and reports failure.
::testing::AssertionResult waitWithin(pid_t pid, int limitMs, int* status) {
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return ::testing::AssertionFailure() << "pidfd_open: " << std::strerror(errno);
  pollfd p{pidfd, POLLIN, 0};
  int ready;
  do {
    ready = ::poll(&p, 1, limitMs);
  } while (ready < 0 && errno == EINTR);
  ::close(pidfd);
  bool timedOut = ready != 1;
  if (timedOut) ::kill(pid, SIGKILL);
  while (::waitpid(pid, status, 0) < 0 && errno == EINTR) {
  }
  if (timedOut) return ::testing::AssertionFailure() << "child " << pid << " ran past " << limitMs;
  return ::testing::AssertionSuccess();
}

// Reads one byte from fd, waiting at most limitMs.
bool readByteWithin(int fd, int limitMs, char* out) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, limitMs) != 1) return false;
  return ::read(fd, out, 1) == 1;
}

// Joins the cgroup the way a worker does: between fork and exec, async-signal-safe writes only.
void joinCgroup(const std::vector<int>& procsFds) {
  for (int fd : procsFds) {
    if (::write(fd, "0", 1) != 1) ::_exit(120);
  }
}

class RealCgroups : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    cgroups_ = detectCgroups("/proc/self/cgroup", "/proc/self/mountinfo", &why);
    if (cgroups_->mode() == CgroupMode::kNone) {
      GTEST_SKIP() << "no writable cgroup hierarchy with memory and pids here: " << why;
    }
    own_ = locateOwnCgroups(readWhole("/proc/self/cgroup"), readWhole("/proc/self/mountinfo"));
    base_ = "bulkhead-" + std::to_string(::getpid());
  }

  void TearDown() override {
    if (!cgroups_ || cgroups_->mode() == CgroupMode::kNone) return;
    cgroups_.reset();
    // Nothing may be left behind: our base directories are gone with the manager.
    for (const auto& own : ownDirs()) {
      EXPECT_FALSE(fs::exists(own + "/" + base_)) << own + "/" + base_ << " left behind";
    }
  }

  static std::string readWhole(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::vector<std::string> ownDirs() const {
    if (cgroups_ && cgroups_->mode() == CgroupMode::kV2) return {*own_.v2};
    return {*own_.v1Memory, *own_.v1Pids};
  }

  void expectGone(const WorkerCgroup& w) {
    for (const auto& d : w.directories()) EXPECT_FALSE(fs::exists(d)) << d;
  }

  std::unique_ptr<Cgroups> cgroups_;
  OwnCgroupDirs own_;
  std::string base_;
};

TEST_F(RealCgroups, OomKillHitsTheWorkerOnlyAndIsCounted) {
  if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "no /usr/bin/python3";
  constexpr std::uint64_t kLimit = 64u << 20;
  std::string error;
  auto w = cgroups_->create("oom", {kLimit, 64}, &error);
  ASSERT_TRUE(w) << error;
  std::fprintf(stderr, "%s\n", cgroups_->describe().c_str());
  if (cgroups_->mode() == CgroupMode::kV1 &&
      fs::exists(w->memoryDir() + "/memory.memsw.limit_in_bytes")) {
    // No escape into swap: memory+swap is limited to the same value.
    EXPECT_EQ(readWhole(w->memoryDir() + "/memory.memsw.limit_in_bytes"),
              std::to_string(kLimit) + "\n");
  }

  // Built before fork: the child may only make async-signal-safe calls.
  const char* argv[] = {"python3", "-c", "b=[]\nwhile True: b.append(bytearray(1<<20))", nullptr};
  const char* envp[] = {"PATH=/usr/bin:/bin", nullptr};
  std::vector<int> fds = w->procsFds();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // ---- child: async-signal-safe region until execve ----
    joinCgroup(fds);
    ::execve("/usr/bin/python3", const_cast<char* const*>(argv), const_cast<char* const*>(envp));
    ::_exit(127);
  }
  int status = 0;
  ASSERT_TRUE(waitWithin(pid, 30000, &status));
  ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status;
  EXPECT_EQ(WTERMSIG(status), SIGKILL);

  auto c = cgroups_->counters(*w);
  EXPECT_EQ(c.oomKills, 1u);
  EXPECT_GE(c.memoryPeakBytes, kLimit * 3 / 4);
  EXPECT_LE(c.memoryPeakBytes, kLimit);
  EXPECT_EQ(c.pidsCurrent, 0u);
  std::fprintf(stderr, "oom: oomKills %llu, peak %llu bytes, current %llu bytes\n",
               static_cast<unsigned long long>(c.oomKills),
               static_cast<unsigned long long>(c.memoryPeakBytes),
               static_cast<unsigned long long>(c.memoryCurrentBytes));
  ASSERT_TRUE(cgroups_->remove(*w, &error)) << error;
  expectGone(*w);
}

TEST_F(RealCgroups, PidsLimitRefusesThreadsAndIsCounted) {
  constexpr int kMax = 8;
  std::string error;
  auto w = cgroups_->create("pids", {std::nullopt, kMax}, &error);
  ASSERT_TRUE(w) << error;
  int report[2], hold[2];
  ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(hold, O_CLOEXEC), 0);
  std::vector<int> fds = w->procsFds();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    joinCgroup(fds);
    ::close(hold[1]);  // so the threads see EOF once the parent closes its end
    ::close(report[0]);
    // Start threads that block on `hold` until pthread_create fails; report how many started.
    int started = 0;
    for (int i = 0; i < 64; ++i) {
      pthread_t t;
      pthread_attr_t attr;
      pthread_attr_init(&attr);
      pthread_attr_setstacksize(&attr, 64 * 1024);
      int rc = pthread_create(
          &t, &attr,
          [](void* fd) -> void* {
            char c;
            while (::read(static_cast<int>(reinterpret_cast<intptr_t>(fd)), &c, 1) > 0) {
            }
            return nullptr;
          },
          reinterpret_cast<void*>(static_cast<intptr_t>(hold[0])));
      pthread_attr_destroy(&attr);
      if (rc != 0) break;
      ++started;
    }
    unsigned char n = static_cast<unsigned char>(started);
    if (::write(report[1], &n, 1) != 1) ::_exit(2);
    char c;
    while (::read(hold[0], &c, 1) > 0) {
    }
    ::_exit(0);
  }
  ::close(report[1]);
  ::close(hold[0]);
  char n = 0;
  bool reported = readByteWithin(report[0], 10000, &n);
  auto whileRunning = cgroups_->counters(*w);
  ::close(hold[1]);  // lets the child and its threads end
  ::close(report[0]);
  int status = 0;
  ASSERT_TRUE(waitWithin(pid, 10000, &status));
  ASSERT_TRUE(reported) << "child did not report";
  EXPECT_EQ(static_cast<int>(n), kMax - 1);  // the main thread is the 8th task
  EXPECT_EQ(whileRunning.pidsCurrent, static_cast<std::uint64_t>(kMax));
  EXPECT_GE(whileRunning.pidsMaxEvents, 1u);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(cgroups_->counters(*w).oomKills, 0u);
  ASSERT_TRUE(cgroups_->remove(*w, &error)) << error;
  expectGone(*w);
}

TEST_F(RealCgroups, RemoveKillsTheWholeTreeIncludingOrphans) {
  std::string error;
  auto w = cgroups_->create("tree", {512u << 20, 32}, &error);
  ASSERT_TRUE(w) << error;
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  // The shell starts two sleepers, says so, then waits; the sleepers outlive nothing on their own.
  const char* argv[] = {"sh", "-c", "sleep 1000 & sleep 1000 & echo r; wait", nullptr};
  const char* envp[] = {"PATH=/usr/bin:/bin", nullptr};
  std::vector<int> fds = w->procsFds();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // ---- child: async-signal-safe region until execve ----
    joinCgroup(fds);
    if (::dup2(out[1], 1) != 1) ::_exit(121);
    ::execve("/bin/sh", const_cast<char* const*>(argv), const_cast<char* const*>(envp));
    ::_exit(127);
  }
  ::close(out[1]);
  char c = 0;
  bool ready = readByteWithin(out[0], 10000, &c);
  ::close(out[0]);
  EXPECT_TRUE(ready);
  EXPECT_EQ(cgroups_->counters(*w).pidsCurrent, 3u);
  ASSERT_TRUE(cgroups_->remove(*w, &error)) << error;
  expectGone(*w);
  int status = 0;
  ASSERT_TRUE(waitWithin(pid, 10000, &status));
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
}

TEST_F(RealCgroups, CleanupStaleRemovesADeadSupervisorsDirectoriesAndKillsItsWorker) {
  // A pid that is certainly dead: a child we have already reaped.
  pid_t dead = ::fork();
  ASSERT_GE(dead, 0);
  if (dead == 0) ::_exit(0);
  int status = 0;
  ASSERT_TRUE(waitWithin(dead, 10000, &status));
  const std::string stale = "bulkhead-" + std::to_string(dead);
  std::vector<std::string> workerDirs;
  for (const auto& own : ownDirs()) {
    ASSERT_EQ(::mkdir((own + "/" + stale).c_str(), 0755), 0) << own << ": " << std::strerror(errno);
    if (cgroups_->mode() == CgroupMode::kV2) {
      std::ofstream(own + "/" + stale + "/cgroup.subtree_control") << "+memory +pids";
    }
    ASSERT_EQ(::mkdir((own + "/" + stale + "/w0").c_str(), 0755), 0);
    workerDirs.push_back(own + "/" + stale + "/w0");
  }
  // A leftover worker still running inside.
  std::vector<UniqueFd> procs;
  std::vector<int> fds;
  for (const auto& d : workerDirs) {
    procs.emplace_back(::open((d + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(procs.back().valid());
    fds.push_back(procs.back().get());
  }
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  pid_t orphan = ::fork();
  ASSERT_GE(orphan, 0);
  if (orphan == 0) {
    joinCgroup(fds);
    if (::write(ready[1], "r", 1) != 1) ::_exit(2);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c;
  EXPECT_TRUE(readByteWithin(ready[0], 10000, &c));
  ::close(ready[0]);
  procs.clear();

  std::string error;
  EXPECT_GE(cgroups_->cleanupStale(&error), 1) << error;
  for (const auto& own : ownDirs()) EXPECT_FALSE(fs::exists(own + "/" + stale)) << own;
  ASSERT_TRUE(waitWithin(orphan, 10000, &status));
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  // Our own base survives cleanup.
  auto w = cgroups_->create("after-cleanup", {}, &error);
  ASSERT_TRUE(w) << error;
  ASSERT_TRUE(cgroups_->remove(*w, &error)) << error;
}

TEST_F(RealCgroups, WithoutLimitsASetsidGrandchildIsStillInsideAndDiesWithIt) {
  std::string error;
  auto w = cgroups_->create("nolimits", {}, &error);
  ASSERT_TRUE(w) << error;
  EXPECT_EQ(w->directories().size(), 1u);
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  // The worker starts a sleeper in a session of its own (start_new_session=True), says so, and
  // exits: the sleeper is out of its process group, but not out of its cgroup.
  const char* argv[] = {"sh", "-c", "setsid sleep 1000 & echo r", nullptr};
  const char* envp[] = {"PATH=/usr/bin:/bin", nullptr};
  std::vector<int> fds = w->procsFds();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // ---- child: async-signal-safe region until execve ----
    joinCgroup(fds);
    if (::dup2(out[1], 1) != 1) ::_exit(121);
    ::execve("/bin/sh", const_cast<char* const*>(argv), const_cast<char* const*>(envp));
    ::_exit(127);
  }
  ::close(out[1]);
  char c = 0;
  EXPECT_TRUE(readByteWithin(out[0], 10000, &c));
  ::close(out[0]);
  int status = 0;
  ASSERT_TRUE(waitWithin(pid, 10000, &status));
  std::vector<pid_t> left = parsePidList(readWhole(w->pidsDir() + "/cgroup.procs"));
  ASSERT_EQ(left.size(), 1u) << "the setsid'd sleeper";
  ASSERT_TRUE(cgroups_->remove(*w, &error)) << error;
  expectGone(*w);
  // It was reparented to init (or a subreaper above us), so only /proc tells it is gone.
  bool gone = false;
  for (int i = 0; i < 500 && !gone; ++i) {
    std::string stat = readWhole("/proc/" + std::to_string(left[0]) + "/stat");
    gone = stat.empty() || stat.substr(stat.rfind(')') + 2, 1) == "Z";
    if (!gone) ::usleep(10000);
  }
  EXPECT_TRUE(gone) << left[0];
}

// Not a check: the price of a cgroup per worker, printed for docs/operations.md.
TEST_F(RealCgroups, CostOfCreatingAndRemovingAWorkerCgroup) {
  constexpr int kRounds = 200;
  for (const bool limited : {false, true}) {
    CgroupLimits limits;
    if (limited) limits = {256u << 20, 64};
    std::string error;
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kRounds; ++i) {
      auto w = cgroups_->create("cost", limits, &error);
      ASSERT_TRUE(w) << error;
      ASSERT_TRUE(cgroups_->remove(*w, &error)) << error;
    }
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count() /
              kRounds;
    std::fprintf(stderr, "cgroup create+remove (%s, %s): %lld us\n",
                 cgroupModeName(cgroups_->mode()), limited ? "memory and pids limits" : "no limits",
                 static_cast<long long>(us));
  }
}

TEST_F(RealCgroups, ManagerLeavesNothingBehind) {
  std::string error;
  auto a = cgroups_->create("a", {128u << 20, 16}, &error);
  ASSERT_TRUE(a) << error;
  auto b = cgroups_->create("b", {128u << 20, 16}, &error);
  ASSERT_TRUE(b) << error;
  for (const auto& d : a->directories()) EXPECT_TRUE(fs::is_directory(d)) << d;
  ASSERT_TRUE(cgroups_->remove(*a, &error)) << error;
  expectGone(*a);
  // b is never removed: the manager's destructor removes it (it holds no process); TearDown
  // checks the base directories are gone.
}

}  // namespace
}  // namespace bulkhead::os
