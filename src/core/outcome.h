#pragma once
// Outcomes and the evidence attached to each attempt of a job. Pure data: no I/O.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/blob.h"

namespace bulkhead::core {

enum class Outcome {
  kOk,
  kHandlerError,
  kCrashed,
  kTimedOut,
  kHung,
  kOomKilled,
  kResourceExhausted,
  kPoison,
  kOverloaded,
  kUnavailable,
  kCancelled,
};

inline constexpr Outcome kAllOutcomes[] = {
    Outcome::kOk,         Outcome::kHandlerError, Outcome::kCrashed,           Outcome::kTimedOut,
    Outcome::kHung,       Outcome::kOomKilled,    Outcome::kResourceExhausted, Outcome::kPoison,
    Outcome::kOverloaded, Outcome::kUnavailable,  Outcome::kCancelled,
};

std::string_view outcomeName(Outcome outcome);

// Failures of the worker rather than of the job's own code: worth another attempt on a fresh
// worker.
bool isInfrastructureFailure(Outcome outcome);

struct ErrorInfo {
  std::string type;
  std::string message;
  std::string traceback;
};

struct ResourceSample {
  std::uint64_t rssBytes = 0;
  int threads = 0;
  int maps = -1;  // -1: not read in this sample
  int fds = 0;
  double cpuSeconds = 0;
  std::uint64_t pidsMaxEvents = 0;   // the worker cgroup's pids.events "max" so far (0: none)
  std::int64_t gpuMemoryBytes = -1;  // held on every GPU by the worker's processes; -1: not read
};

// What the OS layer observed about a worker when it went away.
struct ExitEvidence {
  std::optional<int> signal;    // set when killed by a signal (WTERMSIG)
  std::optional<int> exitCode;  // set when it exited (WEXITSTATUS)
  bool coreDumped = false;
  std::string stderrTail;
  std::uint64_t stderrDroppedBytes = 0;
  std::string stdoutTail;
  std::string stacks;  // faulthandler output: fatal-signal dump or on-demand dump
  // From the worker's cgroup, when it has one (cumulative over its life).
  bool oomKilled = false;
  std::uint64_t memoryPeakBytes = 0;
  std::uint64_t pidsMaxEvents = 0;
};

struct AttemptRecord {
  int number = 0;
  std::string worker;
  int pid = 0;
  Outcome outcome = Outcome::kOk;
  std::string cause;
  ExitEvidence exit;               // empty for ok / handler_error
  std::optional<ErrorInfo> error;  // handler_error, start failure
  double runMs = 0;
  std::string limit;             // oom_killed / resource_exhausted: "memory", "pids", "maps"
  std::uint64_t limitValue = 0;  // the configured bound, when there is one
  std::optional<ResourceSample> lastSample;
};

enum class ResultKind { kBytes, kJson, kText };

using Payload = std::shared_ptr<const Blob>;

inline Payload makePayload(std::string bytes) {
  return std::make_shared<const Blob>(std::move(bytes));
}

struct JobReport {
  std::uint64_t jobId = 0;
  std::string pool;
  Outcome outcome = Outcome::kOk;
  std::string detail;
  std::vector<AttemptRecord> attempts;
  ResultKind resultKind = ResultKind::kBytes;
  Payload result;      // ok only
  std::string worker;  // ok only: who produced it
  double queueMs = 0;
  double runMs = 0;
  double totalMs = 0;
  std::optional<double> retryAfterSeconds;  // overloaded / unavailable
  bool queueFull = false;                   // overloaded because the queue was at its limit
  bool breakerOpen = false;  // unavailable because the pool's circuit breaker refused it
  std::string fingerprint;   // poison, or quarantined: the quarantined payload's identity
  bool quarantined = false;  // this job's attempts put its payload in quarantine
  std::string stage;         // timed_out: "queued" or "running"
  std::vector<std::string> fallbackFrom;          // pools whose open breaker sent the job on
  std::optional<AttemptRecord> lastStartFailure;  // unavailable because no worker can start
  // With [cluster]: the node that ran the job, and how many times the cluster handed it to a
  // node (more than 1 when a node died or lost Redis while running it); 0: not handed out.
  std::string node;
  std::uint64_t runs = 0;
};

}  // namespace bulkhead::core
