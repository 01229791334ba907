#pragma once
// What the daemon tells its service manager (systemd, Type=notify): whether start-up has settled
// (every pool has a READY worker, gave up starting, or ran out of its startup_timeout) and a
// one-line STATUS. Pure: a GET /v1/pools snapshot and the time since start in, text out.

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace bulkhead::api {

struct ServiceStatus {
  bool settled = false;  // READY=1 may be sent
  std::string line;      // STATUS=
};

ServiceStatus serviceStatusOf(
    const nlohmann::json& poolsSnapshot, std::chrono::nanoseconds sinceStart,
    const std::map<std::string, std::chrono::nanoseconds>& startupTimeouts);

}  // namespace bulkhead::api
