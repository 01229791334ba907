#pragma once
// A simulated machine for the shell (runtime/host.h), in Envoy's manner: the clock moves only when
// the test says so, and timers fire in time order as it does. Processes are made up (a pid and
// real socketpairs/pipes from os::makeWorkerChannels), so the test plays each worker by writing
// real frames on its end; it decides when a "process" exits, with the raw status SIGCHLD would
// have reaped. Signals are recorded, never sent. /proc samples are scripted and counted.
//
// The shell runs on a real io_context: after each step the test (or advance/exit) calls settle(),
// which runs every handler that is ready, socket reads included, until nothing is left to do.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <cerrno>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "proto/frame.h"
#include "runtime/host.h"

namespace bulkhead::testlib {

class FakeHost final : public runtime::Host {
 public:
  // One made-up process: the far ends of its socket and pipes, and a decoder for what the
  // supervisor sends it.
  struct Process {
    pid_t pid = -1;
    os::SpawnSpec spec;
    os::UniqueFd control;  // the worker's end of the control socket
    os::UniqueFd stdoutWrite;
    os::UniqueFd stderrWrite;
    os::UniqueFd stacksWrite;
    bool exited = false;
    proto::FrameDecoder decoder{proto::Sender::kSupervisor, 1u << 30};
  };
  struct SignalSent {
    pid_t pid;
    int signal;
    bool group;  // to the process group (the pid is its pgid)
    core::Time at;
  };
  struct SampleTaken {
    pid_t pid;
    bool withMaps;
    core::Time at;
  };

  static constexpr pid_t kSelfPid = 100;

  explicit FakeHost(boost::asio::io_context& io) : io_(io) {}

  // ---- the test's side

  // Runs the loop until no handler is ready (socket reads, posted exits, completions).
  void settle() {
    for (int rounds = 0; rounds < 10000; ++rounds) {
      io_.restart();
      if (io_.poll() == 0) return;
    }
    ADD_FAILURE_AT(__FILE__, __LINE__);  // the shell keeps itself busy: a loop without end
  }

  // Moves the clock to `to`, firing every timer due on the way at its own time, in order.
  void advanceTo(core::Time to) {
    settle();
    for (;;) {
      auto due = timers_.end();
      for (auto it = timers_.begin(); it != timers_.end(); ++it) {
        if (it->second.at > to) continue;
        if (due == timers_.end() || it->second.at < due->second.at) due = it;
      }
      if (due == timers_.end()) break;
      now_ = std::max(now_, due->second.at);
      auto fire = std::move(due->second.fire);
      timers_.erase(due);
      fire();
      settle();
    }
    now_ = std::max(now_, to);
    settle();
  }
  void advance(core::Duration by) { advanceTo(now_ + by); }
  // The next time a timer is due, if any is armed.
  std::optional<core::Time> nextTimer() const {
    std::optional<core::Time> next;
    for (const auto& [id, t] : timers_) {
      if (!next || t.at < *next) next = t.at;
    }
    return next;
  }

  // The process exits: its fds close as the kernel would close them, and SIGCHLD reaps it.
  void exit(pid_t pid, int rawStatus) {
    if (auto it = processes_.find(pid); it != processes_.end()) {
      Process& p = *it->second;
      p.exited = true;
      p.control.reset();
      p.stdoutWrite.reset();
      p.stderrWrite.reset();
      p.stacksWrite.reset();
    }
    children_.erase(pid);
    boost::asio::post(io_, [this, pid, rawStatus] { exits_({os::ExitStatus{pid, rawStatus}}); });
    settle();
  }
  // A child the shell did not start itself (a zygote's fork): live until exit().
  void adopt(pid_t pid) { children_.insert(pid); }
  // A live process that is not our child (another parent or process group): what a lying zygote
  // could name in FORKED.
  void stranger(pid_t pid, os::ProcessIds ids) { strangers_[pid] = ids; }
  // The same, played by the test like a spawned worker, over the fds a FORK carried (control,
  // stdout, stderr, stacks: docs/protocol.md, "Zygote").
  void adopt(pid_t pid, std::vector<os::UniqueFd> fds) {
    auto p = std::make_unique<Process>();
    p->pid = pid;
    if (fds.size() > 0) p->control = std::move(fds[0]);
    if (fds.size() > 1) p->stdoutWrite = std::move(fds[1]);
    if (fds.size() > 2) p->stderrWrite = std::move(fds[2]);
    if (fds.size() > 3) p->stacksWrite = std::move(fds[3]);
    processes_[pid] = std::move(p);
    children_.insert(pid);
  }

