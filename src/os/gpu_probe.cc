#include "os/gpu_probe.h"

namespace bulkhead::os {

std::uint64_t gpuMemoryOfGroup(const GpuSnapshot& snapshot, pid_t group,
                               const std::function<std::optional<pid_t>(pid_t)>& groupOf) {
  std::uint64_t bytes = 0;
  for (const GpuProcess& p : snapshot.processes) {
    if (p.pid == group) {
      bytes += p.memoryBytes;  // the worker itself: a group leader (setpgid at spawn and fork)
      continue;
    }
    if (auto g = groupOf(p.pid); g && *g == group) bytes += p.memoryBytes;
  }
  return bytes;
}

}  // namespace bulkhead::os
