#pragma once
// For tests/os/cgroups_test.cc: an in-memory CgroupHost that emulates the kernel's cgroupfs
// rules the manager relies on, the hybrid (v1) and v2 layouts of the fixtures in
// tests/data/cgroup/, and detection on them. Owns: the fake host. The real hierarchy is
// tests/os/cgroups_real_test.cc's.

#include <errno.h>
#include <sys/types.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "os/cgroups.h"
#include "testlib/fixtures.h"

namespace bulkhead::os::fake_cgroupfs {

inline std::string fixture(const std::string& name) { return testlib::readFixture("cgroup", name); }

inline bool startsWith(const std::string& s, const std::string& prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
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

inline constexpr pid_t kSelf = 4242;
inline const std::string kOwnMemory =
    "/sys/fs/cgroup/memory/process_api/39e614791b7c495fee1053f771dc1896";
inline const std::string kV2Own = "/sys/fs/cgroup/system.slice/bulkhead.service";

inline std::shared_ptr<FakeHost::State> hybridHost() {
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

inline std::shared_ptr<FakeHost::State> v2Host(const std::string& ownProcs) {
  auto s = std::make_shared<FakeHost::State>();
  FakeHost::addHierarchy(*s, "/sys/fs/cgroup", FakeHost::Kind::kV2, kV2Own,
                         "cpuset cpu io memory hugetlb pids rdma misc");
  s->files[kV2Own + "/cgroup.procs"] = ownProcs;
  for (pid_t p : parsePidList(ownProcs)) s->alive.insert(p);
  return s;
}

inline std::unique_ptr<Cgroups> detectHybrid(std::shared_ptr<FakeHost::State> s, std::string* why) {
  return detectCgroupsOn(std::make_unique<FakeHost>(s), fixture("v1_hybrid_proc_self_cgroup.txt"),
                         fixture("v1_hybrid_mountinfo.txt"), kSelf, why);
}

inline std::unique_ptr<Cgroups> detectV2(std::shared_ptr<FakeHost::State> s, std::string* why) {
  return detectCgroupsOn(std::make_unique<FakeHost>(s), fixture("v2_proc_self_cgroup.txt"),
                         fixture("v2_mountinfo.txt"), kSelf, why);
}

}  // namespace bulkhead::os::fake_cgroupfs
