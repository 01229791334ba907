#include "runtime/worker_spec.h"

#include <algorithm>
#include <cstdio>
#include <map>

namespace bulkhead::runtime {

os::SpawnSpec buildWorkerSpec(const config::PoolConfig& pool, const std::string& workerName,
                              const std::vector<std::string>& baseEnvironment,
                              const std::string& sdkDirectory) {
  std::map<std::string, std::string> env;
  for (const auto& entry : baseEnvironment) {
    auto eq = entry.find('=');
    if (eq == std::string::npos || entry.rfind("BULKHEAD_", 0) == 0) continue;
    env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  std::string pythonPath;
  for (const auto& dir : pool.pythonPath) pythonPath += (pythonPath.empty() ? "" : ":") + dir;
  if (!sdkDirectory.empty()) pythonPath += (pythonPath.empty() ? "" : ":") + sdkDirectory;
  env["PYTHONPATH"] = pythonPath;
  env["PYTHONUNBUFFERED"] = "1";
  env["BULKHEAD_CONTROL_FD"] = std::to_string(os::kControlFd);
  env["BULKHEAD_STACKS_FD"] = std::to_string(os::kStacksFd);
  env["BULKHEAD_DUMP_SIGNAL"] = std::to_string(kDumpSignal);
  env["BULKHEAD_HANDLER"] = pool.handler;
  env["BULKHEAD_PRELOAD"] = pool.preload;
  env["BULKHEAD_POOL"] = pool.name;
  env["BULKHEAD_WORKER_ID"] = workerName;
  env["BULKHEAD_MAX_FRAME"] = std::to_string(pool.maxPayload);
  if (pool.hangAfter.count() > 0) {
    // Four beats per hang window, so one late beat is never mistaken for a hang.
    double interval = std::chrono::duration<double>(pool.hangAfter).count() / 4;
    interval = std::clamp(interval, 0.05, 5.0);
    char text[32];
    std::snprintf(text, sizeof text, "%.3f", interval);
    env["BULKHEAD_HEARTBEAT_INTERVAL"] = text;
  }
  for (const auto& [key, value] : pool.env) env[key] = value;

  os::SpawnSpec spec;
  spec.executable = pool.python;
  spec.argv = {pool.python, "-m", "bulkhead.worker"};
  for (const auto& [key, value] : env) spec.env.push_back(key + "=" + value);
  return spec;
}

}  // namespace bulkhead::runtime
