// NVML loaded at run time, against the fake library the tests build (tests/fake_nvml/): an absent
// library, one without NVML's entry points and one without a driver each leave GPU readings off
// with a reason; a working one is read again on every call; processes are attributed to a
// worker by process group.
#include "os/nvml.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

namespace bulkhead::os {
namespace {

class NvmlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fixture_ = std::filesystem::temp_directory_path() /
               ("bulkhead-fake-nvml-" + std::to_string(::getpid()));
    ::setenv("FAKE_NVML_FIXTURE", fixture_.c_str(), 1);
  }
  void TearDown() override {
    std::filesystem::remove(fixture_);
    ::unsetenv("FAKE_NVML_FIXTURE");
  }
  void write(const std::string& text) { std::ofstream(fixture_) << text; }
  std::filesystem::path fixture_;
};

TEST_F(NvmlTest, AnAbsentLibraryLeavesGpuReadingsOffWithAReason) {
  std::string why;
  EXPECT_FALSE(loadNvml("libnvidia-ml-not-here.so.1", &why));
  EXPECT_NE(why.find("libnvidia-ml-not-here.so.1 cannot be loaded"), std::string::npos) << why;
}

TEST_F(NvmlTest, ALibraryWithoutNvmlIsNotTakenForIt) {
  std::string why;
  EXPECT_FALSE(loadNvml("libm.so.6", &why));
  EXPECT_NE(why.find("has no nvmlInit_v2"), std::string::npos) << why;
}

TEST_F(NvmlTest, NoDriverMeansOff) {
  std::string why;  // no fixture file: the fake's nvmlInit fails as without a driver
  EXPECT_FALSE(loadNvml(BULKHEAD_FAKE_NVML, &why));
  EXPECT_NE(why.find("nvmlInit failed: Driver Not Loaded"), std::string::npos) << why;
}

TEST_F(NvmlTest, ReadsDevicesAndTheirProcessesAfreshEachTime) {
  write(
      "device 0 85899345920 2147483648 37\n"
      "device 1 85899345920 0 0\n"
      "process 0 4242 1073741824\n"
      "process 0 4243 1073741824\n");
  std::string why;
  auto probe = loadNvml(BULKHEAD_FAKE_NVML, &why);
  ASSERT_TRUE(probe) << why;
  EXPECT_NE(probe->describe().find("driver 0.0.fake, 2 device(s)"), std::string::npos)
      << probe->describe();
  auto s = probe->read();
  ASSERT_TRUE(s);
  ASSERT_EQ(s->devices.size(), 2u);
  EXPECT_EQ(s->devices[0].memoryTotalBytes, 85899345920u);
  EXPECT_EQ(s->devices[0].memoryUsedBytes, 2147483648u);
  EXPECT_EQ(s->devices[0].utilizationPercent, 37);
  ASSERT_EQ(s->processes.size(), 2u);
  EXPECT_EQ(s->processes[1].pid, 4243);
  EXPECT_EQ(s->processes[1].memoryBytes, 1073741824u);

  write("device 0 85899345920 0 0\nprocess 0 4242 5\n");
  s = probe->read();
  ASSERT_TRUE(s);
  ASSERT_EQ(s->devices.size(), 1u);
  ASSERT_EQ(s->processes.size(), 1u);
  EXPECT_EQ(s->processes[0].memoryBytes, 5u);
}

TEST_F(NvmlTest, MoreProcessesThanTheBufferHoldsAreAllRead) {
  std::string text = "device 0 100 0 0\n";
  for (int pid = 1000; pid < 1200; ++pid) text += "process 0 " + std::to_string(pid) + " 1\n";
  write(text);
  std::string why;
  auto probe = loadNvml(BULKHEAD_FAKE_NVML, &why);
  ASSERT_TRUE(probe) << why;
  auto s = probe->read();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->processes.size(), 200u);
}

TEST(GpuAttribution, AWorkerCountsItselfAndItsProcessGroupOnEveryDevice) {
  GpuSnapshot s;
  s.processes = {{100, 0, 1000}, {101, 0, 20}, {101, 1, 300}, {200, 0, 7}, {300, 0, 9}};
  const std::map<pid_t, pid_t> groups = {{101, 100}, {200, 200}};  // 300: gone
  auto groupOf = [&](pid_t pid) -> std::optional<pid_t> {
    auto it = groups.find(pid);
    return it == groups.end() ? std::nullopt : std::optional<pid_t>(it->second);
  };
  int lookups = 0;
  auto reading = resolveGroups(s, [&](pid_t pid) {
    ++lookups;
    return groupOf(pid);
  });
  EXPECT_EQ(lookups, 4) << "once per process, not per device or per worker";
  EXPECT_EQ(gpuMemoryOfGroup(reading, 100), 1320u);
  EXPECT_EQ(gpuMemoryOfGroup(reading, 200), 7u);
  EXPECT_EQ(gpuMemoryOfGroup(reading, 400), 0u);
}

}  // namespace
}  // namespace bulkhead::os
