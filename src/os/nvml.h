#pragma once
// The NVIDIA Management Library as a GpuProbe, loaded at run time with dlopen: bulkhead neither
// links against it nor needs it to build, and on a machine without an NVIDIA driver the GPU
// readings are simply off. Owns: the handful of NVML entry points used, their C types (declared
// here, as nvml.h is not a Debian package) and their error texts. May not decide anything.

#include <memory>
#include <string>

#include "os/gpu_probe.h"

namespace bulkhead::os {

// Loads `library` (a name dlopen searches for, such as "libnvidia-ml.so.1", or a path) and
// initialises NVML. Null with *whyNot set when the library is absent, lacks an entry point, or
// its initialisation fails (no driver, no device).
std::unique_ptr<GpuProbe> loadNvml(const std::string& library, std::string* whyNot);

}  // namespace bulkhead::os
