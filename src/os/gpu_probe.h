#pragma once
// What the GPUs hold, read in one go: each device's memory and utilization, and the memory of
// every process computing on it. Owns: that snapshot's shape, the GpuProbe seam that reads it
// (os/nvml.h is the real one, loaded at run time), and the attribution of a snapshot's processes
// to one worker's process group. May not decide anything from it (the core's rules do).

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bulkhead::os {

struct GpuDevice {
  unsigned index = 0;
  std::uint64_t memoryUsedBytes = 0;
  std::uint64_t memoryTotalBytes = 0;
  int utilizationPercent = -1;  // -1: the device did not say
};

struct GpuProcess {
  pid_t pid = 0;
  unsigned device = 0;
  std::uint64_t memoryBytes = 0;
};

struct GpuSnapshot {
  std::vector<GpuDevice> devices;
  std::vector<GpuProcess> processes;  // one entry per (process, device) it computes on
};

class GpuProbe {
 public:
  virtual ~GpuProbe() = default;
  // One reading of every device; nullopt when the library failed this time (logged by the
  // caller; the next tick tries again).
  virtual std::optional<GpuSnapshot> read() = 0;
  // "NVML 12.535.104.05, 2 device(s)": for the one log line at start-up.
  virtual std::string describe() const = 0;
};

// A snapshot with the process group of each of its processes, looked up once per reading (not
// once per worker): what attribution needs.
struct GpuReading {
  GpuSnapshot snapshot;
  std::map<pid_t, pid_t> groups;  // pid -> its process group; gone processes are absent
};
// groupOf gives a pid's process group, nullopt when the pid is gone.
GpuReading resolveGroups(GpuSnapshot snapshot,
                         const std::function<std::optional<pid_t>(pid_t)>& groupOf);

// The GPU memory held by the processes of one process group (a worker and what it started), on
// every device.
std::uint64_t gpuMemoryOfGroup(const GpuReading& reading, pid_t group);

}  // namespace bulkhead::os
