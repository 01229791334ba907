#include "api/cluster_views.h"

#include <unistd.h>

#include "api/pool_views.h"

namespace bulkhead::api {

using nlohmann::json;

json nodeDescription(const runtime::Supervisor& supervisor, const std::string& node,
                     const std::string& address, const std::string& version) {
  const json all = poolsJson(supervisor);
  json pools = json::array();
  for (const json& p : all["pools"]) {
    pools.push_back({{"name", p["name"]},
                     {"workers_target", p["workers_target"]},
                     {"ready_workers", p["ready_workers"]},
                     {"in_flight", p["in_flight"]},
                     {"queue_length", p["queue_length"]},
                     {"breaker", p["breaker"]},
                     {"max_payload", supervisor.maxPayload(p["name"].get<std::string>())}});
  }
  return {{"node", node},
          {"pid", static_cast<long>(::getpid())},
          {"address", address},
          {"version", version},
          {"uptime_s", all["uptime_s"]},
          {"shutting_down", supervisor.shuttingDown()},
          {"pools", std::move(pools)},
          {"announced_at_unix_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count()}};
}

json clusterJson(cluster::NodeParts node) {
  if (!node) return {{"enabled", false}};
  const cluster::Membership* membership = node.membership;
  const auto snapshot = membership->view();
  const cluster::MembershipView& view = *snapshot;
  json nodes = json::array();
  for (const std::string& text : view.nodes) {
    json announced = json::parse(text, nullptr, false);
    if (announced.is_object() && announced.contains("node")) nodes.push_back(std::move(announced));
  }
  json redis = {{"address", membership->redisAddress()}, {"connected", view.connected}};
  if (!view.error.empty()) redis["error"] = view.error;
  json j = {{"enabled", true},
            {"node", membership->nodeName()},
            {"redis", std::move(redis)},
            {"nodes", std::move(nodes)},
            {"in_stream", view.inStream}};
  if (node.jobs) {  // the pools this node sends jobs to, as of its last heartbeat
    json remote = json::array();
    for (const auto& [pool, known] : node.jobs->directory()) remote.push_back(pool);
    j["remote_pools"] = std::move(remote);
  }
  if (node.jobs) {  // what this node refuses now, by pool
    json quarantined = json::object();
    for (const auto& [pool, entries] : node.jobs->quarantine()) quarantined[pool] = entries.size();
    j["quarantine"] = std::move(quarantined);
  }
  if (node.jobs) {
    const cluster::ClusterRunner::Counters& c = node.jobs->counters();
    j["jobs"] = {{"sent", c.sent},
                 {"taken", c.taken},
                 {"taken_over", c.takenOver},
                 {"poisoned", c.poisoned},
                 {"waiting", node.jobs->sentWaiting()},
                 {"outcomes_unwritten", node.jobs->outcomesUnwritten()}};
  }
  if (node.records) {  // this node's job-id range (0: not given yet) and records on their way
    j["node_number"] = node.records->nodeNumber();
    j["records_unwritten"] = node.records->unwritten();
  }
  if (view.readAt.time_since_epoch().count() != 0) {
    j["read_at_unix_ms"] =
        std::chrono::duration_cast<std::chrono::milliseconds>(view.readAt.time_since_epoch())
            .count();
  }
  return j;
}

}  // namespace bulkhead::api
