#include "os/nvml.h"

#include <dlfcn.h>

#include <vector>

#include "os/nvml_abi.h"

namespace bulkhead::os {

namespace {

using namespace nvml_abi;

struct NvmlApi {
  nvmlReturn_t (*init)();
  nvmlReturn_t (*shutdown)();
  const char* (*errorString)(nvmlReturn_t);
  nvmlReturn_t (*driverVersion)(char*, unsigned int);
  nvmlReturn_t (*deviceCount)(unsigned int*);
  nvmlReturn_t (*deviceByIndex)(unsigned int, nvmlDevice_t*);
  nvmlReturn_t (*memoryInfo)(nvmlDevice_t, nvmlMemory_t*);
  nvmlReturn_t (*utilization)(nvmlDevice_t, nvmlUtilization_t*);
  nvmlReturn_t (*computeProcesses)(nvmlDevice_t, unsigned int*, nvmlProcessInfo_t*);
};

template <typename F>
bool bind(void* library, const char* name, F& out) {
  out = reinterpret_cast<F>(::dlsym(library, name));
  return out != nullptr;
}

class NvmlProbe : public GpuProbe {
 public:
  NvmlProbe(void* library, NvmlApi api, std::string describe)
      : library_(library), api_(api), describe_(std::move(describe)) {}
  ~NvmlProbe() override {
    api_.shutdown();
    ::dlclose(library_);
  }

  std::optional<GpuSnapshot> read() override {
    unsigned int count = 0;
    if (api_.deviceCount(&count) != kSuccess) return std::nullopt;
    GpuSnapshot snapshot;
    for (unsigned int i = 0; i < count; ++i) {
      nvmlDevice_t device = nullptr;
      if (api_.deviceByIndex(i, &device) != kSuccess) continue;  // lost: the others count
      GpuDevice d;
      d.index = i;
      nvmlMemory_t memory{};
      if (api_.memoryInfo(device, &memory) == kSuccess) {
        d.memoryUsedBytes = memory.used;
        d.memoryTotalBytes = memory.total;
      }
      nvmlUtilization_t utilization{};
      if (api_.utilization(device, &utilization) == kSuccess) {
        d.utilizationPercent = static_cast<int>(utilization.gpu);
      }
      snapshot.devices.push_back(d);
      readProcesses(device, i, snapshot.processes);
    }
    return snapshot;
  }

  std::string describe() const override { return describe_; }

 private:
  void readProcesses(nvmlDevice_t device, unsigned int index, std::vector<GpuProcess>& out) {
    // Asked with room for what the last reading saw; a bigger answer says how many there are.
    for (int tries = 0; tries < 2; ++tries) {
      unsigned int n = static_cast<unsigned int>(buffer_.size());
      nvmlReturn_t r = api_.computeProcesses(device, &n, buffer_.data());
      if (r == kInsufficientSize) {
        buffer_.resize(n + 16);
        continue;
      }
      if (r != kSuccess) return;
      for (unsigned int k = 0; k < n && k < buffer_.size(); ++k) {
        const auto& p = buffer_[k];
        // Not available under some virtualisation: the process is seen, its memory is not.
        const std::uint64_t bytes = p.usedGpuMemory == kValueNotAvailable ? 0 : p.usedGpuMemory;
        out.push_back({static_cast<pid_t>(p.pid), index, bytes});
      }
      return;
    }
  }

  void* library_;
  NvmlApi api_;
  std::string describe_;
  std::vector<nvmlProcessInfo_t> buffer_ = std::vector<nvmlProcessInfo_t>(64);
};

}  // namespace

std::unique_ptr<GpuProbe> loadNvml(const std::string& library, std::string* whyNot) {
  void* handle = ::dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* error = ::dlerror();
    *whyNot = library + " cannot be loaded (" + (error ? error : "unknown error") + ")";
    return nullptr;
  }
  NvmlApi api{};
  const char* missing = nullptr;  // the first entry point not found
  auto need = [&](const char* name, auto& out) {
    if (!missing && !bind(handle, name, out)) missing = name;
  };
  need("nvmlInit_v2", api.init);
  need("nvmlShutdown", api.shutdown);
  need("nvmlErrorString", api.errorString);
  need("nvmlSystemGetDriverVersion", api.driverVersion);
  need("nvmlDeviceGetCount_v2", api.deviceCount);
  need("nvmlDeviceGetHandleByIndex_v2", api.deviceByIndex);
  need("nvmlDeviceGetMemoryInfo", api.memoryInfo);
  need("nvmlDeviceGetUtilizationRates", api.utilization);
  // _v3 since driver 510, _v2 before it: the same structure.
  if (!missing && !bind(handle, "nvmlDeviceGetComputeRunningProcesses_v3", api.computeProcesses) &&
      !bind(handle, "nvmlDeviceGetComputeRunningProcesses_v2", api.computeProcesses)) {
    missing = "nvmlDeviceGetComputeRunningProcesses_v3";
  }
  if (missing) {
    *whyNot = library + " has no " + missing + " (an NVIDIA driver older than 450?)";
    ::dlclose(handle);
    return nullptr;
  }
  if (nvmlReturn_t r = api.init(); r != kSuccess) {
    *whyNot = library + ": nvmlInit failed: " + api.errorString(r);
    ::dlclose(handle);
    return nullptr;
  }
  char version[96] = {};
  std::string driver = api.driverVersion(version, sizeof version) == kSuccess
                           ? std::string(version)
                           : std::string("unknown");
  unsigned int count = 0;
  api.deviceCount(&count);
  return std::make_unique<NvmlProbe>(
      handle, api,
      "NVML (" + library + "), driver " + driver + ", " + std::to_string(count) + " device(s)");
}

}  // namespace bulkhead::os
