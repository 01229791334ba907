#pragma once
// The whole shell (runtime::Supervisor and its rooms) on a FakeHost: a config from TOML text,
// simulated time, no cgroups unless the test brings FakeCgroups. Tests submit jobs, play the
// workers through the host, move the clock and read the reports the shell answered with.

#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <map>
#include <memory>
#include <string>

#include "config/config.h"
#include "os/cgroups.h"
#include "runtime/supervisor.h"
#include "testlib/fake_host.h"

namespace bulkhead::testlib {

class ShellTest : public ::testing::Test {
 protected:
  // [pool.<name>] tables; the python and handler are never run.
  // cgroups: what the host finds (none when null).
  void startShell(const std::string& pools, std::unique_ptr<os::Cgroups> cgroups = nullptr) {
    auto loaded = config::loadConfigText(pools, "shell_test.toml");
    ASSERT_TRUE(loaded.config) << (loaded.errors.empty() ? "" : loaded.errors[0].describe());
    config_ = std::move(*loaded.config);
    auto host = std::make_unique<FakeHost>(io_);
    host_ = host.get();
    host_->cgroups = std::move(cgroups);
    start_ = host_->now();
    runtime::SupervisorOptions options;
    options.host = std::move(host);
    shell_ = std::make_unique<runtime::Supervisor>(io_, config_, std::move(options));
    shell_->start();
    host_->settle();
  }

  // Submits a job; its report lands in reports_ under the returned id.
  core::JobId submit(const std::string& pool, std::string payload,
                     runtime::JobOptions options = {}) {
    auto submitted = shell_->submit(pool, core::makePayload(std::move(payload)), options,
                                    [this](const core::JobReport& r) { reports_[r.jobId] = r; });
    auto* id = std::get_if<core::JobId>(&submitted);
    EXPECT_NE(id, nullptr);
    host_->settle();
    return id ? *id : 0;
  }

  // The frames of one type the supervisor sent this process since the last read.
  std::vector<proto::Frame> framesOf(pid_t pid, proto::FrameType type) {
    std::vector<proto::Frame> out;
    for (auto& f : host_->received(pid)) {
      if (f.type == type) out.push_back(std::move(f));
    }
    return out;
  }

  // Signals sent to pid (group or not), in order.
  std::vector<FakeHost::SignalSent> signalsTo(pid_t pid) const {
    std::vector<FakeHost::SignalSent> out;
    for (const auto& s : host_->signals) {
      if (s.pid == pid) out.push_back(s);
    }
    return out;
  }

  // The made-up pid of the live process the shell started as `name` ("p-1", "p-zygote"); -1: none.
  pid_t pidOf(const std::string& name) {
    const std::string tag = "BULKHEAD_WORKER_ID=" + name;
    for (pid_t pid : host_->spawned()) {
      const auto& p = host_->process(pid);
      if (p.exited) continue;
      for (const auto& e : p.spec.env) {
        if (e == tag) return pid;
      }
    }
    return -1;
  }

  const core::JobReport* report(core::JobId id) const {
    auto it = reports_.find(id);
    return it == reports_.end() ? nullptr : &it->second;
  }

  // Declared first: it outlives the shell, whose handlers it holds.
  boost::asio::io_context io_;
  config::Config config_;
  FakeHost* host_ = nullptr;  // owned by the shell
  std::unique_ptr<runtime::Supervisor> shell_;
  core::Time start_;
  std::map<core::JobId, core::JobReport> reports_;
};

// Raw waitpid statuses, as SIGCHLD would reap them (man 2 waitpid).
inline int killedBy(int signal) { return signal & 0x7f; }
inline int exitedWith(int code) { return (code & 0xff) << 8; }

}  // namespace bulkhead::testlib
