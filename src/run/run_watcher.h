#pragma once
// The guard that makes a SIGKILLed `bulkhead run` leave no step process behind. Forked at start,
// before any thread: a tiny child that holds the read end of a pipe whose only write end is ours
// (close-on-exec, so no step inherits it). We tell it, line by line, which process groups and
// cgroup directories belong to running steps; when the pipe reaches EOF (we exited, however we
// died) it SIGKILLs those groups, empties and removes those cgroups, and exits. A clean exit
// forgets every step first, so the watcher then only exits.
//
// Each step leader also has PR_SET_PDEATHSIG(SIGKILL) (os::spawnCommand), and the next start's
// Cgroups::cleanupStale() removes whatever a dead run's cgroups still hold: three layers, the
// watcher being the one that acts at once for the whole tree.

#include <sys/types.h>

#include <string>
#include <vector>

#include "os/unique_fd.h"

namespace bulkhead::run {

class RunWatcher {
 public:
  RunWatcher() = default;
  ~RunWatcher();
  RunWatcher(const RunWatcher&) = delete;
  RunWatcher& operator=(const RunWatcher&) = delete;

  // Forks the watcher. false + *error when pipe or fork fails (the run goes on without it).
  bool start(std::string* error);
  void watchGroup(pid_t pgid);
  void forgetGroup(pid_t pgid);
  void watchCgroup(const std::string& directory);
  void forgetCgroup(const std::string& directory);
  // Closes our end and reaps the watcher (it kills whatever is still registered).
  void stop();
  pid_t pid() const { return pid_; }

 private:
  void send(const std::string& line);
  os::UniqueFd write_;
  pid_t pid_ = -1;
};

}  // namespace bulkhead::run
