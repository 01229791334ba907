#pragma once
// What `bulkhead run` prints: the live line of a running step, the final table and the --json
// document (docs/run.md, "JSON"). Pure formatting over plain data: no I/O here.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "run/step_state.h"

namespace bulkhead::run {

// JSON text of j. A step's stderr tail (and its result file) may hold bytes that are not UTF-8 (a
// native library's garbage, a tail cut inside a character): they become U+FFFD instead of
// nlohmann's type_error 316, which would end `bulkhead run` itself.
std::string jsonText(const nlohmann::json& j, int indent = -1);

struct StepSummary {
  std::string name;
  std::string outcome = "not_run";  // an outcome name, or "not_run" (interrupted before it)
  bool skipped = false;             // ok in the state store: not run again
  int attempts = 0;
  double durationMs = 0;
  StepPeaks peaks;
  nlohmann::json evidence = nlohmann::json::object();
  std::optional<nlohmann::json> result;
  std::vector<std::string> attemptOutcomes;
};

// One sample of a running step's whole process tree.
struct TreeSample {
  std::uint64_t rssBytes = 0;
  int threads = 0;
  int maps = 0;         // summed over the tree
  int largestMaps = 0;  // of the one process with the most (vm.max_map_count is per process)
  int processes = 0;
  int pids = 0;  // pids.current of its cgroup, or threads without one
};

std::string formatBytes(std::uint64_t bytes);     // "512.0MiB", "1.2GiB"
std::string formatDuration(double milliseconds);  // "850ms", "12.3s", "2m05s", "1h02m"

// "fold 2  attempt 1  00:12  rss=1.2GiB threads=36 maps=1850/65530 pids=506/7000"
std::string liveLine(const std::string& name, int attempt, double elapsedMs,
                     const TreeSample& sample, int maxMapCount, std::uint64_t pidsLimit);

std::string finalTable(const std::vector<StepSummary>& steps);

// The result file a step wrote (its text, none if it wrote none) into its summary, replacing an
// earlier attempt's; what was wrong with it (too large, not JSON) goes into `evidence`.
void keepStepResult(const std::optional<std::string>& text, bool tooLarge, StepSummary& summary,
                    nlohmann::json& evidence);

// A step that ended ok in an earlier run, as the state store kept it (skipped: true).
StepSummary summaryFromRecord(const StepRecord& record);

nlohmann::json summaryJson(const StepSummary& step);
nlohmann::json runJson(const std::vector<StepSummary>& steps, int exitCode, bool interrupted,
                       int maxMapCount, const std::string& cgroupMode);

}  // namespace bulkhead::run
