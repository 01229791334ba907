#pragma once
// GET /metrics: Prometheus text exposition format 0.0.4.

#include <string>

#include "cluster/node_parts.h"
#include "jobs/jobs_service.h"
#include "runtime/supervisor.h"

namespace bulkhead::api {

// jobs: for the journal's error count, when there is a journal.
// `cluster`: with [cluster], this node's parts (adds the bulkhead_cluster_* families).
std::string renderMetrics(const runtime::Supervisor& supervisor, const jobs::JobsService& jobs,
                          cluster::NodeParts cluster = {});

}  // namespace bulkhead::api
