#pragma once
// The shell of `bulkhead run`: starts each step as its own process group in its own cgroup,
// passes its output through, samples its tree, carries out the StepScheduler's actions (start,
// SIGTERM at timeout or Ctrl-C, SIGKILL after the grace), classifies each end with
// core::classifyExit, records every step in the StepState store and prints the live lines, the
// final table or the --json document. Exit codes: docs/run.md.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/time.h"

namespace bulkhead::run {

inline constexpr int kExitAllOk = 0;
inline constexpr int kExitStepFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitEnvironment = 3;  // state directory unusable or locked

struct RunOptions {
  std::vector<std::string> steps;
  std::vector<std::string> command;  // argv template; "{step}" is replaced by the step name
  std::string executable;            // command[0] resolved against PATH
  std::optional<std::uint64_t> memoryBytes;
  std::optional<std::uint64_t> pids;
  int maxMaps = 0;  // 0: not watched
  core::Duration timeout{0};
  core::Duration grace = std::chrono::seconds(10);
  int retries = 0;
  int parallel = 1;
  std::string stateDir;  // "": in memory, nothing resumes
  bool fresh = false;
  bool json = false;
  config::PoolConfig environment;  // profiles, threads, env, inherit_env
  std::string workingDirectory;
};

// Runs the steps; returns the process exit code (0 only when every step ended ok).
int runSteps(const RunOptions& options);

}  // namespace bulkhead::run
