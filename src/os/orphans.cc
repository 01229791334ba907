#include "os/orphans.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <charconv>
#include <deque>

#include "os/parse_number.h"
#include "os/proc.h"
#include "os/process.h"
#include "os/unique_fd.h"

namespace bulkhead::os {

namespace {

// /proc/PID/stat is a few hundred bytes; the comm field is at most 64.
constexpr std::size_t kStatBytes = 4096;
// Environments are a few KiB; the kernel's own bound (ARG_MAX, 1/4 of the stack limit) is larger,
// but a tag past the first MiB is not worth reading for.
constexpr std::size_t kEnvironBytes = 1 << 20;
constexpr int kEnvironRetries = 50;  // at most 100 ms for one process
constexpr long kEnvironRetryPauseNs = 2'000'000;

// Reads at most `limit` bytes of the file at dirFd/name; nullopt when it cannot be opened or read
// (the process is gone, or not ours to read).
std::optional<std::string> readBounded(int dirFd, const char* name, std::size_t limit) {
  UniqueFd fd(::openat(dirFd, name, O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return std::nullopt;
  std::string out;
  char buf[4096];
  while (out.size() < limit) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::nullopt;
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

std::optional<ProcEntry> readEntry(int rootFd, pid_t pid) {
  const std::string path = std::to_string(pid) + "/stat";
  auto text = readBounded(rootFd, path.c_str(), kStatBytes);
  if (!text) return std::nullopt;
  return parseProcStatEntry(*text);
}

std::multimap<pid_t, const ProcEntry*> childrenByParent(const ProcTable& table) {
  std::multimap<pid_t, const ProcEntry*> out;
  for (const auto& e : table) out.emplace(e.parent, &e);
  return out;
}

ProcessKey keyOf(const ProcEntry& e) { return {e.pid, e.startTime}; }

// Every live process below the seeds, the seeds included, never entering a stopper.
std::set<ProcessKey> closure(const ProcTable& table, const std::vector<const ProcEntry*>& seeds,
                             const std::set<pid_t>& stoppers) {
  auto children = childrenByParent(table);
  std::set<ProcessKey> out;
  std::set<pid_t> seen;
  std::deque<const ProcEntry*> todo(seeds.begin(), seeds.end());
  while (!todo.empty()) {
    const ProcEntry* e = todo.front();
    todo.pop_front();
    if (e->exited() || stoppers.count(e->pid) || !seen.insert(e->pid).second) continue;
    out.insert(keyOf(*e));
    auto [from, to] = children.equal_range(e->pid);
    for (auto it = from; it != to; ++it) todo.push_back(it->second);
  }
  return out;
}

class LinuxProcessHost final : public ProcessHost {
 public:
  explicit LinuxProcessHost(std::string procRoot)
      : procRoot_(std::move(procRoot)),
        root_(::open(procRoot_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {}

  ProcTable readTable() override { return readProcTable(procRoot_); }

  std::optional<std::string> readEnvironValue(pid_t pid, std::string_view name) override {
    if (!root_.valid() || pid <= 0) return std::nullopt;
    const std::string path = std::to_string(pid) + "/environ";
    auto text = readBounded(root_.get(), path.c_str(), kEnvironBytes);
    // Empty: most likely a process in the middle of execve. Once the old image is gone (and a
    // vfork parent, e.g. Python's subprocess, has resumed and may have crashed meanwhile), the new
    // one has no environment until the kernel has set up its stack (mm->env_end is still 0 and
    // environ reads as empty, fs/proc/base.c). On a loaded machine that window is long enough for
    // its worker to die and be swept: read again for a short, bounded while. A process that
    // really has an empty environment costs this wait once per sweep.
    for (int tries = 0; text && text->empty() && tries < kEnvironRetries; ++tries) {
      timespec pause{0, kEnvironRetryPauseNs};
      ::nanosleep(&pause, nullptr);
      text = readBounded(root_.get(), path.c_str(), kEnvironBytes);
    }
    if (!text) return std::nullopt;
    return environValue(*text, name);
  }

  bool signal(const ProcessKey& process, int sig) override {
    if (process.pid <= 1 || process.pid == ::getpid() || !root_.valid()) return false;
    // Open first, then check: once the pidfd is open it names one process for good, so a start
    // time read afterwards that matches proves it is the one we mean.
    UniqueFd pidfd = openPidfd(process.pid);
    if (!pidfd.valid()) return false;
    auto entry = readEntry(root_.get(), process.pid);
    if (!entry || entry->startTime != process.startTime) return false;
    return signalViaPidfd(pidfd.get(), sig);
  }

 private:
  std::string procRoot_;
  UniqueFd root_;
};

}  // namespace

std::optional<ProcEntry> parseProcStatEntry(std::string_view statText) {
  std::size_t space = statText.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  auto pid = parseWhole<pid_t>(statText.substr(0, space));
  auto state = procStatField(statText, 3);
  auto parent = procStatField(statText, 4);
  auto start = procStatField(statText, 22);
  if (!pid || *pid <= 0 || !state || state->size() != 1 || !parent || !start) return std::nullopt;
  auto parentPid = parseWhole<pid_t>(*parent);
  auto startTime = parseWhole<std::uint64_t>(*start);
  if (!parentPid || !startTime) return std::nullopt;
  return ProcEntry{*pid, *parentPid, state->front(), *startTime};
}

std::optional<std::string> environValue(std::string_view environText, std::string_view name) {
  std::size_t pos = 0;
  while (pos < environText.size()) {
    std::size_t end = environText.find('\0', pos);
    if (end == std::string_view::npos) end = environText.size();
    std::string_view entry = environText.substr(pos, end - pos);
    if (entry.size() > name.size() && entry.substr(0, name.size()) == name &&
        entry[name.size()] == '=') {
      return std::string(entry.substr(name.size() + 1));
    }
    pos = end + 1;
  }
  return std::nullopt;
}

std::set<ProcessKey> descendantsOf(const ProcTable& table, pid_t root) {
  std::vector<const ProcEntry*> seeds;
  for (const auto& e : table) {
    if (e.parent == root && e.pid != root) seeds.push_back(&e);
  }
  return closure(table, seeds, {root});
}

std::set<ProcessKey> updateLineage(const ProcTable& table, pid_t worker,
                                   const std::set<ProcessKey>& recorded) {
  std::set<ProcessKey> out = descendantsOf(table, worker);
  for (const auto& e : table) {
    if (!e.exited() && recorded.count(keyOf(e))) out.insert(keyOf(e));
  }
  return out;
}

std::vector<pid_t> orphanCandidates(const ProcTable& table, const OrphanQuery& query) {
  std::vector<pid_t> out;
  for (const auto& e : table) {
    if (e.parent == query.self && e.pid != query.self && e.pid > 1 && !e.exited() &&
        !query.known.count(e.pid)) {
      out.push_back(e.pid);
    }
  }
  return out;
}

std::set<ProcessKey> selectVictims(const ProcTable& table, const OrphanQuery& query,
                                   const std::map<pid_t, std::string>& tagsRead) {
  std::set<pid_t> candidates;
  for (pid_t pid : orphanCandidates(table, query)) candidates.insert(pid);
  std::vector<const ProcEntry*> seeds;
  for (const auto& e : table) {
    if (e.exited() || e.pid <= 1 || e.pid == query.self || query.known.count(e.pid)) continue;
    bool seed = query.lineage.count(keyOf(e)) > 0 || query.releasedWorkers.count(e.parent) > 0;
    if (candidates.count(e.pid)) {
      auto tag = tagsRead.find(e.pid);
      seed =
          seed || query.everything || (tag != tagsRead.end() && query.tags.count(tag->second) > 0);
    }
    if (seed) seeds.push_back(&e);
  }
  std::set<pid_t> stoppers = query.known;
  stoppers.insert(query.self);
  stoppers.insert(1);
  return closure(table, seeds, stoppers);
}

ProcTable readProcTable(const std::string& procRoot) {
  ProcTable out;
  DIR* dir = ::opendir(procRoot.c_str());
  if (!dir) return out;
  while (dirent* d = ::readdir(dir)) {
    auto pid = parseWhole<pid_t>(d->d_name);
    if (!pid || *pid <= 0) continue;
    if (auto entry = readEntry(::dirfd(dir), *pid)) out.push_back(*entry);
  }
  ::closedir(dir);
  return out;
}

std::unique_ptr<ProcessHost> makeLinuxProcessHost(std::string procRoot) {
  return std::make_unique<LinuxProcessHost>(std::move(procRoot));
}

SweepResult killOrphans(ProcessHost& host, const OrphanQuery& query) {
  SweepResult result;
  OrphanQuery q = query;
  std::set<ProcessKey> stopped;
  result.settled = false;
  while (result.rounds < kOrphanSweepRounds) {
    ProcTable table = host.readTable();
    ++result.rounds;
    std::map<pid_t, std::string> tags;
    if (!q.tagName.empty()) {
      for (pid_t pid : orphanCandidates(table, q)) {
        if (result.tagOf.count(pid)) {
          tags[pid] = result.tagOf[pid];
        } else if (auto value = host.readEnvironValue(pid, q.tagName)) {
          tags[pid] = result.tagOf[pid] = std::move(*value);
        }
      }
    }
    // What is stopped stays a victim, and so does what it forked before it stopped.
    q.lineage.insert(stopped.begin(), stopped.end());
    bool fresh = false;
    for (const auto& victim : selectVictims(table, q, tags)) {
      if (!stopped.insert(victim).second) continue;
      fresh = true;
      host.signal(victim, SIGSTOP);  // a gone one is simply not found again
    }
    if (!fresh) {
      result.settled = true;
      break;
    }
  }
  std::map<pid_t, std::string> tagOf;
  for (const auto& victim : stopped) {
    if (!host.signal(victim, SIGKILL)) continue;
    result.killed.push_back(victim);
    if (auto it = result.tagOf.find(victim.pid); it != result.tagOf.end()) tagOf.insert(*it);
  }
  result.tagOf = std::move(tagOf);
  return result;
}

}  // namespace bulkhead::os
