#include "api/health.h"

#include "api/job_answers.h"
#include "api/pool_views.h"

namespace bulkhead::api {

using nlohmann::json;

Response livenessResponse(unsigned version, const runtime::Supervisor& supervisor) {
  if (supervisor.shuttingDown()) {
    return jsonResponse(version, 503, {{"status", "shutting_down"}});
  }
  return jsonResponse(version, 200, {{"status", "ok"}});
}

json readinessOf(const json& snapshot, bool shuttingDown) {
  json pools = json::array();
  bool allReady = !shuttingDown;
  for (const auto& p : snapshot.value("pools", json::array())) {
    const int ready = p.value("ready_workers", 0);
    const int target = p.value("workers_target", 0);
    const std::string breaker = p.value("breaker", "closed");
    const bool hasFallback = p.contains("fallback") && p["fallback"].is_string();
    std::string why;
    if (ready == 0) {
      int starting = 0;
      for (const auto& w : p.value("workers", json::array())) {
        const std::string state = w.value("state", "");
        starting += state == "spawning" || state == "starting";
      }
      why = "no READY worker (0/" + std::to_string(target) + ", " + std::to_string(starting) +
            " starting)";
      if (p.contains("last_start_failure") && p["last_start_failure"].is_string()) {
        why += "; last start failure: " + p["last_start_failure"].get<std::string>();
      }
    } else if (breaker != "closed") {
      why = "circuit breaker " + breaker;
    }
    const bool poolReady = why.empty();
    json entry = {{"pool", p.value("name", "")},
                  {"ready", poolReady},
                  {"ready_workers", ready},
                  {"workers_target", target},
                  {"breaker", breaker}};
    if (!poolReady) entry["reason"] = why;
    if (hasFallback) entry["fallback"] = p["fallback"];
    // A pool with a fallback still serves (through the fallback) while it is not ready.
    if (!poolReady && !hasFallback) allReady = false;
    pools.push_back(std::move(entry));
  }
  json body = {{"status", shuttingDown ? "shutting_down"
                          : allReady   ? "ready"
                                       : "not_ready"},
               {"pools", std::move(pools)}};
  return body;
}

Response readinessResponse(unsigned version, const runtime::Supervisor& supervisor) {
  json body = readinessOf(poolsJson(supervisor), supervisor.shuttingDown());
  return jsonResponse(version, body["status"] == "ready" ? 200 : 503, body);
}

}  // namespace bulkhead::api
