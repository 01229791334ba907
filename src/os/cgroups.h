#pragma once
// Per-worker cgroups: every worker gets one, so its whole process tree (grandchildren that left
// its process group or session included) can be found and killed when it ends; with memory_limit
// or pids_limit also the limits, so the kernel's OOM killer and the fork/thread limit hit that
// worker only, never the supervisor.
//
// How this works:
// - At start-up detectCgroups() reads /proc/self/cgroup and /proc/self/mountinfo (pure parsers
//   below, tested on fixtures) to find the supervisor's OWN cgroup in each hierarchy, then tries,
//   in order:
//     v1: the memory and pids v1 hierarchies are mounted (e.g. Debian's hybrid layout): create
//         <own memory>/bulkhead-<pid> and <own pids>/bulkhead-<pid>;
//     v2: the unified hierarchy offers memory and pids in our cgroup.controllers: enable them for
//         our children (see "v2 and the no-internal-processes rule" below), then create
//         <own>/bulkhead-<pid> and enable them there too;
//   and otherwise answers kNone with the reason; the supervisor logs it once and falls back to
//   rlimits and /proc sampling.
// - create() makes <base>/<name> for one worker (one directory per v1 controller, one in v2),
//   writes the limits and opens its cgroup.procs file(s). Without limits, v1 makes the pids
//   directory only: membership is all that is needed to kill the tree. The supervisor forks; the
//   child writes "0" (itself) to each procsFds() fd between fork and exec, so the worker runs
//   inside its cgroup from its first instruction (works in v1 and v2; man 7 cgroups,
//   "cgroup.procs").
// - counters() reads the kernel's own tallies: an OOM kill shows in oom_kill, a failed fork or
//   pthread_create in pids.events "max". This is how the supervisor tells an OOM kill from any
//   other SIGKILL.
// - remove() SIGKILLs whatever is still inside (v2: cgroup.kill where the kernel has it) until the
//   cgroup is empty, then removes the directories (cgroup_kill.h). cleanupStale() does the same at
//   start-up for bulkhead-<pid> directories of supervisors that are no longer alive (in every
//   hierarchy we use), so what a SIGKILLed supervisor's workers left running dies at the next
//   start.
//
// v2 and the no-internal-processes rule (Documentation/admin-guide/cgroup-v2.rst): a non-root
// cgroup may enable a controller in cgroup.subtree_control only while it holds no processes, and
// the supervisor itself is in <own>. When writing "+memory +pids" to <own>/cgroup.subtree_control
// fails with EBUSY, the supervisor moves itself into the leaf <own>/supervisor and tries again.
// It refuses (kNone, with the pids in the reason) when <own> holds processes other than itself:
// moving strangers is not ours to do; run it in a cgroup of its own (systemd: Delegate=yes). The
// move is not undone at exit (it cannot be while <own> has controllers enabled).
//
// v1 details: memory.limit_in_bytes and, when present, memory.memsw.limit_in_bytes to the same
// value (no escape into swap); memory.swappiness 0; memory.oom_control 0 (oom_kill_disable is
// inherited from the parent in v1; with it set an OOM would freeze the worker instead of killing
// it); pids.max. memory.use_hierarchy is left alone: the worker's cgroup is a leaf, and the limit
// of the cgroup that hits it decides whose task the OOM killer picks.
//
// Errors follow the house policy: cgroup EPERM/EROFS/EBUSY are expected environment failures and
// come back as text (whyNone, *error) for the caller to log once; nothing here throws or aborts.
// Not thread-safe: one event loop owns the Cgroups object.

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "os/unique_fd.h"

