#include "os/cgroup_kill.h"

#include <errno.h>

#include <algorithm>
#include <cstring>

namespace bulkhead::os {

namespace {

constexpr int kMaxPauseMs = 50;
constexpr int kMaxTreeDepth = 16;

void collect(const CgroupHost& host, const std::string& dir, int depth,
             std::vector<std::string>* out) {
  if (depth < kMaxTreeDepth) {
    std::vector<std::string> subs;
    if (host.listSubdirectories(dir, &subs) == 0) {
      for (const auto& s : subs) collect(host, dir + "/" + s, depth + 1, out);
    }
  }
  out->push_back(dir);
}

std::string pidsText(const std::vector<pid_t>& pids) {
  std::string out;
  for (std::size_t i = 0; i < pids.size() && i < 16; ++i) {
    if (!out.empty()) out += ",";
    out += std::to_string(pids[i]);
  }
  if (pids.size() > 16) out += ",...";
  return out;
}

}  // namespace

void collectCgroupTree(const CgroupHost& host, const std::string& dir,
                       std::vector<std::string>* out) {
  collect(host, dir, 0, out);
}

bool emptyAndRemoveCgroup(CgroupHost& host, const std::string& dir, std::string* error,
                          int* killed) {
  if (!host.exists(dir)) return true;
  if (host.exists(dir + "/cgroup.kill")) host.writeFile(dir + "/cgroup.kill", "1");
  std::vector<std::string> dirs;
  std::vector<pid_t> listed;
  int pauseMs = 1;
  for (int round = 0;; ++round) {
    dirs.clear();
    collectCgroupTree(host, dir, &dirs);
    listed.clear();
    for (const auto& d : dirs) {
      std::string procs;
      if (host.readFile(d + "/cgroup.procs", &procs) != 0) continue;
      for (pid_t pid : parsePidList(procs)) {
        listed.push_back(pid);
        host.killProcess(pid);
        if (killed) ++*killed;
      }
    }
    // The last round kills what it reads without waiting again: the rmdir below tells.
    if (listed.empty() || round == kCgroupKillRounds) break;
    host.pause(pauseMs);
    pauseMs = std::min(pauseMs * 2, kMaxPauseMs);
  }
  for (const auto& d : dirs) {
    int rc = host.removeDirectory(d);
    if (rc != 0 && rc != ENOENT) {
      if (error) {
        *error = "rmdir " + d + ": " + std::strerror(rc);
        if (!listed.empty()) {
          *error += " (still listed after " + std::to_string(kCgroupKillRounds) +
                    " kill rounds: " + pidsText(listed) + ")";
        }
      }
      return false;
    }
  }
  return true;
}

}  // namespace bulkhead::os
