#pragma once
// The pool's vocabulary, part two: actions, the imperatives a core::Pool answers with and the
// shell executes (src/runtime/supervisor.cc). Owns: the action types. May not touch: any
// behaviour.

#include <string>
#include <variant>

#include "core/events.h"
#include "core/outcome.h"

namespace bulkhead::core {

struct SpawnWorker {
  WorkerId worker;
  int slot;
};
struct SendJob {
  WorkerId worker;
  JobId job;
  Payload payload;
};
struct SendShutdown {
  WorkerId worker;
};
struct DumpStacks {
  WorkerId worker;
};
enum class GroupSignal { kTerminate, kKill };
struct SignalWorkerGroup {
  WorkerId worker;
  GroupSignal signal;
};
struct ReleaseWorker {  // the pool is done with this worker: the shell may drop its handles
  WorkerId worker;
};
struct FinishJob {
  JobReport report;
};
// The pool's breaker is open and its fallback pool takes the job instead (core/fallback_route.h):
// the shell submits it there. `report` is this pool's answer, for when that pool is gone.
struct Resubmit {
  JobId job;
  std::string pool;
  JobReport report;
};

using Action = std::variant<SpawnWorker, SendJob, SendShutdown, DumpStacks, SignalWorkerGroup,
                            ReleaseWorker, FinishJob, Resubmit>;

}  // namespace bulkhead::core
