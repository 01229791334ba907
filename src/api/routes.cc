#include "api/routes.h"

#include <charconv>
#include <cstdio>
#include <cstdlib>

#include "api/async_jobs.h"
#include "api/health.h"
#include "api/metrics.h"
#include "api/pool_views.h"
#include "api/problem.h"
#include "config/units.h"

namespace bulkhead::api {

namespace http = boost::beast::http;
using nlohmann::json;

namespace {

std::string formatMs(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", ms);
  return buf;
}

}  // namespace

Response responseFor(unsigned version, const core::JobReport& r) {
  const int status = httpStatusFor(r);
  if (r.outcome != core::Outcome::kOk) {
    Response res = problemResponse(version, status, problemFor(r));
    res.set("X-Bulkhead-Outcome", std::string(core::outcomeName(r.outcome)));
    res.set("X-Bulkhead-Job", std::to_string(r.jobId));
    res.set("X-Bulkhead-Attempts", std::to_string(r.attempts.size()));
    if (r.quarantined) res.set("X-Bulkhead-Quarantined", "1");
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
  if (r.result) res.body() = *r.result;
  res.prepare_payload();
  return res;
}

namespace {

// "?wait=0" style parameters.
std::optional<std::string> queryParameter(std::string_view target, std::string_view name) {
  auto q = target.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view query = target.substr(q + 1);
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    auto eq = pair.find('=');
    if (pair.substr(0, eq) == name) {
      return std::string(eq == std::string_view::npos ? "" : pair.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

// A positive duration header ("5s", "250ms"); nullopt when absent; a 400 answer when malformed.
std::optional<core::Duration> durationHeader(const Request& req, const char* name,
                                             std::optional<Response>& badRequest) {
  auto it = req.find(name);
  if (it == req.end()) return std::nullopt;
  auto parsed = config::parseDuration(std::string_view(it->value().data(), it->value().size()));
  if (!parsed || parsed->count() <= 0) {
    badRequest = problemResponse(
        req.version(), 400,
        apiProblem(400, "bad_request",
                   std::string(name) + " must be a positive duration such as \"5s\" or " +
                       "\"250ms\", got \"" + std::string(it->value()) + "\""));
  }
  return parsed;
}

void submitJob(Services& services, const std::string& pool, Request& req, Respond respond) {
  runtime::Supervisor& supervisor = services.supervisor;
  const unsigned version = req.version();
  std::optional<Response> badRequest;
  runtime::JobOptions options;
  options.timeout = durationHeader(req, "X-Bulkhead-Timeout", badRequest);
  // The caller's whole budget starts now, when the request has been read.
  auto budget = durationHeader(req, "X-Bulkhead-Deadline", badRequest);
  if (badRequest) return respond(std::move(*badRequest));
  if (budget) options.deadline = core::fromSteady(std::chrono::steady_clock::now()) + *budget;
  if (!supervisor.hasPool(pool)) {
    respond(problemResponse(version, 404,
                            apiProblem(404, "unknown_pool", "no pool named '" + pool + "'")));
    return;
  }
  if (req.body().size() > supervisor.maxPayload(pool)) {
    respond(
        problemResponse(version, 413,
                        apiProblem(413, "payload_too_large",
                                   "payload of " + std::to_string(req.body().size()) +
                                       " bytes exceeds max_payload of pool '" + pool + "' (" +
                                       std::to_string(supervisor.maxPayload(pool)) + " bytes)")));
    return;
  }
  if (auto it = req.find("X-Bulkhead-Allow-Poison"); it != req.end()) {
    options.allowPoison = it->value() == "1" || it->value() == "true";
  }
  auto payload = std::make_shared<const std::string>(std::move(req.body()));
  std::string_view target(req.target().data(), req.target().size());
  if (queryParameter(target, "wait") == "0") {
    if (!services.jobs) {
      return respond(problemResponse(
          version, 400,
          apiProblem(400, "bad_request", "async jobs need a journal ([server] journal)")));
    }
    std::string key;
    if (auto it = req.find("Idempotency-Key"); it != req.end()) key = std::string(it->value());
    options.async = true;
    return services.jobs->submit(version, pool, std::move(payload), options, key, respond);
  }
  AsyncJobs* jobs = services.jobs;
  supervisor.submit(pool, std::move(payload), options,
                    [respond, version, jobs](const core::JobReport& report) {
                      if (jobs) jobs->recordSync(report);
                      respond(responseFor(version, report));
                    });
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

namespace {

void jobResource(Services& services, Request& req, std::string_view path, Respond respond) {
  const unsigned version = req.version();
  std::string_view idText = path.substr(std::string_view("/v1/jobs/").size());
  std::uint64_t id = 0;
  // from_chars refuses what does not fit in 64 bits (strtoull would clamp it to 2^64-1).
  auto [end, ec] = std::from_chars(idText.data(), idText.data() + idText.size(), id);
  if (idText.empty() || ec != std::errc() || end != idText.data() + idText.size() || id == 0) {
    return respond(problemResponse(
        version, 400, apiProblem(400, "bad_request", "job ids are positive integers")));
  }
  if (!services.jobs) {
    return respond(
        problemResponse(version, 404, apiProblem(404, "unknown_job", "there is no journal")));
  }
  if (req.method() == http::verb::delete_) return services.jobs->cancel(version, id, respond);
  if (req.method() != http::verb::get) {
    Response res = problemResponse(version, 405,
                                   apiProblem(405, "method_not_allowed", "allowed: GET, DELETE"));
    res.set(http::field::allow, "GET, DELETE");
    return respond(std::move(res));
  }
  core::Duration wait{0};
  std::string_view target(req.target().data(), req.target().size());
  if (auto w = queryParameter(target, "wait")) {
    auto parsed =
        *w == "0" ? std::optional<core::Duration>(core::Duration(0)) : config::parseDuration(*w);
    if (!parsed) {
      return respond(problemResponse(
          version, 400,
          apiProblem(400, "bad_request", "wait must be a duration such as 10s, got " + *w)));
    }
    wait = std::min<core::Duration>(*parsed, std::chrono::seconds(60));
  }
  services.jobs->get(version, id, wait, std::move(respond));
}

}  // namespace

void route(Services& services, Request& req, Respond respond) {
  runtime::Supervisor& supervisor = services.supervisor;
  const unsigned version = req.version();
  std::string_view target(req.target().data(), req.target().size());
  std::string_view path = target.substr(0, target.find('?'));
  const auto method = req.method();

  auto methodNotAllowed = [&](const char* allowed) {
    Response res =
        problemResponse(version, 405,
                        apiProblem(405, "method_not_allowed",
                                   std::string(req.method_string()) + " is not allowed on " +
                                       std::string(path) + " (allowed: " + allowed + ")"));
    res.set(http::field::allow, allowed);
    respond(std::move(res));
  };

  if (path == "/livez" || path == "/healthz" || path == "/readyz") {
    if (method != http::verb::get && method != http::verb::head) return methodNotAllowed("GET");
    if (path == "/readyz") return respond(readinessResponse(version, supervisor));
    return respond(livenessResponse(version, supervisor));
  }
  if (path.rfind("/v1/jobs/", 0) == 0) return jobResource(services, req, path, std::move(respond));
  if (path == "/metrics") {
    if (method != http::verb::get) return methodNotAllowed("GET");
    Response res{http::status::ok, version};
    res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    res.body() = renderMetrics(supervisor, services.jobs);
    res.prepare_payload();
    return respond(std::move(res));
  }
  if (path == "/v1/quarantine") {
    if (method != http::verb::get) return methodNotAllowed("GET");
    return respond(jsonResponse(version, 200, quarantineJson(supervisor)));
  }
  if (path == "/v1/pools") {
    if (method != http::verb::get) return methodNotAllowed("GET");
    return respond(jsonResponse(version, 200, poolsJson(supervisor)));
  }
  constexpr std::string_view kPools = "/v1/pools/";
  if (path.size() > kPools.size() && path.substr(0, kPools.size()) == kPools &&
      path.find('/', kPools.size()) == std::string_view::npos) {
    if (method != http::verb::get) return methodNotAllowed("GET");
    auto pool = poolJson(supervisor, path.substr(kPools.size()));
    if (!pool) {
      return respond(problemResponse(
          version, 404,
          apiProblem(404, "unknown_pool",
                     "no pool named '" + std::string(path.substr(kPools.size())) + "'")));
    }
    return respond(jsonResponse(version, 200, *pool));
  }
  constexpr std::string_view kJobs = "/jobs";
  if (path.size() > kPools.size() + kJobs.size() && path.substr(0, kPools.size()) == kPools &&
      path.substr(path.size() - kJobs.size()) == kJobs) {
    std::string pool(path.substr(kPools.size(), path.size() - kPools.size() - kJobs.size()));
    if (pool.find('/') != std::string::npos) {
      return respond(
          problemResponse(version, 404, apiProblem(404, "not_found", "no such resource")));
    }
    if (method != http::verb::post) return methodNotAllowed("POST");
    if (supervisor.shuttingDown()) {
      Response res = problemResponse(
          version, 503, apiProblem(503, "shutting_down", "the supervisor is shutting down"));
      res.set(http::field::retry_after, "1");
      return respond(std::move(res));
    }
    return submitJob(services, pool, req, std::move(respond));
  }
  respond(problemResponse(version, 404,
                          apiProblem(404, "not_found", "no resource at " + std::string(path))));
}

}  // namespace bulkhead::api
