#include "os/gpu_probe.h"

namespace bulkhead::os {

GpuReading resolveGroups(GpuSnapshot snapshot,
                         const std::function<std::optional<pid_t>(pid_t)>& groupOf) {
  GpuReading reading;
  for (const GpuProcess& p : snapshot.processes) {
    if (reading.groups.count(p.pid)) continue;  // on several devices: one lookup
    if (auto group = groupOf(p.pid)) reading.groups[p.pid] = *group;
  }
  reading.snapshot = std::move(snapshot);
  return reading;
}

std::uint64_t gpuMemoryOfGroup(const GpuReading& reading, pid_t group) {
  std::uint64_t bytes = 0;
  for (const GpuProcess& p : reading.snapshot.processes) {
    // The worker itself leads its group (setpgid at spawn and fork); what it started is in it.
    auto it = reading.groups.find(p.pid);
    if (p.pid == group || (it != reading.groups.end() && it->second == group)) {
      bytes += p.memoryBytes;
    }
  }
  return bytes;
}

}  // namespace bulkhead::os
