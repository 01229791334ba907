#pragma once
// One attempt of one `bulkhead run` step as the OS sees it: its process group, its cgroup (with
// the limits), its stdout/stderr pipes, a bounded stderr tail for evidence, and samples of its
// whole process tree (every pid in its cgroup, or in its process group without cgroups).

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "os/cgroups.h"
#include "os/proc.h"
#include "os/process.h"
#include "os/unique_fd.h"
#include "run/step_report.h"
#include "util/byte_ring.h"

namespace bulkhead::run {

inline constexpr std::size_t kStderrTailBytes = 8192;

struct LiveStep {
  std::size_t index = 0;
  std::string name;
  int attempt = 0;
  pid_t pid = -1;
  os::UniqueFd stdoutRead;
  os::UniqueFd stderrRead;
  std::optional<os::WorkerCgroup> cgroup;
  std::string cgroupProcs;  // a cgroup.procs path listing the tree ("" without cgroups)
  util::ByteRing stderrTail{kStderrTailBytes};
  double startedMs = 0;          // on the shell's monotonic clock
  double lastSampledMs = 0;      // 0: never
  std::optional<int> rawStatus;  // the leader was reaped
  TreeSample latest;
  StepPeaks peaks;
  int largestMapsPeak = 0;
};

// Every pid of the tree: cgroup.procs when there is one, else a /proc scan for the group.
std::vector<pid_t> treePids(const LiveStep& step, const os::ProcReader& proc);

// Samples the tree (maps included) and folds it into latest and peaks.
void sampleTree(LiveStep& step, const os::ProcReader& proc, const os::Cgroups& cgroups);

// Reads what is available on a non-blocking pipe; false at EOF or error (the fd is then reset).
bool drainPipe(os::UniqueFd& fd, std::string* into);

}  // namespace bulkhead::run
