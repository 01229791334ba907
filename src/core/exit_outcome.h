#pragma once
// How a process that died (or was killed) while doing work is classified: the evidence the OS
// layer gathered, the hard limits it ran under and the reason we killed it, if we did, turned into
// one typed outcome with its cause and the limit it hit. Pure: used by the pool (a worker that
// died during a job, Pool::failInFlight) and by `bulkhead run` (a step's process tree that ended).
//
// Order of evidence: the kernel's OOM kill first; then, for an abnormal end, exhausted pids or
// maps (kernel counters, then library messages when the process exited on its own); then our own
// kill reason (timeout, hang, cancel), where a pids refusal during the work still wins because a
// refused thread often shows up as a hang or a timeout.

#include <cstdint>
#include <optional>
#include <string>

#include "core/outcome.h"
#include "core/resource_rules.h"

namespace bulkhead::core {

// Why the supervisor itself ended the process, when it did.
enum class ExitKillReason {
  kTimeout,       // the work ran past its time limit
  kHung,          // no heartbeat
  kProtocol,      // the worker broke the frame protocol
  kCancelled,     // the caller (or the operator: Ctrl-C) cancelled it
  kOther,         // startup/stop timeouts: not a verdict on the work
  kResourceBound  // a soft bound we watch ourselves (e.g. --max-maps) was crossed
};

struct ExitFacts {
  ExitEvidence evidence;
  LimitEvidence limits;  // oomKilled, limits configured, pids events, last sample
  std::uint64_t memoryLimitBytes = 0;
  std::uint64_t pidsLimit = 0;
  bool pidsRefusedDuringWork = false;  // pids.events max grew while this work ran
  std::optional<ExitKillReason> killReason;
  std::string killCause;  // what the killer said ("job_timeout of 5s passed", ...)
  // How a nonzero exit code without limit evidence reads: a pool's worker never exits on its own
  // while running a job (kCrashed); a step's own program exiting 1 is its own bug (kHandlerError).
  Outcome nonzeroExit = Outcome::kCrashed;
  std::string boundLimit;  // kResourceBound: which bound ("maps") and its value
  std::uint64_t boundValue = 0;
};

struct ExitVerdict {
  Outcome outcome = Outcome::kCrashed;
  std::string cause;
  std::string limit;  // "memory", "pids", "threads_or_maps", "maps" or ""
  std::uint64_t limitValue = 0;
};

// `what` names the process in the default cause: "worker", "step".
ExitVerdict classifyExit(const ExitFacts& facts, const std::string& what);

// "killed by SIGSEGV (core dumped)", "exited with code 3", "vanished".
std::string describeExitEvidence(const ExitEvidence& e);

}  // namespace bulkhead::core
