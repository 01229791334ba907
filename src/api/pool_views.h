#pragma once
// The JSON views of the supervisor's state: GET /v1/pools, /v1/pools/NAME (with each worker's
// sample history), /v1/quarantine, and the pools part of readiness. Owns: the field names and
// shapes of those bodies (docs/api.md; tests/python pins them). May not touch: the supervisor's
// state; it reads the typed snapshots the supervisor exposes, and a pool's limits from its policy.

#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>

#include "runtime/supervisor.h"

namespace bulkhead::api {

nlohmann::json poolsJson(const runtime::Supervisor& supervisor);
// One pool with every worker's sample history; nullopt for an unknown pool.
std::optional<nlohmann::json> poolJson(const runtime::Supervisor& supervisor,
                                       std::string_view pool);
nlohmann::json quarantineJson(const runtime::Supervisor& supervisor);
// One resource sample, as every view and an attempt's "last_sample" show it.
nlohmann::json sampleJson(const core::ResourceSample& sample);

}  // namespace bulkhead::api
