#pragma once
// Typed answers to HTTP answers: a job's report (the same bytes and headers whether it is read at
// once, by a long poll or after a restart), the jobs service's refusals and lookups, and the
// API's own errors. Statuses, problem types and titles come from the one table in problem.h.
//
// Owns: headers, bodies and their exact wording. It may not decide anything: what to answer is
// chosen by the jobs service (jobs/jobs_service.h) or by the routes.

#include <nlohmann/json.hpp>
#include <string>

#include "api/problem.h"
#include "api/routes.h"
#include "jobs/jobs_service.h"

namespace bulkhead::api {

Response jsonResponse(unsigned version, int status, const nlohmann::json& body);
Response problemResponse(unsigned version, int status, const nlohmann::json& problem);
// An API error as problem+json, with the status the table gives it (and Retry-After where the
// caller should come back).
Response errorAnswer(unsigned version, ApiError error, const std::string& detail);
Response methodNotAllowed(unsigned version, const std::string& detail, const char* allowed);

// The answer to a finished job, exactly as a sync caller gets it.
Answer reportAnswer(unsigned version, const core::JobReport& report);

Response submitRefusal(unsigned version, const jobs::SubmitError& error);
Response acceptedAnswer(unsigned version, const jobs::Accepted& accepted);
Answer jobAnswer(unsigned version, core::JobId id, const jobs::JobAnswer& answer);
Response cancelAnswer(unsigned version, core::JobId id, const jobs::CancelAnswer& answer);

}  // namespace bulkhead::api
