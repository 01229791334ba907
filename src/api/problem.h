#pragma once
// The one table that maps what can end a request (a job's outcome, or an error of the API itself)
// to its HTTP status, problem type and title (RFC 9457). Mirrored in docs/api.md and in the Python
// client's exception classes. Everything that answers with a problem reads its status here.
//
// Owns: that table and the problem+json documents built from it. It may not decide when an error
// happens (the jobs service and the routes do).

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "core/outcome.h"

namespace bulkhead::api {

// Errors of the API that are not job outcomes.
enum class ApiError {
  kBadRequest,
  kHeadersTooLarge,
  kNotFound,
  kUnknownPool,
  kUnknownJob,
  kMethodNotAllowed,
  kRequestTimeout,
  kAlreadyFinished,
  kPayloadTooLarge,
  kDuplicateId,
  kShuttingDown,
  kTooManyConnections,
  kJournalUnavailable,
  kClusterUnavailable,  // [cluster]: the job needs another node and Redis is away
};

struct StatusRow {
  std::string_view name;  // the problem's "error" (API errors) or "outcome" (job outcomes)
  int status;
  std::string_view title;
};

const StatusRow& statusRow(core::Outcome outcome);
const StatusRow& statusRow(ApiError error);

int httpStatusFor(const core::JobReport& report);
nlohmann::json problemFor(const core::JobReport& report);
nlohmann::json attemptJson(const core::AttemptRecord& attempt);
// A problem that is not a job outcome (bad request, unknown pool, ...).
nlohmann::json apiProblem(ApiError error, const std::string& detail);

}  // namespace bulkhead::api
