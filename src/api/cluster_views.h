#pragma once
// The cluster as the API shows it (docs/cluster.md): this node's announcement (what every other
// node reads from Redis) and GET /v1/cluster (the nodes alive, as the last heartbeat read them).
// Owns the field names of both; reads the supervisor's pools and the membership's last view.

#include <nlohmann/json.hpp>
#include <string>

#include "cluster/node_parts.h"
#include "runtime/supervisor.h"

namespace bulkhead::api {

// This node: name, pid, HTTP address, version, uptime and, per pool, workers and queue.
nlohmann::json nodeDescription(const runtime::Supervisor& supervisor, const std::string& node,
                               const std::string& address, const std::string& version);

// GET /v1/cluster. Without a [cluster] section, {"enabled": false}.
nlohmann::json clusterJson(cluster::NodeParts node);

}  // namespace bulkhead::api
