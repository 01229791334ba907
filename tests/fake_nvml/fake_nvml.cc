// A stand-in for libnvidia-ml.so.1, built by the tests: the NVML entry points bulkhead uses
// (os/nvml.cc), answering from a fixture file that is read again on every call, so a test can
// change what "the GPU" holds while the daemon runs. The fixture ($FAKE_NVML_FIXTURE), one
// statement per line:
//   device INDEX TOTAL_BYTES USED_BYTES UTIL_PERCENT
//   process DEVICE_INDEX PID BYTES
//   fail init                       (nvmlInit fails as with no driver loaded)
// No fixture file: nvmlInit fails (NVML_ERROR_DRIVER_NOT_LOADED), as on a machine without one.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "os/nvml_abi.h"

namespace {

struct Device {
  unsigned index;
  unsigned long long total, used;
  unsigned util;
};
struct Process {
  unsigned device, pid;
  unsigned long long bytes;
};
struct Fixture {
  bool present = false;
  bool failInit = false;
  std::vector<Device> devices;
  std::vector<Process> processes;
};

Fixture readFixture() {
  Fixture f;
  const char* path = std::getenv("FAKE_NVML_FIXTURE");
  if (!path) return f;
  std::ifstream in(path);
  if (!in) return f;
  f.present = true;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string kind;
    words >> kind;
    if (kind == "device") {
      Device d{};
      words >> d.index >> d.total >> d.used >> d.util;
      f.devices.push_back(d);
    } else if (kind == "process") {
      Process p{};
      words >> p.device >> p.pid >> p.bytes;
      f.processes.push_back(p);
    } else if (kind == "fail") {
      f.failInit = true;
    }
  }
  return f;
}

using namespace bulkhead::os::nvml_abi;

// A device handle is its index + 1 (never null).
nvmlDevice_t handleOf(unsigned index) { return reinterpret_cast<nvmlDevice_t>(index + size_t{1}); }
unsigned indexOf(nvmlDevice_t d) { return static_cast<unsigned>(reinterpret_cast<size_t>(d) - 1); }

}  // namespace

extern "C" {

nvmlReturn_t nvmlInit_v2() {
  Fixture f = readFixture();
  return f.present && !f.failInit ? kSuccess : kDriverNotLoaded;
}
nvmlReturn_t nvmlShutdown() { return kSuccess; }
const char* nvmlErrorString(nvmlReturn_t r) {
  return r == kDriverNotLoaded ? "Driver Not Loaded" : r == kSuccess ? "Success" : "Unknown Error";
}
nvmlReturn_t nvmlSystemGetDriverVersion(char* version, unsigned int length) {
  std::snprintf(version, length, "%s", "0.0.fake");
  return kSuccess;
}
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int* count) {
  *count = static_cast<unsigned>(readFixture().devices.size());
  return kSuccess;
}
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t* device) {
  if (index >= readFixture().devices.size()) return kInvalidArgument;
  *device = handleOf(index);
  return kSuccess;
}
nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t* memory) {
  for (const Device& d : readFixture().devices) {
    if (d.index != indexOf(device)) continue;
    *memory = {d.total, d.total - d.used, d.used};
    return kSuccess;
  }
  return kInvalidArgument;
}
nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t* utilization) {
  for (const Device& d : readFixture().devices) {
    if (d.index != indexOf(device)) continue;
    *utilization = {d.util, 0};
    return kSuccess;
  }
  return kInvalidArgument;
}
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int* count,
                                                     nvmlProcessInfo_t* infos) {
  std::vector<nvmlProcessInfo_t> found;
  for (const Process& p : readFixture().processes) {
    if (p.device == indexOf(device)) found.push_back({p.pid, p.bytes, 0, 0});
  }
  const unsigned room = *count;
  *count = static_cast<unsigned>(found.size());
  if (found.size() > room) return kInsufficientSize;
  if (!found.empty()) std::memcpy(infos, found.data(), found.size() * sizeof found[0]);
  return kSuccess;
}

}  // extern "C"
