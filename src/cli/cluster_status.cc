// `bulkhead status --cluster`: the nodes of the cluster (GET /v1/cluster) as a table, with the
// Redis connection's state, each pool's stream length and this node's share of the jobs; a
// daemon without [cluster] says so.

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/client_commands.h"

namespace bulkhead::cli {

using nlohmann::json;

int showCluster(const std::string& url) {
  int exitCode = 0;
  auto fetched = fetchJson(url, "/v1/cluster", exitCode);
  if (!fetched) return exitCode;
  const json& j = *fetched;
  if (!j.value("enabled", false)) {
    std::printf("this daemon is not part of a cluster (no [cluster] section)\n");
    return 0;
  }
  const json& redis = j["redis"];
  std::printf("node %s; redis %s: %s\n", j.value("node", "").c_str(),
              redis.value("address", "").c_str(),
              redis.value("connected", false)
                  ? "connected"
                  : ("NOT connected (" + redis.value("error", std::string("?")) + ")").c_str());
  std::printf("\n%-16s %-26s %-8s %-9s %s\n", "NODE", "ADDRESS", "PID", "UPTIME", "POOLS");
  for (const json& n : j["nodes"]) {
    std::string pools;
    for (const json& p : n.value("pools", json::array())) {
      if (!pools.empty()) pools += ", ";
      pools += p.value("name", "") + " " + std::to_string(p.value("ready_workers", 0)) + "/" +
               std::to_string(p.value("workers_target", 0));
    }
    char uptime[32];
    std::snprintf(uptime, sizeof uptime, "%.0fs", n.value("uptime_s", 0.0));
    std::printf("%-16s %-26s %-8ld %-9s %s%s\n", n.value("node", "").c_str(),
                n.value("address", "").c_str(), n.value("pid", 0L), uptime, pools.c_str(),
                n.value("shutting_down", false) ? " (stopping)" : "");
  }
  // What waits in (or runs through) each pool's stream, and this node's share of the jobs.
  std::string streams;
  const json inStream = j.value("in_stream", json::object());
  for (const auto& [pool, length] : inStream.items()) {
    if (!streams.empty()) streams += ", ";
    streams += pool + " " + std::to_string(length.is_number() ? length.get<long long>() : 0);
  }
  std::printf("\nin streams: %s\n", streams.empty() ? "-" : streams.c_str());
  if (j.contains("jobs") && j["jobs"].is_object()) {
    const json& k = j["jobs"];
    std::printf(
        "this node: sent %llu, taken %llu (%llu taken over, %llu poisoned), waiting %llu, "
        "outcomes unwritten %llu\n",
        k.value("sent", 0ull), k.value("taken", 0ull), k.value("taken_over", 0ull),
        k.value("poisoned", 0ull), k.value("waiting", 0ull), k.value("outcomes_unwritten", 0ull));
  }
  if (j.contains("node_number")) {  // ids of this node's jobs are its number times 2^40 plus n
    std::printf("job ids: node number %llu; async job records unwritten %llu\n",
                j.value("node_number", 0ull), j.value("records_unwritten", 0ull));
  }
  return 0;
}

}  // namespace bulkhead::cli
