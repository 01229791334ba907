#pragma once
// The part of NVIDIA's management library ABI bulkhead uses, as its nvml.h declares it (API
// version 11/12; nvml.h is not a Debian package). os/nvml.cc calls these through dlsym;
// tests/fake_nvml/ implements them; sharing this header keeps the two on one ABI.

namespace bulkhead::os::nvml_abi {

using nvmlReturn_t = int;
using nvmlDevice_t = struct nvmlDevice_st*;

inline constexpr nvmlReturn_t kSuccess = 0;
inline constexpr nvmlReturn_t kInvalidArgument = 2;
inline constexpr nvmlReturn_t kInsufficientSize = 7;
inline constexpr nvmlReturn_t kDriverNotLoaded = 9;
// usedGpuMemory when the driver cannot tell (some virtualised setups).
inline constexpr unsigned long long kValueNotAvailable = ~0ULL;

struct nvmlMemory_t {
  unsigned long long total, free, used;
};
struct nvmlUtilization_t {
  unsigned int gpu, memory;
};
// nvmlProcessInfo_v2_t, which nvmlDeviceGetComputeRunningProcesses_v2 and _v3 fill.
struct nvmlProcessInfo_t {
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};

}  // namespace bulkhead::os::nvml_abi
