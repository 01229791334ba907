#pragma once
// Builds the exact command line and environment of a pool's worker. Pure: the base environment
// and the SDK directory are parameters, so `bulkhead env` prints exactly what a worker gets.
//
// The environment is built, not inherited (the README's example config: `inherit_env`, `profile`,
// `env`), in this order, later layers overriding earlier ones:
//   1. a whitelist of the supervisor's environment (PATH, HOME, locale, TZ, ... + inherit_env)
//   2. the pool's profiles ("torch", "tensorflow", "onnxruntime", "cpu-only")
//   3. `threads`, turned into every thread-count variable the chosen profiles document
//   4. GPU slot pinning: CUDA_VISIBLE_DEVICES for the worker's slot, kept across replacements
//   5. the pool's own `env`
//   6. bulkhead's own variables (BULKHEAD_*, PYTHONPATH, PYTHONUNBUFFERED), which a pool can't
//      break by accident

#include <map>
#include <string>
#include <vector>

#include "config/config.h"
#include "os/process.h"

namespace bulkhead::runtime {

inline constexpr int kDumpSignal = 12;  // SIGUSR2: faulthandler.register target in the SDK

struct EnvValue {
  std::string value;
  std::string source;  // "inherited", "profile torch", "threads", "gpu slot 1", "pool env", ...
};

// Layers 1-5 only (no BULKHEAD_* worker variables, no SDK on PYTHONPATH): the environment of a
// plain command such as a `bulkhead run` step.
std::map<std::string, EnvValue> buildCommandEnvironment(
    const config::PoolConfig& pool, int slot, const std::vector<std::string>& baseEnvironment);

std::map<std::string, EnvValue> buildWorkerEnvironment(
    const config::PoolConfig& pool, const std::string& workerName, int slot,
    const std::vector<std::string>& baseEnvironment, const std::string& sdkDirectory);

// argv that runs `module` as __main__ like `python -m`, without the working directory on
// sys.path.
std::vector<std::string> pythonModuleArgv(const std::string& python, const std::string& module);

os::SpawnSpec buildWorkerSpec(const config::PoolConfig& pool, const std::string& workerName,
                              int slot, const std::vector<std::string>& baseEnvironment,
                              const std::string& sdkDirectory);

// The profiles bulkhead knows, for config validation and documentation.
const std::vector<std::string>& knownProfiles();

}  // namespace bulkhead::runtime
