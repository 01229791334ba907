#pragma once
// How one attempt of a step ended, as a typed outcome with its evidence (the JSON object kept in
// the state store and printed): the facts the shell gathered put through core::classifyExit, the
// same classification the pool uses for its workers. Pure: no I/O.
//
// A step's own nonzero exit is handler_error (its bug; never retried) unless the evidence shows a
// limit (pids.events max, library messages of a refused thread or map, the OOM killer); exit 0 is
// ok unless we stopped the step (timeout, Ctrl-C, --max-maps).

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/outcome.h"
#include "core/step_scheduler.h"

namespace bulkhead::run {

struct StepEnd {
  int rawStatus = 0;       // from waitpid
  std::string stderrTail;  // the kept tail
  std::uint64_t stderrTotalBytes = 0;
  std::uint64_t oomKills = 0;
  std::uint64_t pidsMaxEvents = 0;
  std::uint64_t memoryPeakBytes = 0;
  std::optional<core::StepStopReason> stopReason;
  int interruptSignal = 0;
  int largestProcessMaps = 0;
  std::uint64_t rssBytes = 0;
  int threads = 0;
  double runMs = 0;
};

struct StepLimitsSet {
  std::uint64_t memoryBytes = 0;  // 0: none
  std::uint64_t pids = 0;
  int maxMaps = 0;
  double timeoutMs = 0;
};

struct StepVerdict {
  core::Outcome outcome = core::Outcome::kOk;
  nlohmann::json evidence = nlohmann::json::object();
};

inline constexpr std::size_t kEvidenceTailBytes = 4096;

StepVerdict judgeStep(const StepEnd& end, const StepLimitsSet& limits);

}  // namespace bulkhead::run
