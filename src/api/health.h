#pragma once
// GET /livez, /healthz (the event loop answers) and GET /readyz (every pool can take a job now).

#include "api/routes.h"

namespace bulkhead::api {

// Liveness: 200 whenever the loop runs (503 while shutting down, so a balancer drains us).
Response livenessResponse(unsigned version, const runtime::Supervisor& supervisor);

// Readiness: 200 only when every pool without a fallback has a READY worker and a closed breaker;
// otherwise 503. The body lists each pool, ready or not, and why not.
Response readinessResponse(unsigned version, const runtime::Supervisor& supervisor);

// The same judgement over a pools snapshot (GET /v1/pools shape): pure, for tests.
nlohmann::json readinessOf(const nlohmann::json& poolsSnapshot, bool shuttingDown);

}  // namespace bulkhead::api
