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
#include "os/parse_number.h"

namespace bulkhead::os {

namespace {

constexpr std::string_view kBasePrefix = "bulkhead-";
constexpr std::string_view kSupervisorLeaf = "supervisor";

std::string errnoText(int error) { return std::strerror(error); }

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

template <typename Fn>
void forEachLine(std::string_view text, Fn fn) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    fn(text.substr(pos, eol - pos));
    pos = eol + 1;
  }
}

std::vector<std::string_view> splitOn(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t pos = 0;
  for (;;) {
    std::size_t next = s.find(sep, pos);
    if (next == std::string_view::npos) {
      out.push_back(s.substr(pos));
      return out;
    }
    out.push_back(s.substr(pos, next - pos));
    pos = next + 1;
  }
}

std::vector<std::string_view> splitWords(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t pos = 0;
  while (pos < s.size()) {
    while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t' || s[pos] == '\n')) ++pos;
    std::size_t end = pos;
    while (end < s.size() && s[end] != ' ' && s[end] != '\t' && s[end] != '\n') ++end;
    if (end > pos) out.push_back(s.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

// mountinfo escapes space, tab, newline and backslash as \ooo (man 5 proc).
std::string decodeOctalEscapes(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
        s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out.push_back(
          static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

bool contains(const std::vector<std::string>& v, std::string_view x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

// The directory of cgroup `path` under a mount of its hierarchy whose root is `root`, or nullopt
// when the cgroup lies outside what that mount shows.
std::optional<std::string> dirUnderMount(const MountInfoLine& m, const std::string& path) {
  std::string rel;
  if (m.root == "/") {
    rel = path;
  } else if (path == m.root) {
    rel = "";
  } else if (path.size() > m.root.size() && path.compare(0, m.root.size(), m.root) == 0 &&
             path[m.root.size()] == '/') {
    rel = path.substr(m.root.size());
  } else {
    return std::nullopt;
  }
  std::string dir = m.mountPoint;
  if (rel != "/") dir += rel;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (const auto& p : parts) {
    if (!out.empty()) out += sep;
    out += p;
  }
  return out;
}

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

// ---- the real host ----

class LinuxCgroupHost final : public CgroupHost {
 public:
  int makeDirectory(const std::string& path) override {
    return ::mkdir(path.c_str(), 0755) == 0 ? 0 : errno;
  }
  int removeDirectory(const std::string& path) override {
    return ::rmdir(path.c_str()) == 0 ? 0 : errno;
  }
  bool exists(const std::string& path) const override { return ::access(path.c_str(), F_OK) == 0; }
  int readFile(const std::string& path, std::string* out) const override {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return errno;
    out->clear();
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      if (n == 0) return 0;
      out->append(buf, static_cast<std::size_t>(n));
    }
  }
  int writeFile(const std::string& path, std::string_view text) override {
    // No O_CREAT or O_TRUNC: cgroupfs files exist or the write is wrong. One write(2) call: the
    // kernel parses each write on its own.
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.valid()) return errno;
    ssize_t n;
    do {
      n = ::write(fd.get(), text.data(), text.size());
    } while (n < 0 && errno == EINTR);
    if (n < 0) return errno;
    return static_cast<std::size_t>(n) == text.size() ? 0 : EIO;
  }
  int openForWrite(const std::string& path, UniqueFd* out) override {
    out->reset(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    return out->valid() ? 0 : errno;
  }
  int listSubdirectories(const std::string& path, std::vector<std::string>* names) const override {
    names->clear();
    DIR* dir = ::opendir(path.c_str());
    if (!dir) return errno;
    while (dirent* e = ::readdir(dir)) {
      std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      bool isDir = e->d_type == DT_DIR;
      if (e->d_type == DT_UNKNOWN) {
        struct stat st {};
        isDir = ::fstatat(::dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                S_ISDIR(st.st_mode);
      }
      if (isDir) names->emplace_back(name);
    }
    ::closedir(dir);
    return 0;
  }
  int killProcess(pid_t pid) override {
    if (pid <= 0) return EINVAL;          // never "every process" or a process group
    if (pid == ::getpid()) return EPERM;  // a supervisor found inside a worker cgroup is a bug
    return ::kill(pid, SIGKILL) == 0 || errno == ESRCH ? 0 : errno;
  }
  bool isAlive(pid_t pid) const override {
    return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM);
  }
  void pause(int milliseconds) override {
    timespec ts{milliseconds / 1000, (milliseconds % 1000) * 1000000L};
    while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
  }
};

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

std::unique_ptr<CgroupHost> makeLinuxCgroupHost() { return std::make_unique<LinuxCgroupHost>(); }

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

// ---- parsers ----

std::vector<ProcCgroupLine> parseProcCgroup(std::string_view text) {
  std::vector<ProcCgroupLine> out;
  forEachLine(text, [&](std::string_view line) {
    // "hierarchy-ID:controller-list:cgroup-path"; the path may itself contain ':'.
    std::size_t a = line.find(':');
    if (a == std::string_view::npos) return;
    std::size_t b = line.find(':', a + 1);
    if (b == std::string_view::npos) return;
    auto id = parseWhole<int>(line.substr(0, a));
    std::string_view path = line.substr(b + 1);
    if (!id || path.empty() || path.front() != '/') return;
    ProcCgroupLine l;
    l.hierarchyId = *id;
    std::string_view controllers = line.substr(a + 1, b - a - 1);
    if (!controllers.empty()) {
      for (auto c : splitOn(controllers, ',')) l.controllers.emplace_back(c);
    }
    l.path = std::string(path);
    out.push_back(std::move(l));
  });
  return out;
}

std::vector<MountInfoLine> parseMountInfo(std::string_view text) {
  std::vector<MountInfoLine> out;
  forEachLine(text, [&](std::string_view line) {
    auto words = splitWords(line);
    // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
    auto dash = std::find(words.begin() + std::min<std::size_t>(words.size(), 6), words.end(),
                          std::string_view("-"));
    if (words.size() < 6 || dash == words.end() || words.end() - dash < 4) return;
    MountInfoLine m;
    m.root = decodeOctalEscapes(words[3]);
    m.mountPoint = decodeOctalEscapes(words[4]);
    m.fsType = std::string(dash[1]);
    for (auto o : splitOn(dash[3], ',')) m.superOptions.emplace_back(o);
    out.push_back(std::move(m));
  });
  return out;
}

OwnCgroupDirs locateOwnCgroups(std::string_view procSelfCgroupText,
                               std::string_view mountinfoText) {
  OwnCgroupDirs out;
  auto lines = parseProcCgroup(procSelfCgroupText);
  auto mounts = parseMountInfo(mountinfoText);

  auto findV1 = [&](const std::string& controller) -> std::optional<std::string> {
    auto line = std::find_if(lines.begin(), lines.end(), [&](const ProcCgroupLine& l) {
      return l.hierarchyId != 0 && contains(l.controllers, controller);
    });
    if (line == lines.end()) {
      out.notes.push_back("no v1 " + controller + " hierarchy");
      return std::nullopt;
    }
    bool mounted = false;
    for (const auto& m : mounts) {
      if (m.fsType != "cgroup" || !contains(m.superOptions, controller)) continue;
      mounted = true;
      if (auto dir = dirUnderMount(m, line->path)) return dir;
    }
    out.notes.push_back(mounted ? "v1 " + controller + " cgroup " + line->path +
                                      " is outside every mount of its hierarchy"
                                : "v1 " + controller + " hierarchy is not mounted");
    return std::nullopt;
  };
  out.v1Memory = findV1("memory");
  out.v1Pids = findV1("pids");

  auto unified = std::find_if(lines.begin(), lines.end(), [](const ProcCgroupLine& l) {
    return l.hierarchyId == 0 && l.controllers.empty();
  });
  if (unified == lines.end()) {
    out.notes.push_back("no v2 hierarchy");
  } else {
    bool mounted = false;
    for (const auto& m : mounts) {
      if (m.fsType != "cgroup2") continue;
      mounted = true;
      if (auto dir = dirUnderMount(m, unified->path)) {
        out.v2 = dir;
        break;
      }
    }
    if (!out.v2) {
      out.notes.push_back(mounted ? "v2 cgroup " + unified->path + " is outside every cgroup2 mount"
                                  : "v2 hierarchy is not mounted");
    }
  }
  return out;
}

std::optional<std::uint64_t> parseKeyedCounter(std::string_view text, std::string_view key) {
  std::optional<std::uint64_t> found;
  forEachLine(text, [&](std::string_view line) {
    auto words = splitWords(line);
    if (!found && words.size() == 2 && words[0] == key) found = parseWhole<std::uint64_t>(words[1]);
  });
  return found;
}

std::optional<std::uint64_t> parseCounterFile(std::string_view text) {
  return parseWhole<std::uint64_t>(trim(text));
}

std::vector<pid_t> parsePidList(std::string_view text) {
  std::vector<pid_t> out;
  for (auto w : splitWords(text)) {
    if (auto pid = parseWhole<pid_t>(w); pid && *pid > 0) out.push_back(*pid);
  }
  return out;
}

}  // namespace bulkhead::os