  // A zygote's view of its control socket: the frames sent since the last call, with the fds
  // that rode along (SCM_RIGHTS), in order.
  struct FramesWithFds {
    std::vector<proto::Frame> frames;
    std::vector<os::UniqueFd> fds;
  };
  FramesWithFds receivedWithFds(pid_t pid) {
    settle();
    Process& p = process(pid);
    FramesWithFds out;
    char buffer[65536];
    for (;;) {
      bool truncated = false;
      const long n = os::receiveWithFds(p.control.get(), buffer, sizeof buffer, out.fds, truncated);
      if (n <= 0) break;
      p.decoder.feed({buffer, static_cast<std::size_t>(n)});
    }
    for (;;) {
      auto decoded = p.decoder.next();
      auto* frame = std::get_if<proto::Frame>(&decoded);
      if (!frame) break;
      out.frames.push_back(std::move(*frame));
    }
    return out;
  }

  Process& process(pid_t pid) { return *processes_.at(pid); }
  // Processes in the order they were spawned.
  const std::vector<pid_t>& spawned() const { return spawned_; }
  Process& lastSpawned() { return process(spawned_.back()); }

  // Writes one frame from the worker (HELLO, READY, RESULT ...), then lets the shell read it.
  void send(pid_t pid, proto::FrameType type, std::uint64_t jobId, std::string_view body) {
    const std::string bytes = proto::encodeFrame(type, jobId, body);
    writeAll(process(pid).control.get(), bytes);
    settle();
  }
  void writeBytes(pid_t pid, std::string_view bytes) {
    writeAll(process(pid).control.get(), bytes);
    settle();
  }
  void hello(pid_t pid) { send(pid, proto::FrameType::kHello, 0, R"({"protocol": 1})"); }
  void ready(pid_t pid) {
    hello(pid);
    send(pid, proto::FrameType::kReady, 0, "{}");
  }
  void writeStderr(pid_t pid, std::string_view text) {
    writeAll(process(pid).stderrWrite.get(), text);
    settle();
  }
  void writeStacks(pid_t pid, std::string_view text) {
    writeAll(process(pid).stacksWrite.get(), text);
    settle();
  }