namespace bulkhead::os {

enum class CgroupMode { kNone, kV1, kV2 };
const char* cgroupModeName(CgroupMode mode);  // "none", "v1", "v2"

struct CgroupLimits {
  std::optional<std::uint64_t> memoryBytes;  // unset: no memory limit
  std::optional<std::uint64_t> pids;         // unset: no pids limit (tasks: processes + threads)
};

struct CgroupCounters {
  std::uint64_t oomKills = 0;            // v1: memory.oom_control "oom_kill N"; v2: memory.events
  std::uint64_t pidsMaxEvents = 0;       // pids.events "max N": forks/threads refused
  std::uint64_t memoryPeakBytes = 0;     // v1: memory.max_usage_in_bytes; v2: memory.peak or 0
  std::uint64_t memoryCurrentBytes = 0;  // v1: memory.usage_in_bytes; v2: memory.current
  std::uint64_t pidsCurrent = 0;         // pids.current
};

// One worker's cgroup: its directories and its open cgroup.procs files. Move-only.
class WorkerCgroup {
 public:
  WorkerCgroup() = default;
  // memoryDir and pidsDir are the same directory in v2; memoryDir is empty for a v1 cgroup made
  // without limits. Public so fakes can make one.
  WorkerCgroup(std::string name, std::string memoryDir, std::string pidsDir,
               std::vector<UniqueFd> procsFds);
  WorkerCgroup(WorkerCgroup&&) noexcept = default;
  WorkerCgroup& operator=(WorkerCgroup&&) noexcept = default;
  WorkerCgroup(const WorkerCgroup&) = delete;
  WorkerCgroup& operator=(const WorkerCgroup&) = delete;

  const std::string& name() const { return name_; }
  const std::string& memoryDir() const { return memoryDir_; }
  const std::string& pidsDir() const { return pidsDir_; }
  // The distinct directories: two in v1 (memory, pids; pids only without limits), one in v2.
  std::vector<std::string> directories() const;

  // cgroup.procs of each directory, opened O_WRONLY|O_CLOEXEC. The child writes "0" to each,
  // between fork and exec (write(2) is async-signal-safe); close-on-exec drops them at exec.
  // Empty after closeProcsFds().
  std::vector<int> procsFds() const;
  void closeProcsFds() { procsFds_.clear(); }
  std::vector<UniqueFd> takeProcsFds() { return std::exchange(procsFds_, {}); }

