#include "api/service_status.h"

#include <cstdint>

namespace bulkhead::api {

using nlohmann::json;

ServiceStatus serviceStatusOf(
    const json& snapshot, std::chrono::nanoseconds sinceStart,
    const std::map<std::string, std::chrono::nanoseconds>& startupTimeouts) {
  long long ready = 0, target = 0;
  std::uint64_t queued = 0, running = 0, ok = 0;
  std::string waitingFor;
  std::size_t pools = 0;
  for (const auto& p : snapshot.value("pools", json::array())) {
    ++pools;
    const std::string name = p.value("name", "");
    const long long poolReady = p.value("ready_workers", 0);
    ready += poolReady;
    target += p.value("workers_target", 0);
    queued += p.value("queue_length", std::uint64_t{0});
    running += p.value("in_flight", std::uint64_t{0});
    if (p.contains("counters")) ok += p["counters"].value("ok", std::uint64_t{0});
    // A pool that gave up starting (crash loop, missing module) will not get better by waiting;
    // one still starting is waited for up to its own startup_timeout, as the pool itself does.
    auto timeout = startupTimeouts.find(name);
    const bool timedOut = timeout != startupTimeouts.end() && sinceStart >= timeout->second;
    if (poolReady == 0 && !p.value("unavailable", false) && !timedOut) {
      waitingFor += (waitingFor.empty() ? "" : ", ") + name;
    }
  }
  ServiceStatus status;
  status.settled = waitingFor.empty();
  status.line = std::to_string(pools) + (pools == 1 ? " pool, " : " pools, ") +
                std::to_string(ready) + "/" + std::to_string(target) + " workers ready, " +
                std::to_string(queued) + " queued, " + std::to_string(running) + " running, " +
                std::to_string(ok) + " ok";
  if (!status.settled) status.line += "; starting: " + waitingFor;
  return status;
}

}  // namespace bulkhead::api
