#pragma once
// Builds the exact command line and environment of a pool's worker. Pure: the base environment
// and the SDK directory are parameters.

#include <string>
#include <vector>

#include "config/config.h"
#include "os/process.h"

namespace bulkhead::runtime {

inline constexpr int kDumpSignal = 12;  // SIGUSR2: faulthandler.register target in the SDK

os::SpawnSpec buildWorkerSpec(const config::PoolConfig& pool, const std::string& workerName,
                              const std::vector<std::string>& baseEnvironment,
                              const std::string& sdkDirectory);

}  // namespace bulkhead::runtime