 private:
  std::string name_;
  std::string memoryDir_;
  std::string pidsDir_;
  std::vector<UniqueFd> procsFds_;
};

class Cgroups {
 public:
  virtual ~Cgroups() = default;
  virtual CgroupMode mode() const = 0;
  // One line for the log, e.g. "cgroup v1: memory at /sys/fs/cgroup/memory/x/bulkhead-123, pids
  // at /sys/fs/cgroup/pids/bulkhead-123".
  virtual std::string describe() const = 0;
  // Creates <own>/bulkhead-<supervisorPid>/<name> with the limits (none: membership only, the
  // pids hierarchy alone in v1). name: 1-64 of [A-Za-z0-9_.-], not starting with '.'. An existing
  // cgroup of that name (a worker of the same name that was never removed) is emptied and replaced.
  // On failure: nullopt, *error says why.
  virtual std::optional<WorkerCgroup> create(const std::string& name, const CgroupLimits& limits,
                                             std::string* error) = 0;
  // Missing files read as 0 (e.g. memory.peak before Linux 5.19). Read them before remove().
  virtual CgroupCounters counters(const WorkerCgroup& cg) const = 0;
  // SIGKILLs everything left inside (bounded tries, at most about a second when something keeps
  // forking) and removes the directories. Cheap when the worker was already reaped: then nothing
  // is left inside. false + *error when something could not be killed or removed.
  virtual bool remove(WorkerCgroup& cg, std::string* error) = 0;
  // At start-up: removes the bulkhead-<pid> directories under our own cgroup(s) whose supervisor
  // is no longer alive, killing whatever is still in them. Returns how many supervisors' leftovers
  // were removed; failures are appended to *error (may be null). A dead supervisor's pid that was
  // reused by a live process keeps its leftovers until a later start-up.
  virtual int cleanupStale(std::string* error) = 0;
};

// ---- detection ----

// The host as the cgroup code sees it: a few file calls and process calls, each returning 0 or
// an errno. LinuxCgroupHost is the real one; tests use an in-memory fake that emulates the
// kernel's rules (EBUSY, process migration, kill) without root.
class CgroupHost {
 public:
  virtual ~CgroupHost() = default;
  virtual int makeDirectory(const std::string& path) = 0;
  virtual int removeDirectory(const std::string& path) = 0;
  virtual bool exists(const std::string& path) const = 0;
  virtual int readFile(const std::string& path, std::string* out) const = 0;
  virtual int writeFile(const std::string& path, std::string_view text) = 0;
  virtual int openForWrite(const std::string& path, UniqueFd* out) = 0;  // O_WRONLY|O_CLOEXEC
  virtual int listSubdirectories(const std::string& path,
                                 std::vector<std::string>* names) const = 0;
  virtual int killProcess(pid_t pid) = 0;  // SIGKILL; ESRCH counts as done
  virtual bool isAlive(pid_t pid) const = 0;
  virtual void pause(int milliseconds) = 0;  // between kill rounds
};
std::unique_ptr<CgroupHost> makeLinuxCgroupHost();

// Always returns an object: mode() kNone when no hierarchy is usable, with the reason in
// *whyNone (and in describe()).
std::unique_ptr<Cgroups> detectCgroups(const std::string& procSelfCgroup = "/proc/self/cgroup",
                                       const std::string& mountinfo = "/proc/self/mountinfo",
                                       std::string* whyNone = nullptr);
// The same over given texts, host and pid (tests).
std::unique_ptr<Cgroups> detectCgroupsOn(std::unique_ptr<CgroupHost> host,
                                         std::string_view procSelfCgroupText,
                                         std::string_view mountinfoText, pid_t selfPid,
                                         std::string* whyNone);
std::unique_ptr<Cgroups> makeNoCgroups(std::string why);

// ---- pure parsers (fixtures in tests/data/cgroup/) ----

struct ProcCgroupLine {
  int hierarchyId = 0;
  std::vector<std::string> controllers;  // empty for v2's "0::/path"; "name=systemd" kept as is
  std::string path;                      // inside the hierarchy, starts with '/'
};
// /proc/PID/cgroup (man 7 cgroups). Malformed lines are skipped.
std::vector<ProcCgroupLine> parseProcCgroup(std::string_view text);

struct MountInfoLine {
  std::string root;                       // field 4: the mount's root inside its filesystem
  std::string mountPoint;                 // field 5, octal escapes (\040 ...) decoded
  std::string fsType;                     // after " - "
  std::vector<std::string> superOptions;  // last field, split on ','
};
// /proc/PID/mountinfo (man 5 proc). Malformed lines are skipped.
std::vector<MountInfoLine> parseMountInfo(std::string_view text);

// Where our own cgroup directories are, as absolute paths, per hierarchy.
struct OwnCgroupDirs {
  std::optional<std::string> v1Memory;
  std::optional<std::string> v1Pids;
  std::optional<std::string> v2;   // our directory in the unified hierarchy (controllers unknown)
  std::vector<std::string> notes;  // why a hierarchy is missing, for whyNone
};
OwnCgroupDirs locateOwnCgroups(std::string_view procSelfCgroupText, std::string_view mountinfoText);

// The number after `key` on a "key N" line (memory.events, pids.events, memory.oom_control).
std::optional<std::uint64_t> parseKeyedCounter(std::string_view text, std::string_view key);
// A number file such as memory.current or pids.current ("max" is not a number: nullopt).
std::optional<std::uint64_t> parseCounterFile(std::string_view text);
// The pids listed in a cgroup.procs file.
std::vector<pid_t> parsePidList(std::string_view text);

}  // namespace bulkhead::os
