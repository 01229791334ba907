#include "runtime/worker_spec.h"

#include <algorithm>
#include <cstdio>

namespace bulkhead::runtime {

namespace {

// Inherited from the supervisor unless the pool lists more in inherit_env. A trailing '*' is a
// prefix match. Everything else (credentials, LD_PRELOAD, a stray OMP_NUM_THREADS) stays out.
const std::vector<std::string>& defaultWhitelist() {
  static const std::vector<std::string> kList = {"PATH",     "HOME", "USER", "LOGNAME", "LANG",
                                                 "LANGUAGE", "LC_*", "TZ",   "TMPDIR",  "TERM"};
  return kList;
}

bool matches(const std::string& pattern, const std::string& name) {
  if (!pattern.empty() && pattern.back() == '*') {
    return name.rfind(pattern.substr(0, pattern.size() - 1), 0) == 0;
  }
  return pattern == name;
}

struct Profile {
  std::string name;
  std::map<std::string, std::string> fixed;  // set as is
  std::vector<std::string> threadVariables;  // set to `threads` when the pool sets it
};

// Only variables the libraries document:
// - OpenMP: OMP_NUM_THREADS (OpenMP spec); MKL: MKL_NUM_THREADS (oneMKL docs); OpenBLAS:
//   OPENBLAS_NUM_THREADS (OpenBLAS README). PyTorch's CPU threading docs name OMP_NUM_THREADS
//   and MKL_NUM_THREADS for its intra-op pool.
// - TensorFlow reads TF_NUM_INTRAOP_THREADS and TF_NUM_INTEROP_THREADS (threading config);
//   TF_FORCE_GPU_ALLOW_GROWTH=true stops it from taking all GPU memory at start.
// - CUDA: CUDA_VISIBLE_DEVICES ("" hides every GPU), CUDA_MODULE_LOADING=LAZY (CUDA >= 11.7).
// Not here: TF_DISABLE_POOL_ALLOCATOR, sometimes suggested for TF allocator crashes: it does not
// exist in TensorFlow.
const std::vector<Profile>& profiles() {
  static const std::vector<Profile> kProfiles = {
      {"torch",
       {{"CUDA_MODULE_LOADING", "LAZY"}},
       {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"}},
      {"tensorflow",
       {{"TF_FORCE_GPU_ALLOW_GROWTH", "true"}},
       {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS"}},
      {"onnxruntime", {}, {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"}},
      {"cpu-only", {{"CUDA_VISIBLE_DEVICES", ""}}, {}},
  };
  return kProfiles;
}

// Thread variables every numeric library honours, used when `threads` is set without a profile.
const std::vector<std::string>& baseThreadVariables() {
  static const std::vector<std::string> kVars = {"OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                 "OPENBLAS_NUM_THREADS"};
  return kVars;
}

}  // namespace

const std::vector<std::string>& knownProfiles() {
  static const std::vector<std::string> kNames = [] {
    std::vector<std::string> names;
    for (const auto& p : profiles()) names.push_back(p.name);
    return names;
  }();
  return kNames;
}

std::map<std::string, EnvValue> buildCommandEnvironment(
    const config::PoolConfig& pool, int slot, const std::vector<std::string>& baseEnvironment) {
  std::map<std::string, EnvValue> env;
  // 1. whitelist
  for (const auto& entry : baseEnvironment) {
    auto eq = entry.find('=');
    if (eq == std::string::npos) continue;
    std::string name = entry.substr(0, eq);
    bool allowed = false;
    for (const auto& pattern : defaultWhitelist()) allowed = allowed || matches(pattern, name);
    for (const auto& pattern : pool.inheritEnv) allowed = allowed || matches(pattern, name);
    if (allowed && name.rfind("BULKHEAD_", 0) != 0) env[name] = {entry.substr(eq + 1), "inherited"};
  }
  // 2. profiles, 3. threads
  std::vector<std::string> threadVariables;
  for (const auto& name : pool.profiles) {
    for (const auto& p : profiles()) {
      if (p.name != name) continue;
      for (const auto& [key, value] : p.fixed) env[key] = {value, "profile " + name};
      for (const auto& v : p.threadVariables) {
        if (std::find(threadVariables.begin(), threadVariables.end(), v) == threadVariables.end()) {
          threadVariables.push_back(v);
        }
      }
    }
  }
  if (pool.threads > 0) {
    if (threadVariables.empty()) threadVariables = baseThreadVariables();
    for (const auto& v : threadVariables) env[v] = {std::to_string(pool.threads), "threads"};
  }
  // 4. GPU slot pinning
  if (!pool.gpus.empty() && pool.gpusPerWorker > 0) {
    std::string devices;
    const std::size_t n = pool.gpus.size();
    for (int i = 0; i < pool.gpusPerWorker; ++i) {
      std::size_t index = (static_cast<std::size_t>(slot) * pool.gpusPerWorker + i) % n;
      devices += (devices.empty() ? "" : ",") + std::to_string(pool.gpus[index]);
    }
    env["CUDA_VISIBLE_DEVICES"] = {devices, "gpu slot " + std::to_string(slot)};
  }
  // 5. the pool's own env
  for (const auto& [key, value] : pool.env) env[key] = {value, "pool env"};
  return env;
}

std::map<std::string, EnvValue> buildWorkerEnvironment(
    const config::PoolConfig& pool, const std::string& workerName, int slot,
    const std::vector<std::string>& baseEnvironment, const std::string& sdkDirectory) {
  std::map<std::string, EnvValue> env = buildCommandEnvironment(pool, slot, baseEnvironment);
  // 6. bulkhead's own
  std::string pythonPath;
  for (const auto& dir : pool.pythonPath) pythonPath += (pythonPath.empty() ? "" : ":") + dir;
  if (!sdkDirectory.empty()) pythonPath += (pythonPath.empty() ? "" : ":") + sdkDirectory;
  const std::string own = "bulkhead";
  env["PYTHONPATH"] = {pythonPath, "python_path + SDK"};
  env["PYTHONUNBUFFERED"] = {"1", own};
  env["BULKHEAD_CONTROL_FD"] = {std::to_string(os::kControlFd), own};
  env["BULKHEAD_STACKS_FD"] = {std::to_string(os::kStacksFd), own};
  env["BULKHEAD_DUMP_SIGNAL"] = {std::to_string(kDumpSignal), own};
  env["BULKHEAD_HANDLER"] = {pool.handler, own};
  env["BULKHEAD_PRELOAD"] = {pool.preload, own};
  env["BULKHEAD_INIT"] = {pool.init, own};
  env["BULKHEAD_POOL"] = {pool.name, own};
  env["BULKHEAD_WORKER_ID"] = {workerName, own};
  env["BULKHEAD_MAX_FRAME"] = {std::to_string(pool.maxPayload), own};
  env["BULKHEAD_MEMFD_THRESHOLD"] = {std::to_string(pool.memfdThreshold), "memfd_threshold"};
  // memfd_threshold = 0 turns memfds off both ways.
  env["BULKHEAD_MEMFD_RESULT_THRESHOLD"] = {
      std::to_string(pool.memfdThreshold ? pool.memfdResultThreshold : 0),
      "memfd_result_threshold"};
  if (pool.hangAfter.count() > 0) {
    // Four beats per hang window, so one late beat is never mistaken for a hang.
    double interval = std::chrono::duration<double>(pool.hangAfter).count() / 4;
    interval = std::clamp(interval, 0.05, 5.0);
    char text[32];
    std::snprintf(text, sizeof text, "%.3f", interval);
    env["BULKHEAD_HEARTBEAT_INTERVAL"] = {text, "hang_after"};
  }
  return env;
}

std::vector<std::string> pythonModuleArgv(const std::string& python, const std::string& module) {
  // `python -m` would put the supervisor's working directory first on sys.path, where any
  // json.py or utils.py shadows the SDK's and the handler's imports. -c puts '' there instead,
  // which this removes before anything else is imported (-P would do it, but only from 3.11).
  return {python, "-c",
          "import sys\n"
          "if sys.path and sys.path[0] == '': del sys.path[0]\n"
          "import runpy\n"
          "runpy.run_module('" +
              module + "', run_name='__main__', alter_sys=True)\n"};
}

os::SpawnSpec buildWorkerSpec(const config::PoolConfig& pool, const std::string& workerName,
                              int slot, const std::vector<std::string>& baseEnvironment,
                              const std::string& sdkDirectory) {
  os::SpawnSpec spec;
  spec.executable = pool.python;
  spec.argv = pythonModuleArgv(pool.python, "bulkhead.worker");
  for (const auto& [key, entry] :
       buildWorkerEnvironment(pool, workerName, slot, baseEnvironment, sdkDirectory)) {
    spec.env.push_back(key + "=" + entry.value);
  }
  return spec;
}

}  // namespace bulkhead::runtime
