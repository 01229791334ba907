#pragma once
// Containment without a cgroup: after a worker died, finding the processes it started that outlived
// it, and killing them with everything they started. (A worker with a cgroup needs none of this:
// its cgroup is emptied, cgroup_kill.h.)
//
// Why it is needed: the supervisor is a child subreaper (PR_SET_CHILD_SUBREAPER, man 2 prctl), so
// a process whose parent dies is reparented to it. Killing a dead worker's process group takes its
// plain children, but not one that called setsid() or setpgid() (subprocess's
// start_new_session=True, any daemonizing tool): reparented, it is one more child of the
// supervisor, and the kernel keeps no trace of where it came from.
//
// What ties such an orphan (a live child of the supervisor that is not a known worker or zygote)
// to a dead worker; either is enough:
// - Lineage: every sample interval the supervisor reads the process table (/proc/PID/stat of every
//   process: parent, state, start time) and records, per worker without a cgroup, its descendants
//   as (pid, start time) keys; a reused pid has another start time, so it never matches. A recorded
//   process stays recorded while it lives, also after it was reparented. updateLineage().
// - The tag: a worker's environment has BULKHEAD_WORKER_ID=<its name>, unique in the supervisor's
//   life, which its descendants inherit through fork and exec unless given another environment.
//   /proc/PID/environ is the environment a process was exec'd with (man 5 proc), so the tag finds
//   what was started after the last lineage walk, e.g. during the job that crashed the worker.
// At shutdown every orphan is killed: nothing the supervisor started may outlive it.
//
// Zygote safety: a zygote's spare, and a worker it forked whose FORKED frame is not read yet, are
// children of the supervisor that it does not know (docs/protocol.md, "Zygote"). Neither can
// match: they descend from the zygote, never from a worker, and their /proc/PID/environ is the one
// the zygote was exec'd with (BULKHEAD_WORKER_ID=<pool>-zygote; a forked worker replaces
// os.environ, which /proc/PID/environ does not show). Known workers and zygotes are never
// signalled, and the search for descendants never passes through them.
//
// Killing without racing fork(): victims are stopped first (SIGSTOP: a stopped process cannot
// fork, and its children stay its children), and the table is read again until a read finds no
// victim that is not stopped yet (bounded rounds); then every stopped victim gets SIGKILL, which
// ends a stopped process too (man 7 signal). Each signal goes through a pidfd whose process is
// checked against the key's start time after opening it (man 2 pidfd_open), so a pid reused
// meanwhile is never hit.
//
// Known gaps, by construction: a process that both got a fresh environment and was started after
// the last lineage walk is found only at shutdown; so are the orphans of a zygote-forked worker's
// plain fork() children started after the last walk (they carry the zygote's tag). Nothing here
// survives a SIGKILL of the supervisor: only cgroups do (Cgroups::cleanupStale).
//
// The parsers and the selector are pure functions over text and tables, tested on fixtures; the
// /proc walk takes its root as a parameter, like ProcReader.

#include <sys/types.h>

#include <compare>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::os {

struct ProcEntry {
  pid_t pid = 0;
  pid_t parent = 0;
  char state = '?';             // field 3: R, S, D, T, Z, X, ...
  std::uint64_t startTime = 0;  // field 22: clock ticks after boot
  bool exited() const { return state == 'Z' || state == 'X' || state == 'x'; }
};
using ProcTable = std::vector<ProcEntry>;

// One process, immune to pid reuse: no two processes have the same pid and start time.
struct ProcessKey {
  pid_t pid = 0;
  std::uint64_t startTime = 0;
  auto operator<=>(const ProcessKey&) const = default;
};

// /proc/PID/stat (man 5 proc): pid, state, ppid, starttime. The comm field may hold spaces and
// ')'; fields are counted from the last ')'. nullopt when malformed.
std::optional<ProcEntry> parseProcStatEntry(std::string_view statText);

// The value of `name` in a /proc/PID/environ text (NUL-separated NAME=value), or nullopt.
std::optional<std::string> environValue(std::string_view environText, std::string_view name);

// Live descendants of root (root excluded), found through the parent links of the table.
std::set<ProcessKey> descendantsOf(const ProcTable& table, pid_t root);

// A worker's lineage after one more walk: its live descendants now, plus the processes recorded
// before that still live (reparented ones among them). Bounded by what is alive.
std::set<ProcessKey> updateLineage(const ProcTable& table, pid_t worker,
                                   const std::set<ProcessKey>& recorded);

struct OrphanQuery {
  pid_t self = 0;                   // the supervisor
  std::set<pid_t> known;            // live workers and zygotes: never signalled nor crossed
  std::set<pid_t> releasedWorkers;  // given up but not reaped (among known): their descendants go
  std::set<ProcessKey> lineage;     // recorded descendants of the dead worker(s)
  std::string tagName;              // the environment variable naming a worker
  std::set<std::string> tags;       // the dead workers' names
  bool everything = false;          // shutdown: every orphan
};

// Live children of query.self that are not known: the candidates whose tag must be read.
std::vector<pid_t> orphanCandidates(const ProcTable& table, const OrphanQuery& query);

// The processes to kill: the orphans tied to the dead worker(s) by lineage, tag (tagsRead: pid ->
// value read from its environ) or `everything`, the children of releasedWorkers, and every live
// descendant of those. Never query.self, pid 1 or a known process, and the search for descendants
// never passes through one.
std::set<ProcessKey> selectVictims(const ProcTable& table, const OrphanQuery& query,
                                   const std::map<pid_t, std::string>& tagsRead);

// ---- the I/O ----

class ProcessHost {
 public:
  virtual ~ProcessHost() = default;
  virtual ProcTable readTable() = 0;
  virtual std::optional<std::string> readEnvironValue(pid_t pid, std::string_view name) = 0;
  // Sends sig to exactly that process; false when it is gone (or its pid now names another).
  virtual bool signal(const ProcessKey& process, int sig) = 0;
};

// Every process under procRoot whose stat parses; processes that vanish during the walk are
// skipped (races are normal here).
ProcTable readProcTable(const std::string& procRoot);

// The real host over procRoot. Signals go to real pids: use "/proc" unless testing readTable.
std::unique_ptr<ProcessHost> makeLinuxProcessHost(std::string procRoot = "/proc");

struct SweepResult {
  std::vector<ProcessKey> killed;      // SIGKILL sent
  std::map<pid_t, std::string> tagOf;  // the tag of each orphan that had one (for the log)
  int rounds = 0;                      // table reads
  bool settled = true;                 // false: new victims still appeared at the last round
};
inline constexpr int kOrphanSweepRounds = 8;

// Stops every victim until the set is closed, then kills them all (see the top of this file).
SweepResult killOrphans(ProcessHost& host, const OrphanQuery& query);

}  // namespace bulkhead::os
