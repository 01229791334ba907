#pragma once
// The state directory of `bulkhead run --state DIR`: one SQLite file (DIR/state.sqlite) with a row
// per step, so a later invocation skips the steps that ended ok and reruns the rest. Owns the
// schema (docs/run.md, "State") and the DIR/lock file that keeps two runs off one state.
//
// A step's row says `running` (with our pid) from its start until its outcome is written; a row
// still `running` when the next invocation opens the store belongs to a run that was killed, and
// that step is rerun like any step that did not end ok.

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "os/unique_fd.h"

namespace bulkhead::run {

struct StepPeaks {
  std::uint64_t rssBytes = 0;  // the step's whole process tree, summed per sample
  int threads = 0;
  int maps = 0;
  int pids = 0;  // tasks (processes + threads) in its cgroup, or threads when there is none
};

struct StepRecord {
  std::string name;
  std::string outcome;  // an outcome name, or "running"
  int attempts = 0;
  double durationMs = 0;
  int runnerPid = 0;  // the `bulkhead run` that wrote the row
  int pid = 0;        // the step's last process group leader
  StepPeaks peaks;
  std::string evidenceJson = "{}";  // object: cause, signal, exit_code, limit, stderr_tail ...
  std::optional<std::string> resultJson;  // what the step wrote to $BULKHEAD_STEP_RESULT
  std::int64_t updatedAtMs = 0;           // unix time
};

class StepState {
 public:
  // Creates DIR (and DIR/results) if needed, takes DIR/lock (flock, non-blocking) and opens
  // DIR/state.sqlite. nullopt + *error when the directory is unusable or another run holds it.
  static std::unique_ptr<StepState> open(const std::string& dir, std::string* error);
  // No directory: an in-memory store (nothing resumes).
  static std::unique_ptr<StepState> inMemory(std::string* error);
  ~StepState();
  StepState(const StepState&) = delete;
  StepState& operator=(const StepState&) = delete;

  bool clear(std::string* error);  // --fresh
  std::optional<StepRecord> get(const std::string& name, std::string* error);
  bool put(const StepRecord& record, std::string* error);
  const std::string& directory() const { return dir_; }

 private:
  StepState() = default;
  bool exec(const char* sql, std::string* error);
  sqlite3* db_ = nullptr;
  std::string dir_;
  os::UniqueFd lock_;
};

}  // namespace bulkhead::run
