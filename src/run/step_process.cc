// LiveStep helpers (see step_process.h).

#include "run/step_process.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "run/run_output.h"

namespace bulkhead::run {

std::vector<pid_t> treePids(const LiveStep& step, const os::ProcReader& proc) {
  if (!step.cgroupProcs.empty()) {
    bool tooLarge = false;  // 1 MiB of pids: far more than any pids limit lets a tree hold
    return os::parsePidList(readSmallFile(step.cgroupProcs, &tooLarge).value_or(""));
  }
  std::vector<pid_t> pids;
  DIR* dir = ::opendir("/proc");
  if (!dir) return pids;
  while (dirent* entry = ::readdir(dir)) {
    char* end = nullptr;
    long pid = std::strtol(entry->d_name, &end, 10);
    if (pid <= 0 || *end != '\0') continue;
    auto ids = proc.ids(static_cast<pid_t>(pid));
    if (ids && ids->group == step.pid) pids.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(dir);
  return pids;
}

void sampleTree(LiveStep& step, const os::ProcReader& proc, const os::Cgroups& cgroups) {
  TreeSample t;
  for (pid_t pid : treePids(step, proc)) {
    auto s = proc.sample(pid, true);
    if (!s) continue;
    t.processes++;
    t.rssBytes += s->rssBytes;
    t.threads += s->threads;
    if (s->maps > 0) {
      t.maps += s->maps;
      t.largestMaps = std::max(t.largestMaps, s->maps);
    }
  }
  t.pids = t.threads;
  if (step.cgroup) {
    auto c = cgroups.counters(*step.cgroup);
    if (c.pidsCurrent > 0) t.pids = static_cast<int>(c.pidsCurrent);
  }
  if (t.processes == 0) return;  // between exit and reap: keep the last real sample
  step.latest = t;
  step.peaks.rssBytes = std::max(step.peaks.rssBytes, t.rssBytes);
  step.peaks.threads = std::max(step.peaks.threads, t.threads);
  step.peaks.maps = std::max(step.peaks.maps, t.maps);
  step.peaks.pids = std::max(step.peaks.pids, t.pids);
  step.largestMapsPeak = std::max(step.largestMapsPeak, t.largestMaps);
}

bool drainPipe(os::UniqueFd& fd, std::string* into) {
  if (!fd.valid()) return false;
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n > 0) {
      into->append(buffer, static_cast<std::size_t>(n));
      if (into->size() >= (1u << 20)) return true;  // hand it on; more next time
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    fd.reset();
    return false;
  }
}

}  // namespace bulkhead::run
