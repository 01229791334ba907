// Per-worker cgroups over a CgroupHost (cgroups.h explains the design): detection of a usable v1
// or v2 layout, creating a worker's cgroup with its limits, reading its counters, emptying and
// removing it, and removing what a dead supervisor left. The text parsers are cgroup_text.cc's,
// the real file system linux_cgroup_host.cc's.

#include "os/cgroups.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <functional>
#include <set>

#include "os/cgroup_kill.h"
#include "os/kernel_text.h"
#include "os/parse_number.h"

namespace bulkhead::os {

namespace {

constexpr std::string_view kBasePrefix = "bulkhead-";
constexpr std::string_view kSupervisorLeaf = "supervisor";

std::string errnoText(int error) { return std::strerror(error); }

bool validName(const std::string& name) {
  if (name.empty() || name.size() > 64 || name.front() == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

std::optional<pid_t> stalePid(const std::string& entry) {
  if (entry.size() <= kBasePrefix.size() ||
      entry.compare(0, kBasePrefix.size(), kBasePrefix) != 0) {
    return std::nullopt;
  }
  auto pid = parseWhole<pid_t>(std::string_view(entry).substr(kBasePrefix.size()));
  if (!pid || *pid <= 0) return std::nullopt;
  return pid;
}

// ---- shared helpers over a host ----

// Makes dir; an existing one (left by an earlier process that had our pid, or a worker of the
// same name never removed) is emptied and made again.
int makeFreshDirectory(CgroupHost& host, const std::string& dir, std::string* error) {
  int rc = host.makeDirectory(dir);
  if (rc == EEXIST) {
    std::string why;
    if (!emptyAndRemoveCgroup(host, dir, &why)) {
      if (error) *error = "cannot replace existing " + dir + ": " + why;
      return EEXIST;
    }
    rc = host.makeDirectory(dir);
  }
  if (rc != 0 && error) *error = "mkdir " + dir + ": " + errnoText(rc);
  return rc;
}

std::uint64_t readNumber(const CgroupHost& host, const std::string& path) {
  std::string text;
  if (host.readFile(path, &text) != 0) return 0;
  return parseCounterFile(text).value_or(0);
}

std::uint64_t readKeyed(const CgroupHost& host, const std::string& path, std::string_view key) {
  std::string text;
  if (host.readFile(path, &text) != 0) return 0;
  return parseKeyedCounter(text, key).value_or(0);
}

// ---- the managers ----

class NoCgroups final : public Cgroups {
 public:
  explicit NoCgroups(std::string why) : why_(std::move(why)) {}
  CgroupMode mode() const override { return CgroupMode::kNone; }
  std::string describe() const override { return "cgroups: none (" + why_ + ")"; }
  std::optional<WorkerCgroup> create(const std::string&, const CgroupLimits&,
                                     std::string* error) override {
    if (error) *error = "cgroups unavailable: " + why_;
    return std::nullopt;
  }
  CgroupCounters counters(const WorkerCgroup&) const override { return {}; }
  bool remove(WorkerCgroup&, std::string*) override { return true; }
  int cleanupStale(std::string*) override { return 0; }

 private:
  std::string why_;
};

// v1 and v2 differ in file names and in having one or two directories per worker.
class LinuxCgroups final : public Cgroups {
 public:
  struct Setup {
    CgroupMode mode = CgroupMode::kNone;
    pid_t self = 0;
    std::vector<std::string> ownDirs;  // where bulkhead-<pid> directories live
    std::string memoryBase;            // <own memory>/bulkhead-<pid>
    std::string pidsBase;              // the same as memoryBase in v2
    std::string note;                  // for describe()
  };

  LinuxCgroups(std::unique_ptr<CgroupHost> host, Setup setup)
      : host_(std::move(host)), s_(std::move(setup)) {}

  ~LinuxCgroups() override {
    // Leaves what still holds processes for the next start-up's cleanupStale(); removes the rest.
    for (const auto& base : bases()) {
      std::vector<std::string> dirs;
      collectCgroupTree(*host_, base, &dirs);
      for (const auto& d : dirs) host_->removeDirectory(d);
    }
  }

  CgroupMode mode() const override { return s_.mode; }

  std::string describe() const override {
    std::string out;
    if (s_.mode == CgroupMode::kV1) {
      out = "cgroup v1: memory at " + s_.memoryBase + ", pids at " + s_.pidsBase;
    } else {
      out = "cgroup v2 at " + s_.memoryBase;
    }
    if (!s_.note.empty()) out += " (" + s_.note + ")";
    return out;
  }

  std::optional<WorkerCgroup> create(const std::string& name, const CgroupLimits& limits,
                                     std::string* error) override {
    std::string why;
    auto fail = [&](std::vector<std::string> made) -> std::optional<WorkerCgroup> {
      for (auto it = made.rbegin(); it != made.rend(); ++it) host_->removeDirectory(*it);
      if (error) *error = "cgroup " + name + ": " + why;
      return std::nullopt;
    };
    if (!validName(name)) {
      why = "invalid name (1-64 of [A-Za-z0-9_.-], not starting with '.')";
      return fail({});
    }
    if (limits.memoryBytes && *limits.memoryBytes == 0) {
      why = "a memory limit of 0 bytes";
      return fail({});
    }
    if (limits.pids && *limits.pids == 0) {
      why = "a pids limit of 0";
      return fail({});
    }
    // Without limits the cgroup only has to hold the worker's processes: on v1 the pids
    // hierarchy does that alone, and a memory cgroup per worker would cost a memcg each (a removed
    // v1 memcg lingers in the kernel while page cache it was charged for remains).
    const bool membershipOnly = !limits.memoryBytes && !limits.pids;
    const std::string memoryDir =
        s_.mode == CgroupMode::kV1 && membershipOnly ? "" : s_.memoryBase + "/" + name;
    const std::string pidsDir = s_.pidsBase + "/" + name;
    std::vector<std::string> made;
    for (const auto& dir : distinct(memoryDir, pidsDir)) {
      if (dir.empty()) continue;
      if (makeFreshDirectory(*host_, dir, &why) != 0) return fail(made);
      made.push_back(dir);
    }
    auto write = [&](const std::string& path, const std::string& value) {
      int rc = host_->writeFile(path, value);
      if (rc != 0) why = "write " + value + " to " + path + ": " + errnoText(rc);
      return rc == 0;
    };
    auto writeIfPresent = [&](const std::string& path, const std::string& value) {
      if (host_->exists(path)) host_->writeFile(path, value);  // best effort, see cgroups.h
    };
    if (s_.mode == CgroupMode::kV1) {
      if (limits.memoryBytes) {
        const std::string bytes = std::to_string(*limits.memoryBytes);
        // memory first: memsw must never be below it (EINVAL).
        if (!write(memoryDir + "/memory.limit_in_bytes", bytes)) return fail(made);
        writeIfPresent(memoryDir + "/memory.memsw.limit_in_bytes", bytes);
        writeIfPresent(memoryDir + "/memory.swappiness", "0");
      }
      if (!memoryDir.empty() && !write(memoryDir + "/memory.oom_control", "0")) return fail(made);
    } else {
      if (limits.memoryBytes) {
        if (!write(memoryDir + "/memory.max", std::to_string(*limits.memoryBytes))) {
          return fail(made);
        }
        writeIfPresent(memoryDir + "/memory.swap.max", "0");
      }
      // On OOM kill the worker's whole tree at once: it is replaced as a unit anyway.
      writeIfPresent(memoryDir + "/memory.oom.group", "1");
    }
    if (limits.pids && !write(pidsDir + "/pids.max", std::to_string(*limits.pids))) {
      return fail(made);
    }
    std::vector<UniqueFd> fds;
    for (const auto& dir : made) {
      UniqueFd fd;
      int rc = host_->openForWrite(dir + "/cgroup.procs", &fd);
      if (rc != 0) {
        why = "open " + dir + "/cgroup.procs: " + errnoText(rc);
        return fail(made);
      }
      fds.push_back(std::move(fd));
    }
    return WorkerCgroup(name, memoryDir, pidsDir, std::move(fds));
  }

  CgroupCounters counters(const WorkerCgroup& cg) const override {
    CgroupCounters c;
    const std::string& m = cg.memoryDir();
    const std::string& p = cg.pidsDir();
    if (m.empty()) {
      // v1 without limits: no memory cgroup, no memory counters.
    } else if (s_.mode == CgroupMode::kV1) {
      c.oomKills = readKeyed(*host_, m + "/memory.oom_control", "oom_kill");
      c.memoryPeakBytes = readNumber(*host_, m + "/memory.max_usage_in_bytes");
      c.memoryCurrentBytes = readNumber(*host_, m + "/memory.usage_in_bytes");
    } else {
      c.oomKills = readKeyed(*host_, m + "/memory.events", "oom_kill");
      c.memoryPeakBytes = readNumber(*host_, m + "/memory.peak");
      c.memoryCurrentBytes = readNumber(*host_, m + "/memory.current");
    }
    c.pidsMaxEvents = readKeyed(*host_, p + "/pids.events", "max");
    c.pidsCurrent = readNumber(*host_, p + "/pids.current");
    return c;
  }

  bool remove(WorkerCgroup& cg, std::string* error) override {
    cg.closeProcsFds();
    for (const auto& dir : cg.directories()) {
      std::string why;
      if (!emptyAndRemoveCgroup(*host_, dir, &why)) {
        if (error) *error = "cgroup " + cg.name() + ": " + why;
        return false;
      }
    }
    return true;
  }

  int cleanupStale(std::string* error) override {
    std::set<pid_t> removed, failed;
    std::vector<std::string> problems;
    for (const auto& own : s_.ownDirs) {
      std::vector<std::string> entries;
      if (int rc = host_->listSubdirectories(own, &entries); rc != 0) {
        problems.push_back("list " + own + ": " + errnoText(rc));
        continue;
      }
      for (const auto& entry : entries) {
        auto pid = stalePid(entry);
        if (!pid || *pid == s_.self || host_->isAlive(*pid)) continue;
        std::string why;
        if (emptyAndRemoveCgroup(*host_, own + "/" + entry, &why)) {
          removed.insert(*pid);
        } else {
          failed.insert(*pid);
          problems.push_back(why);
        }
      }
    }
    if (error && !problems.empty()) *error += join(problems, "; ");
    int count = 0;
    for (pid_t pid : removed) count += failed.count(pid) ? 0 : 1;
    return count;
  }

 private:
  static std::vector<std::string> distinct(const std::string& a, const std::string& b) {
    if (a == b) return {a};
    return {a, b};
  }
  std::vector<std::string> bases() const { return distinct(s_.memoryBase, s_.pidsBase); }

  std::unique_ptr<CgroupHost> host_;
  Setup s_;
};

// ---- detection ----

using SetupResult = std::pair<std::optional<LinuxCgroups::Setup>, std::string>;

SetupResult setUpV1(CgroupHost& host, const std::string& ownMemory, const std::string& ownPids,
                    pid_t self) {
  const std::string base = std::string(kBasePrefix) + std::to_string(self);
  LinuxCgroups::Setup s;
  s.mode = CgroupMode::kV1;
  s.self = self;
  s.ownDirs = {ownMemory, ownPids};
  s.memoryBase = ownMemory + "/" + base;
  s.pidsBase = ownPids + "/" + base;
  std::string why;
  if (makeFreshDirectory(host, s.memoryBase, &why) != 0) return {std::nullopt, "v1: " + why};
  if (makeFreshDirectory(host, s.pidsBase, &why) != 0) {
    host.removeDirectory(s.memoryBase);
    return {std::nullopt, "v1: " + why};
  }
  auto undo = [&](std::string reason) -> SetupResult {
    host.removeDirectory(s.pidsBase);
    host.removeDirectory(s.memoryBase);
    return {std::nullopt, "v1: " + reason};
  };
  if (!host.exists(s.memoryBase + "/memory.limit_in_bytes")) {
    return undo(s.memoryBase + " is not a memory cgroup (no memory.limit_in_bytes)");
  }
  if (!host.exists(s.pidsBase + "/pids.max")) {
    return undo(s.pidsBase + " is not a pids cgroup (no pids.max)");
  }
  return {std::move(s), ""};
}

bool hasMemoryAndPids(std::string_view controllerList) {
  auto words = splitWords(controllerList);
  auto has = [&](std::string_view c) {
    return std::find(words.begin(), words.end(), c) != words.end();
  };
  return has("memory") && has("pids");
}

SetupResult setUpV2(CgroupHost& host, const std::string& own, pid_t self) {
  const std::string selfText = std::to_string(self);
  LinuxCgroups::Setup s;
  s.mode = CgroupMode::kV2;
  s.self = self;
  s.ownDirs = {own};
  s.memoryBase = s.pidsBase = own + "/" + std::string(kBasePrefix) + selfText;

  std::string text;
  if (int rc = host.readFile(own + "/cgroup.controllers", &text); rc != 0) {
    return {std::nullopt, "v2: read " + own + "/cgroup.controllers: " + errnoText(rc)};
  }
  if (!hasMemoryAndPids(text)) {
    return {std::nullopt, "v2: " + own +
                              " is not given the memory and pids controllers "
                              "(cgroup.controllers: '" +
                              std::string(trim(text)) + "')"};
  }
  // Enable memory and pids for our children (see "v2 and the no-internal-processes rule").
  const std::string subtree = own + "/cgroup.subtree_control";
  if (int rc = host.readFile(subtree, &text); rc != 0) {
    return {std::nullopt, "v2: read " + subtree + ": " + errnoText(rc)};
  }
  if (!hasMemoryAndPids(text)) {
    int rc = host.writeFile(subtree, "+memory +pids");
    if (rc == EBUSY) {
      std::string procs;
      host.readFile(own + "/cgroup.procs", &procs);
      std::vector<std::string> others;
      for (pid_t pid : parsePidList(procs)) {
        if (pid != self) others.push_back(std::to_string(pid));
      }
      if (!others.empty()) {
        return {std::nullopt, "v2: " + own + " also holds processes " + join(others, ",") +
                                  "; enabling controllers for workers needs it to hold only the "
                                  "supervisor (run it in a cgroup of its own, e.g. systemd "
                                  "Delegate=yes)"};
      }
      const std::string leaf = own + "/" + std::string(kSupervisorLeaf);
      if (int mk = host.makeDirectory(leaf); mk != 0 && mk != EEXIST) {
        return {std::nullopt, "v2: mkdir " + leaf + ": " + errnoText(mk)};
      }
      if (int mv = host.writeFile(leaf + "/cgroup.procs", selfText); mv != 0) {
        return {std::nullopt, "v2: move the supervisor into " + leaf + ": " + errnoText(mv)};
      }
      s.note = "supervisor moved into " + leaf + " to enable controllers in " + own;
      rc = host.writeFile(subtree, "+memory +pids");
      if (rc != 0) host.writeFile(own + "/cgroup.procs", selfText);  // undo, best effort
    }
    if (rc != 0) {
      return {std::nullopt, "v2: enable memory and pids in " + subtree + ": " + errnoText(rc)};
    }
  }
  std::string why;
  if (makeFreshDirectory(host, s.memoryBase, &why) != 0) return {std::nullopt, "v2: " + why};
  if (int rc = host.writeFile(s.memoryBase + "/cgroup.subtree_control", "+memory +pids"); rc != 0) {
    host.removeDirectory(s.memoryBase);
    return {std::nullopt, "v2: enable memory and pids in " + s.memoryBase +
                              "/cgroup.subtree_control: " + errnoText(rc)};
  }
  return {std::move(s), ""};
}

}  // namespace

const char* cgroupModeName(CgroupMode mode) {
  switch (mode) {
    case CgroupMode::kNone:
      return "none";
    case CgroupMode::kV1:
      return "v1";
    case CgroupMode::kV2:
      return "v2";
  }
  return "?";
}

WorkerCgroup::WorkerCgroup(std::string name, std::string memoryDir, std::string pidsDir,
                           std::vector<UniqueFd> procsFds)
    : name_(std::move(name)),
      memoryDir_(std::move(memoryDir)),
      pidsDir_(std::move(pidsDir)),
      procsFds_(std::move(procsFds)) {}

std::vector<std::string> WorkerCgroup::directories() const {
  std::vector<std::string> out;
  if (!memoryDir_.empty()) out.push_back(memoryDir_);
  if (!pidsDir_.empty() && pidsDir_ != memoryDir_) out.push_back(pidsDir_);
  return out;
}

std::vector<int> WorkerCgroup::procsFds() const {
  std::vector<int> out;
  for (const auto& fd : procsFds_) out.push_back(fd.get());
  return out;
}

std::unique_ptr<Cgroups> makeNoCgroups(std::string why) {
  return std::make_unique<NoCgroups>(std::move(why));
}

std::unique_ptr<Cgroups> detectCgroupsOn(std::unique_ptr<CgroupHost> host,
                                         std::string_view procSelfCgroupText,
                                         std::string_view mountinfoText, pid_t selfPid,
                                         std::string* whyNone) {
  OwnCgroupDirs own = locateOwnCgroups(procSelfCgroupText, mountinfoText);
  std::vector<std::string> reasons;
  if (own.v1Memory && own.v1Pids) {
    auto [setup, why] = setUpV1(*host, *own.v1Memory, *own.v1Pids, selfPid);
    if (setup) return std::make_unique<LinuxCgroups>(std::move(host), std::move(*setup));
    reasons.push_back(why);
  }
  if (own.v2) {
    auto [setup, why] = setUpV2(*host, *own.v2, selfPid);
    if (setup) return std::make_unique<LinuxCgroups>(std::move(host), std::move(*setup));
    reasons.push_back(why);
  }
  reasons.insert(reasons.end(), own.notes.begin(), own.notes.end());
  std::string why = reasons.empty() ? "no cgroup hierarchy found" : join(reasons, "; ");
  if (whyNone) *whyNone = why;
  return makeNoCgroups(why);
}

std::unique_ptr<Cgroups> detectCgroups(const std::string& procSelfCgroup,
                                       const std::string& mountinfo, std::string* whyNone) {
  auto host = makeLinuxCgroupHost();
  std::string cgroupText, mountText;
  if (int rc = host->readFile(procSelfCgroup, &cgroupText); rc != 0) {
    std::string why = "read " + procSelfCgroup + ": " + errnoText(rc);
    if (whyNone) *whyNone = why;
    return makeNoCgroups(why);
  }
  if (int rc = host->readFile(mountinfo, &mountText); rc != 0) {
    std::string why = "read " + mountinfo + ": " + errnoText(rc);
    if (whyNone) *whyNone = why;
    return makeNoCgroups(why);
  }
  return detectCgroupsOn(std::move(host), cgroupText, mountText, ::getpid(), whyNone);
}

}  // namespace bulkhead::os
