#pragma once
// GET /metrics: Prometheus text exposition format 0.0.4.

#include <string>

#include "runtime/supervisor.h"

namespace bulkhead::api {

std::string renderMetrics(const runtime::Supervisor& supervisor);

}  // namespace bulkhead::api
