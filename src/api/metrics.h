#pragma once
// GET /metrics: Prometheus text exposition format 0.0.4.

#include <string>

#include "jobs/jobs_service.h"
#include "runtime/supervisor.h"

namespace bulkhead::api {

// jobs: for the journal's error count, when there is a journal.
std::string renderMetrics(const runtime::Supervisor& supervisor, const jobs::JobsService& jobs);

}  // namespace bulkhead::api
