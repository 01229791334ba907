#pragma once
// The Host seam: everything the shell asks of the machine it runs on (Envoy's OsSysCalls and
// TimeSource, in one small interface). The shell (runtime::Supervisor and its rooms) reads the
// clock, arms timers, starts processes, samples /proc, signals and hears of child exits only
// through a Host. LinuxHost (linux_host.h) is the real one; tests/testlib/fake_host.h runs the
// whole shell on simulated time, playing the workers over real sockets.
// Owns: the shape of that seam. May not touch: policy (src/core) or worker I/O; the worker's
// socket and pipes are real fds in both hosts, read by the shell's worker channel.

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/time.h"
#include "os/cgroups.h"
#include "os/gpu_probe.h"
#include "os/orphans.h"
#include "os/proc.h"
#include "os/process.h"
#include "os/unique_fd.h"

namespace bulkhead::runtime {

// One pending wake-up. expiresAt replaces any earlier one; its callback runs from the event loop
// (never inside expiresAt) unless cancelled first. Destroying the timer cancels it.
class HostTimer {
 public:
  virtual ~HostTimer() = default;
  virtual void expiresAt(core::Time at, std::function<void()> fire) = 0;
  virtual void cancel() = 0;
};

class Host {
 public:
  virtual ~Host() = default;

  // ---- time
  virtual core::Time now() const = 0;
  // For people reading events only; nothing is decided on it.
  virtual std::chrono::system_clock::time_point wallNow() const = 0;
  virtual std::unique_ptr<HostTimer> makeTimer() = 0;

  // ---- processes
  virtual std::variant<os::WorkerProcess, os::SpawnError> spawn(const os::SpawnSpec& spec) = 0;
  // A pidfd for our child (a zygote-forked worker); invalid when it is gone already.
  virtual os::UniqueFd openPidfd(pid_t pid) = 0;
  // Parent and process group of a live (or zombie) process; nullopt when there is no such pid.
  virtual std::optional<os::ProcessIds> ids(pid_t pid) = 0;
  virtual pid_t selfPid() const = 0;
  // ESRCH is not an error in either (the process may be gone already).
  virtual void signalGroup(pid_t pgid, int signal) = 0;
  virtual void signalProcess(pid_t pid, int pidfd, int signal) = 0;
  // Every reaped child (worker, zygote, or an orphan reparented to us), in batches, from the
  // event loop. Called once, at start; the callback stays for the host's life.
  virtual void onChildExits(std::function<void(const std::vector<os::ExitStatus>&)> exits) = 0;
  // The process table, for finding what a worker without a cgroup left running.
  virtual os::ProcessHost& processTable() = 0;

  // ---- cgroups
  // The workers' cgroups, found once at start-up; mode() kNone when none can be had, with
  // *whyNone saying why (for the one log line about it).
  virtual std::unique_ptr<os::Cgroups> detectCgroups(std::string* whyNone) = 0;

  // ---- /proc
  // nullopt when the process is gone (os::ProcReader::sample).
  virtual std::optional<os::ProcSample> sample(pid_t pid, bool withMaps) = 0;

  // ---- GPUs
  // The GPU reader (NVML from `library`, os/nvml.h); null with *whyNot set when there is none.
  virtual std::unique_ptr<os::GpuProbe> openGpuProbe(const std::string& library,
                                                     std::string* whyNot) = 0;
};

}  // namespace bulkhead::runtime
