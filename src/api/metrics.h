#pragma once
// GET /metrics: Prometheus text exposition format 0.0.4.

#include <string>

#include "runtime/supervisor.h"

namespace bulkhead::api {

class AsyncJobs;

// jobs: the journal-backed async jobs, for their journal error count (null: no journal).
std::string renderMetrics(const runtime::Supervisor& supervisor, const AsyncJobs* jobs = nullptr);

}  // namespace bulkhead::api
