#pragma once
// Why a worker is being recycled (replaced between jobs). The cause drives behaviour (a crossed
// bound takes no further job, a predicted one may) through the enum; its word is only shown:
// in the pool's event stream, the operator log, the API's worker view and the metrics label.
// Owns: the causes and their words. May not: decide when to recycle (resource_rules, pool).

#include <string_view>

namespace bulkhead::core {

enum class RecycleCause {
  kJobs,       // served max_jobs
  kAge,        // older than max_age
  kExhausted,  // a thread or map could not be created: it must take no further job
  kRss,        // over a bound now
  kThreads,
  kMaps,
  kFds,
  kGpuMemory,
  kTrendRss,  // the next job would take it over a bound
  kTrendThreads,
  kTrendMaps,
  kTrendFds,
  kTrendGpuMemory,
};

// The words users see: "jobs", "age", "exhausted", "rss", ..., "trend:maps".
std::string_view recycleCauseName(RecycleCause cause);

// A bound already crossed (not a predicted one) or an exhausted worker: no further job.
bool recycleCauseCrossedBound(RecycleCause cause);

}  // namespace bulkhead::core
