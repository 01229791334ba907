#pragma once
// The pool's vocabulary, part one: events, the past-tense facts the shell feeds a core::Pool
// (docs/design.md). Owns: the event types and the ids they carry. May not touch: any behaviour;
// what an event means is decided in core/pool.cc.

#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include "core/outcome.h"
#include "core/time.h"

namespace bulkhead::core {

using JobId = std::uint64_t;
using WorkerId = std::uint64_t;

struct JobSubmitted {
  JobId job;
  Payload payload;
  std::optional<Duration> timeout;  // one attempt's run limit; unset: the pool's job_timeout
  bool allowPoison = false;         // the caller overrides the quarantine for this payload
  bool async = false;               // accepted with 202: waits in the queue without a limit
  std::optional<Time> deadline{};   // the caller's end-to-end budget (queue + every attempt)
  int hops = 0;                     // how often it was rerouted to a fallback pool already
};
struct JobCancelled {
  JobId job;
};
struct WorkerSpawned {
  WorkerId worker;
  int pid;
};
struct WorkerSpawnFailed {
  WorkerId worker;
  std::string reason;
};
struct WorkerReady {
  WorkerId worker;
};
struct WorkerStartFailed {  // the worker said so (preload or handler import raised)
  WorkerId worker;
  ErrorInfo error;
};
struct JobResultReceived {
  WorkerId worker;
  JobId job;
  ResultKind kind;
  Payload body;
};
struct JobErrorReceived {
  WorkerId worker;
  JobId job;
  ErrorInfo error;
  std::uint64_t pidsMaxEvents = 0;  // the worker cgroup's counter when the error arrived
};
// Sent by the worker SDK while a job runs (docs/protocol.md).
struct WorkerHeartbeat {
  WorkerId worker;
  JobId job = 0;
  std::uint64_t progress = 0;
  double cpuSeconds = 0;
  std::string stack;  // fingerprint of the job thread's Python stack
};
// A /proc sample; `afterJob` when taken right after a job ended, before its result event;
// `afterAnswer` when taken right after the result event instead (the shell answered first, with
// nothing queued for the pool: the worker is still idle, unless something gave it a job since).
struct WorkerSampled {
  WorkerId worker;
  ResourceSample sample;
  bool afterJob = false;
  bool afterAnswer = false;
};
struct WorkerMisbehaved {  // a frame the protocol does not allow
  WorkerId worker;
  std::string reason;
};
struct WorkerExited {
  WorkerId worker;
  ExitEvidence evidence;
};
struct TimePassed {};
struct ShutdownRequested {};
// Something the shell saw that belongs in the pool's event stream but changes no policy state
// (the zygote started, died, refused to fork).
struct ShellNoted {
  std::string kind;
  std::string worker;
  std::string detail;
};

using Event = std::variant<JobSubmitted, JobCancelled, WorkerSpawned, WorkerSpawnFailed,
                           WorkerReady, WorkerStartFailed, JobResultReceived, JobErrorReceived,
                           WorkerHeartbeat, WorkerSampled, WorkerMisbehaved, WorkerExited,
                           TimePassed, ShutdownRequested, ShellNoted>;

}  // namespace bulkhead::core
