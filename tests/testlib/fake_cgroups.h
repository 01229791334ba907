#pragma once
// Cgroups without a kernel, for the shell on a FakeHost: create() hands out a WorkerCgroup with
// made-up directories and no cgroup.procs fds, counters are what the test scripts (an OOM kill, a
// refused fork), and every create and remove is recorded. The kernel's own rules are emulated by
// tests/os's fake CgroupHost; this fake only stands where the shell calls os::Cgroups.

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "os/cgroups.h"

namespace bulkhead::testlib {

class FakeCgroups final : public os::Cgroups {
 public:
  os::CgroupMode mode() const override { return os::CgroupMode::kV2; }
  std::string describe() const override { return "cgroup v2 (simulated)"; }
  std::optional<os::WorkerCgroup> create(const std::string& name, const os::CgroupLimits& limits,
                                         std::string* error) override {
    if (refuse) {
      *error = *refuse;
      return std::nullopt;
    }
    created.emplace_back(name, limits);
    return os::WorkerCgroup(name, "/fake/" + name, "/fake/" + name, {});
  }
  os::CgroupCounters counters(const os::WorkerCgroup& cg) const override {
    auto it = countersOf.find(cg.name());
    return it == countersOf.end() ? os::CgroupCounters{} : it->second;
  }
  bool remove(os::WorkerCgroup& cg, std::string*) override {
    removed.push_back(cg.name());
    return true;
  }
  int cleanupStale(std::string*) override { return 0; }

  std::map<std::string, os::CgroupCounters> countersOf;  // by worker name
  std::vector<std::pair<std::string, os::CgroupLimits>> created;
  std::vector<std::string> removed;
  std::optional<std::string> refuse;  // set: create() fails with this
};

}  // namespace bulkhead::testlib