  // Every frame the supervisor has sent this process since the last call.
  std::vector<proto::Frame> received(pid_t pid) {
    settle();
    Process& p = process(pid);
    std::vector<proto::Frame> frames;
    if (!p.control.valid()) return frames;
    char buffer[65536];
    for (;;) {
      ssize_t n = ::recv(p.control.get(), buffer, sizeof buffer, MSG_DONTWAIT);
      if (n > 0) {
        p.decoder.feed({buffer, static_cast<std::size_t>(n)});
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      break;
    }
    for (;;) {
      auto decoded = p.decoder.next();
      auto* frame = std::get_if<proto::Frame>(&decoded);
      if (!frame) break;
      frames.push_back(std::move(*frame));
    }
    return frames;
  }

  std::vector<SignalSent> signals;
  std::vector<SampleTaken> samples;
  // What /proc says about a worker; the default is a small, steady process.
  std::function<std::optional<os::ProcSample>(pid_t, bool)> sampler =
      [](pid_t, bool withMaps) -> std::optional<os::ProcSample> {
    os::ProcSample s;
    s.rssBytes = 50u << 20;
    s.threads = 2;
    s.maps = withMaps ? 200 : -1;
    s.fds = 8;
    return s;
  };
  // While set, every spawn fails with it (fork EAGAIN, exec ENOENT ...).
  std::optional<os::SpawnError> failSpawns;
  // What detectCgroups finds; none by default (testlib/fake_cgroups.h stands in for them).
  std::unique_ptr<os::Cgroups> cgroups;

  // ---- the shell's side (runtime::Host)

  core::Time now() const override { return now_; }
  std::chrono::system_clock::time_point wallNow() const override {
    return std::chrono::system_clock::time_point{} + (now_ - core::Time{});
  }
  std::unique_ptr<runtime::HostTimer> makeTimer() override {
    return std::make_unique<Timer>(*this, nextTimerId_++);
  }
  std::variant<os::WorkerProcess, os::SpawnError> spawn(const os::SpawnSpec& spec) override {
    if (failSpawns) return *failSpawns;
    auto made = os::makeWorkerChannels();
    if (auto* error = std::get_if<os::SpawnError>(&made)) return *error;
    auto& channels = std::get<os::WorkerChannels>(made);
    auto p = std::make_unique<Process>();
    p->pid = nextPid_++;
    p->spec = spec;
    p->control = std::move(channels.controlTheirs);
    p->stdoutWrite = std::move(channels.stdoutWrite);
    p->stderrWrite = std::move(channels.stderrWrite);
    p->stacksWrite = std::move(channels.stacksWrite);
    os::WorkerProcess ours = std::move(channels.ours);
    ours.pid = p->pid;
    ours.pidfd = standInPidfd();
    children_.insert(p->pid);
    spawned_.push_back(p->pid);
    processes_[p->pid] = std::move(p);
    return ours;
  }
  os::UniqueFd openPidfd(pid_t pid) override {
    return children_.count(pid) || strangers_.count(pid) ? standInPidfd() : os::UniqueFd();
  }
  std::optional<os::ProcessIds> ids(pid_t pid) override {
    if (auto it = strangers_.find(pid); it != strangers_.end()) return it->second;
    if (!children_.count(pid)) return std::nullopt;
    return os::ProcessIds{kSelfPid, pid};
  }
  pid_t selfPid() const override { return kSelfPid; }
  void signalGroup(pid_t pgid, int signal) override {
    signals.push_back({pgid, signal, true, now_});
  }
  void signalProcess(pid_t pid, int, int signal) override {
    signals.push_back({pid, signal, false, now_});
  }
  void onChildExits(std::function<void(const std::vector<os::ExitStatus>&)> exits) override {
    exits_ = std::move(exits);
  }
  os::ProcessHost& processTable() override { return table_; }
  std::unique_ptr<os::Cgroups> detectCgroups(std::string* whyNone) override {
    if (cgroups) return std::move(cgroups);
    *whyNone = "simulated host";
    return os::makeNoCgroups(*whyNone);
  }
  std::unique_ptr<os::GpuProbe> openGpuProbe(const std::string&, std::string* whyNot) override {
    *whyNot = "simulated host";
    return nullptr;
  }
  std::optional<os::ProcSample> sample(pid_t pid, bool withMaps) override {
    samples.push_back({pid, withMaps, now_});
    if (!children_.count(pid)) return std::nullopt;
    return sampler(pid, withMaps);
  }

 private:
  struct Armed {
    core::Time at;
    std::function<void()> fire;
  };
  class Timer final : public runtime::HostTimer {
   public:
    Timer(FakeHost& host, std::uint64_t id) : host_(host), id_(id) {}
    ~Timer() override { cancel(); }
    void expiresAt(core::Time at, std::function<void()> fire) override {
      host_.timers_[id_] = Armed{at, std::move(fire)};
    }
    void cancel() override { host_.timers_.erase(id_); }

   private:
    FakeHost& host_;
    std::uint64_t id_;
  };
  // No process is ever found in the table: nothing is left running by a made-up worker.
  class EmptyTable final : public os::ProcessHost {
   public:
    os::ProcTable readTable() override { return {}; }
    std::optional<std::string> readEnvironValue(pid_t, std::string_view) override {
      return std::nullopt;
    }
    bool signal(const os::ProcessKey&, int) override { return false; }
  };

  // The shell only checks that a pidfd is valid and hands it back to signalProcess.
  static os::UniqueFd standInPidfd() {
    return os::UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  }
  static void writeAll(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t n = ::write(fd, bytes.data(), bytes.size());
      if (n < 0 && errno == EINTR) continue;
      ASSERT_GT(n, 0) << "write to a fake worker's fd failed: errno " << errno;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  boost::asio::io_context& io_;
  core::Time now_ = core::Time{} + std::chrono::hours(1);
  std::map<std::uint64_t, Armed> timers_;
  std::uint64_t nextTimerId_ = 1;
  pid_t nextPid_ = 1000;
  std::map<pid_t, std::unique_ptr<Process>> processes_;
  std::vector<pid_t> spawned_;
  std::set<pid_t> children_;
  std::map<pid_t, os::ProcessIds> strangers_;
  std::function<void(const std::vector<os::ExitStatus>&)> exits_;
  EmptyTable table_;
};

}  // namespace bulkhead::testlib
