#include "api/job_answers.h"

#include <cstdio>

namespace bulkhead::api {

namespace http = boost::beast::http;
using nlohmann::json;

namespace {

std::string formatMs(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", ms);
  return buf;
}

Response lookupRefusal(unsigned version, core::JobId id, jobs::LookupError error) {
  switch (error) {
    case jobs::LookupError::kUnknownJob:
      return errorAnswer(version, ApiError::kUnknownJob, "no job " + std::to_string(id));
    case jobs::LookupError::kJournalUnavailable:
      return errorAnswer(version, ApiError::kJournalUnavailable,
                         "the job journal cannot be written (see the daemon's log); async jobs "
                         "are refused until it can, sync jobs still run");
    case jobs::LookupError::kClusterUnavailable:
      return errorAnswer(version, ApiError::kClusterUnavailable,
                         "job " + std::to_string(id) +
                             " was accepted by another node, and Redis is not reachable to ask");
  }
  return errorAnswer(version, ApiError::kUnknownJob, "no job " + std::to_string(id));
}

}  // namespace

Response jsonResponse(unsigned version, int status, const json& body) {
  Response res{static_cast<http::status>(status), version};
  res.set(http::field::content_type, "application/json");
  res.body() = body.dump();
  res.prepare_payload();
  return res;
}

Response problemResponse(unsigned version, int status, const json& problem) {
  Response res{static_cast<http::status>(status), version};
  res.set(http::field::content_type, "application/problem+json");
  res.body() = problem.dump(-1, ' ', false, json::error_handler_t::replace);
  res.prepare_payload();
  return res;
}

Response errorAnswer(unsigned version, ApiError error, const std::string& detail) {
  Response res = problemResponse(version, statusRow(error).status, apiProblem(error, detail));
  switch (error) {
    case ApiError::kShuttingDown:
    case ApiError::kTooManyConnections:
    case ApiError::kClusterUnavailable:
      res.set(http::field::retry_after, "1");
      break;
    case ApiError::kJournalUnavailable:
      res.set(http::field::retry_after, "5");
      break;
    case ApiError::kBadRequest:
    case ApiError::kHeadersTooLarge:
    case ApiError::kNotFound:
    case ApiError::kUnknownPool:
    case ApiError::kUnknownJob:
    case ApiError::kMethodNotAllowed:
    case ApiError::kRequestTimeout:
    case ApiError::kAlreadyFinished:
    case ApiError::kPayloadTooLarge:
    case ApiError::kDuplicateId:
      break;
  }
  return res;
}

Response methodNotAllowed(unsigned version, const std::string& detail, const char* allowed) {
  Response res = errorAnswer(version, ApiError::kMethodNotAllowed, detail);
  res.set(http::field::allow, allowed);
  return res;
}

namespace {
// With [cluster]: which node ran the job, and how often the cluster handed it out.
void setClusterHeaders(Response& res, const core::JobReport& r) {
  if (!r.node.empty()) res.set("X-Bulkhead-Node", r.node);
  if (r.runs != 0) res.set("X-Bulkhead-Runs", std::to_string(r.runs));
}
}  // namespace

Answer reportAnswer(unsigned version, const core::JobReport& r) {
  if (r.outcome != core::Outcome::kOk) {
    Response res = problemResponse(version, httpStatusFor(r), problemFor(r));
    res.set("X-Bulkhead-Outcome", std::string(core::outcomeName(r.outcome)));
    res.set("X-Bulkhead-Job", std::to_string(r.jobId));
    res.set("X-Bulkhead-Attempts", std::to_string(r.attempts.size()));
    if (r.quarantined) res.set("X-Bulkhead-Quarantined", "1");
    setClusterHeaders(res, r);
    if (r.retryAfterSeconds) {
      res.set(http::field::retry_after, std::to_string(static_cast<int>(*r.retryAfterSeconds)));
    }
    return res;
  }
  Response res{http::status::ok, version};
  switch (r.resultKind) {
    case core::ResultKind::kBytes:
      res.set(http::field::content_type, "application/octet-stream");
      break;
    case core::ResultKind::kJson:
      res.set(http::field::content_type, "application/json");
      break;
    case core::ResultKind::kText:
      res.set(http::field::content_type, "text/plain; charset=utf-8");
      break;
  }
  res.set("X-Bulkhead-Outcome", "ok");
  res.set("X-Bulkhead-Pool", r.pool);
  if (!r.fallbackFrom.empty()) res.set("X-Bulkhead-Fallback-From", r.fallbackFrom.front());
  res.set("X-Bulkhead-Job", std::to_string(r.jobId));
  res.set("X-Bulkhead-Attempts", std::to_string(r.attempts.size()));
  res.set("X-Bulkhead-Worker", r.worker);
  res.set("X-Bulkhead-Queue-Ms", formatMs(r.queueMs));
  res.set("X-Bulkhead-Run-Ms", formatMs(r.runMs));
  res.set("X-Bulkhead-Total-Ms", formatMs(r.totalMs));
  setClusterHeaders(res, r);
  if (r.result && r.result->inFile()) {
    res.content_length(r.result->size());
    return Answer(std::move(res), r.result);
  }
  if (r.result) res.body() = r.result->bytes();
  res.prepare_payload();
  return res;
}

Response submitRefusal(unsigned version, const jobs::SubmitError& e) {
  using Kind = jobs::SubmitError::Kind;
  switch (e.kind) {
    case Kind::kShuttingDown:
      return errorAnswer(version, ApiError::kShuttingDown, "the supervisor is shutting down");
    case Kind::kInvalid:
      return errorAnswer(version, ApiError::kBadRequest, e.detail);
    case Kind::kUnknownPool:
      return errorAnswer(version, ApiError::kUnknownPool, "no pool named '" + e.pool + "'");
    case Kind::kPayloadTooLarge:
      return errorAnswer(version, ApiError::kPayloadTooLarge,
                         "payload of " + std::to_string(e.payloadBytes) +
                             " bytes exceeds max_payload of pool '" + e.pool + "' (" +
                             std::to_string(e.maxPayload) + " bytes)");
    case Kind::kAsyncNeedsJournal:
      return errorAnswer(version, ApiError::kBadRequest,
                         "async jobs need a journal ([server] journal)");
    case Kind::kJournalUnavailable:
      return lookupRefusal(version, 0, jobs::LookupError::kJournalUnavailable);
    case Kind::kClusterUnavailable:
      return errorAnswer(
          version, ApiError::kClusterUnavailable,
          "pool '" + e.pool + "' runs on other nodes and Redis is not reachable: " + e.detail);
    case Kind::kKeyUnchecked:
      return errorAnswer(version, ApiError::kClusterUnavailable,
                         "an Idempotency-Key is checked across the cluster, and Redis is not "
                         "reachable: the job was not accepted (retry, or submit without the key)");
    case Kind::kDuplicateId:
      return errorAnswer(version, ApiError::kDuplicateId,
                         "the supervisor already holds a job with the id chosen for this one "
                         "(a bug: please report it)");
  }
  return errorAnswer(version, ApiError::kBadRequest, e.detail);
}

Response acceptedAnswer(unsigned version, const jobs::Accepted& a) {
  const std::string id = std::to_string(a.id);
  Response res =
      jsonResponse(version, 202,
                   {{"job", id}, {"pool", a.pool}, {"duplicate", a.duplicate}, {"state", a.state}});
  res.set(http::field::location, "/v1/jobs/" + id);
  res.set("X-Bulkhead-Job", id);
  return res;
}

Answer jobAnswer(unsigned version, core::JobId id, const jobs::JobAnswer& answer) {
  if (const auto* finished = std::get_if<jobs::Finished>(&answer)) {
    Answer res = reportAnswer(version, finished->report);
    // The journal counts this node's submissions, the cluster its deliveries: the larger stands.
    if (finished->runs) {
      const std::uint64_t runs = std::max<std::uint64_t>(
          static_cast<std::uint64_t>(*finished->runs), finished->report.runs);
      res.response.set("X-Bulkhead-Runs", std::to_string(runs));
    }
    return res;
  }
  if (const auto* pending = std::get_if<jobs::Pending>(&answer)) {
    Response res =
        jsonResponse(version, 202, {{"job", std::to_string(id)}, {"state", pending->state}});
    res.set("X-Bulkhead-Job", std::to_string(id));
    return res;
  }
  return lookupRefusal(version, id, std::get<jobs::LookupError>(answer));
}

Response cancelAnswer(unsigned version, core::JobId id, const jobs::CancelAnswer& answer) {
  if (std::holds_alternative<jobs::Cancelling>(answer)) {
    return jsonResponse(version, 202, {{"job", std::to_string(id)}, {"state", "cancelling"}});
  }
  if (const auto* done = std::get_if<jobs::AlreadyFinished>(&answer)) {
    return errorAnswer(version, ApiError::kAlreadyFinished,
                       "job " + std::to_string(id) + " already ended as " + done->outcome);
  }
  return lookupRefusal(version, id, std::get<jobs::LookupError>(answer));
}

}  // namespace bulkhead::api
