// The real Host (see linux_host.h): each call is the OS call the shell made directly before the
// seam existed, so behaviour is unchanged. Timers convert core::Time to the steady clock.

#include "runtime/linux_host.h"

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <string_view>

#include "os/nvml.h"
#include "runtime/operator_log.h"

namespace bulkhead::runtime {

namespace asio = boost::asio;

namespace {

class SteadyTimer final : public HostTimer {
 public:
  explicit SteadyTimer(asio::io_context& io) : timer_(io) {}

  void expiresAt(core::Time at, std::function<void()> fire) override {
    timer_.expires_at(core::toSteady(at));  // cancels a wait in progress
    timer_.async_wait([fire = std::move(fire)](const boost::system::error_code& ec) {
      if (ec == asio::error::operation_aborted) return;
      fire();
    });
  }
  void cancel() override { timer_.cancel(); }

 private:
  asio::steady_timer timer_;
};

class LinuxHost final : public Host {
 public:
  explicit LinuxHost(asio::io_context& io) : io_(io), sigchld_(io, SIGCHLD) {}

  core::Time now() const override { return core::fromSteady(std::chrono::steady_clock::now()); }
  std::chrono::system_clock::time_point wallNow() const override {
    return std::chrono::system_clock::now();
  }
  std::unique_ptr<HostTimer> makeTimer() override { return std::make_unique<SteadyTimer>(io_); }

  std::variant<os::WorkerProcess, os::SpawnError> spawn(const os::SpawnSpec& spec) override {
    return os::spawnWorker(spec);
  }
  os::UniqueFd openPidfd(pid_t pid) override { return os::openPidfd(pid); }
  std::optional<os::ProcessIds> ids(pid_t pid) override { return procReader_.ids(pid); }
  pid_t selfPid() const override { return ::getpid(); }
  void signalGroup(pid_t pgid, int signal) override { os::signalProcessGroup(pgid, signal); }
  void signalProcess(pid_t pid, int pidfd, int signal) override {
    os::signalProcess(pid, pidfd, signal);
  }
  void onChildExits(std::function<void(const std::vector<os::ExitStatus>&)> exits) override {
    exits_ = std::move(exits);
    waitForSigchld();
  }
  os::ProcessHost& processTable() override {
    if (!processTable_) processTable_ = os::makeLinuxProcessHost("/proc");
    return *processTable_;
  }
  // Every worker gets a cgroup when one can be had, limits or not: it is how everything a worker
  // started is found and killed with it. BULKHEAD_CGROUPS=off is the operator's way to keep the
  // supervisor out of a cgroup tree it must not write to (docs/operations.md).
  std::unique_ptr<os::Cgroups> detectCgroups(std::string* whyNone) override {
    const char* cgroupSwitch = std::getenv("BULKHEAD_CGROUPS");
    const std::string_view wanted = cgroupSwitch ? cgroupSwitch : "";
    if (wanted == "off") {
      *whyNone = "BULKHEAD_CGROUPS=off";
      return os::makeNoCgroups(*whyNone);
    }
    if (!wanted.empty() && wanted != "auto") {
      logAt(LogLevel::kWarning,
            "BULKHEAD_CGROUPS=" + std::string(wanted) + " is neither auto nor off: using auto");
    }
    return os::detectCgroups("/proc/self/cgroup", "/proc/self/mountinfo", whyNone);
  }
  std::optional<os::ProcSample> sample(pid_t pid, bool withMaps) override {
    return procReader_.sample(pid, withMaps);
  }
  std::unique_ptr<os::GpuProbe> openGpuProbe(const std::string& library,
                                             std::string* whyNot) override {
    return os::loadNvml(library, whyNot);
  }

 private:
  void waitForSigchld() {
    sigchld_.async_wait([this](const boost::system::error_code& ec, int) {
      if (ec) return;
      exits_(os::reapExitedChildren());
      waitForSigchld();
    });
  }

  asio::io_context& io_;
  asio::signal_set sigchld_;
  std::function<void(const std::vector<os::ExitStatus>&)> exits_;
  os::ProcReader procReader_;
  std::unique_ptr<os::ProcessHost> processTable_;
};

}  // namespace

std::unique_ptr<Host> makeLinuxHost(asio::io_context& io) {
  return std::make_unique<LinuxHost>(io);
}

}  // namespace bulkhead::runtime
