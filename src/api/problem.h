#pragma once
// The one table that maps outcomes to HTTP statuses and problem+json bodies (RFC 9457). Mirrored
// in docs/api.md and in the Python client's exception classes.

#include <nlohmann/json.hpp>
#include <string>

#include "core/outcome.h"

namespace bulkhead::api {

int httpStatusFor(const core::JobReport& report);
std::string titleFor(core::Outcome outcome);
nlohmann::json problemFor(const core::JobReport& report);
nlohmann::json attemptJson(const core::AttemptRecord& attempt);
// A problem that is not a job outcome (bad request, unknown pool, ...).
nlohmann::json apiProblem(int status, const std::string& error, const std::string& detail);

}  // namespace bulkhead::api
