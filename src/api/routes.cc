#include "api/routes.h"

#include <charconv>

#include "api/cluster_views.h"
#include "api/dashboard.h"
#include "api/health.h"
#include "api/job_answers.h"
#include "api/metrics.h"
#include "api/outcome_views.h"
#include "api/pool_views.h"
#include "config/units.h"
#include "jobs/jobs_service.h"

namespace bulkhead::api {

namespace http = boost::beast::http;

namespace {

// One request being answered: what every handler reads.
struct Call {
  Services& services;
  Request& request;
  Respond& respond;
  core::Payload fileBody;  // the request body, when the session read it into a memfd
  std::string_view path;
  std::string_view capture;  // what the pattern's {placeholder} matched
  unsigned version() const { return request.version(); }
  std::string_view target() const { return {request.target().data(), request.target().size()}; }
};

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

// ------------------------------------------------------------------ typed commands

// POST /v1/pools/{pool}/jobs, parsed. A malformed header does not stop the parse: the service
// refuses the request, after the refusals that come first.
struct SubmitCommand {
  jobs::SubmitRequest request;
  bool async = false;  // ?wait=0
};

// A positive duration header ("5s", "250ms"); nullopt when absent; `invalid` set when malformed.
std::optional<core::Duration> durationHeader(const Request& req, const char* name,
                                             std::optional<std::string>& invalid) {
  auto it = req.find(name);
  if (it == req.end()) return std::nullopt;
  auto parsed = config::parseDuration(std::string_view(it->value().data(), it->value().size()));
  if ((!parsed || parsed->count() <= 0) && !invalid) {
    invalid = std::string(name) + " must be a positive duration such as \"5s\" or " +
              "\"250ms\", got \"" + std::string(it->value()) + "\"";
  }
  return parsed;
}

SubmitCommand parseSubmit(const Call& call) {
  Request& req = call.request;
  SubmitCommand c;
  jobs::SubmitRequest& r = c.request;
  r.pool = std::string(call.capture);
  r.timeout = durationHeader(req, "X-Bulkhead-Timeout", r.invalid);
  r.budget = durationHeader(req, "X-Bulkhead-Deadline", r.invalid);
  if (auto it = req.find("X-Bulkhead-Allow-Poison"); it != req.end()) {
    r.allowPoison = it->value() == "1" || it->value() == "true";
  }
  if (auto it = req.find("Idempotency-Key"); it != req.end()) {
    r.idempotencyKey = std::string(it->value());
  }
  c.async = queryParameter(call.target(), "wait") == "0";
  r.payload = call.fileBody ? call.fileBody : core::makePayload(std::move(req.body()));
  return c;
}

// A whole decimal number in `text`, nothing before or after it. from_chars refuses what does not
// fit (strtoull would clamp it to the type's maximum) and signs.
template <class Unsigned>
std::optional<Unsigned> parseUnsigned(std::string_view text) {
  Unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// /v1/jobs/{id}: ids are positive 64-bit integers.
std::optional<core::JobId> parseJobId(std::string_view text) {
  auto id = parseUnsigned<core::JobId>(text);
  if (!id || *id == 0) return std::nullopt;
  return id;
}

// ?wait= on GET /v1/jobs/{id}: "0" or a duration, at most 60 s; nullopt when malformed.
std::optional<core::Duration> parseWait(const std::optional<std::string>& wait) {
  if (!wait) return core::Duration(0);
  auto parsed = *wait == "0" ? std::optional<core::Duration>(core::Duration(0))
                             : config::parseDuration(*wait);
  if (!parsed) return std::nullopt;
  return std::min<core::Duration>(*parsed, std::chrono::seconds(60));
}

// ------------------------------------------------------------------ handlers

void liveness(Call& call) {
  call.respond(livenessResponse(call.version(), call.services.supervisor));
}

void readiness(Call& call) {
  call.respond(readinessResponse(call.version(), call.services.supervisor));
}

void metrics(Call& call) {
  Response res{http::status::ok, call.version()};
  res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
  res.body() = renderMetrics(call.services.supervisor, call.services.jobs, call.services.cluster);
  res.prepare_payload();
  call.respond(std::move(res));
}

void quarantine(Call& call) {
  call.respond(jsonResponse(call.version(), 200, quarantineJson(call.services.supervisor)));
}

void cluster(Call& call) {
  call.respond(jsonResponse(call.version(), 200, clusterJson(call.services.cluster)));
}

void pools(Call& call) {
  call.respond(jsonResponse(call.version(), 200, poolsJson(call.services.supervisor)));
}

void pool(Call& call) {
  auto pool = poolJson(call.services.supervisor, call.capture);
  if (!pool) {
    return call.respond(errorAnswer(call.version(), ApiError::kUnknownPool,
                                    "no pool named '" + std::string(call.capture) + "'"));
  }
  call.respond(jsonResponse(call.version(), 200, *pool));
}

// GET /v1/outcomes?since=SEQ&pool=NAME&limit=N: the recent outcomes after SEQ, oldest first.
void outcomes(Call& call) {
  const unsigned version = call.version();
  std::uint64_t since = 0;
  std::size_t limit = jobs::RecentOutcomes::kKept;
  auto number = [&](const char* name, auto& out) {
    auto text = queryParameter(call.target(), name);
    if (!text) return true;
    auto parsed = parseUnsigned<std::remove_reference_t<decltype(out)>>(*text);
    if (parsed) out = *parsed;
    return parsed.has_value();
  };
  if (!number("since", since) || !number("limit", limit)) {
    return call.respond(errorAnswer(version, ApiError::kBadRequest,
                                    "since and limit must be non-negative integers"));
  }
  const std::string pool = queryParameter(call.target(), "pool").value_or("");
  if (!pool.empty() && !call.services.supervisor.hasPool(pool)) {
    return call.respond(
        errorAnswer(version, ApiError::kUnknownPool, "no pool named '" + pool + "'"));
  }
  const jobs::JobsService& jobs = call.services.jobs;
  call.respond(jsonResponse(version, 200,
                            outcomesJson(jobs.recentOutcomes(), jobs.now(), since, pool, limit)));
}

void dashboard(Call& call) {
  auto file = dashboardFile(call.version(), call.path);
  if (!file) {
    return call.respond(errorAnswer(call.version(), ApiError::kNotFound,
                                    "no dashboard file at " + std::string(call.path)));
  }
  call.respond(std::move(*file));
}

void submit(Call& call) {
  SubmitCommand command = parseSubmit(call);
  const unsigned version = call.version();
  jobs::JobsService& jobs = call.services.jobs;
  if (command.async) {
    jobs.submitAsync(std::move(command.request), [respond = call.respond, version](auto answer) {
      if (auto* refused = std::get_if<jobs::SubmitError>(&answer)) {
        return respond(submitRefusal(version, *refused));
      }
      respond(acceptedAnswer(version, std::get<jobs::Accepted>(answer)));
    });
    return;
  }
  auto refused = jobs.submit(std::move(command.request),
                             [respond = call.respond, version](const core::JobReport& report) {
                               respond(reportAnswer(version, report));
                             });
  if (refused) call.respond(submitRefusal(version, *refused));
}

// /v1/jobs/{id}: the id is checked first, then whether there are async jobs at all, then the
// method (with its own 405 wording), as callers have always seen.
void job(Call& call) {
  const unsigned version = call.version();
  auto id = parseJobId(call.capture);
  if (!id) {
    return call.respond(
        errorAnswer(version, ApiError::kBadRequest, "job ids are positive integers"));
  }
  jobs::JobsService& jobs = call.services.jobs;
  if (!jobs.journaled()) {
    return call.respond(errorAnswer(version, ApiError::kUnknownJob, "there is no journal"));
  }
  const auto method = call.request.method();
  if (method == http::verb::delete_) {
    return jobs.cancel(*id, [respond = call.respond, version, id = *id](jobs::CancelAnswer a) {
      respond(cancelAnswer(version, id, a));
    });
  }
  if (method != http::verb::get) {
    return call.respond(methodNotAllowed(version, "allowed: GET, DELETE", "GET, DELETE"));
  }
  auto waitText = queryParameter(call.target(), "wait");
  auto wait = parseWait(waitText);
  if (!wait) {
    return call.respond(errorAnswer(version, ApiError::kBadRequest,
                                    "wait must be a duration such as 10s, got " + *waitText));
  }
  jobs.get(*id, *wait, [respond = call.respond, version, id = *id](jobs::JobAnswer answer) {
    respond(jobAnswer(version, id, answer));
  });
}

void noSuchResource(Call& call) {
  call.respond(errorAnswer(call.version(), ApiError::kNotFound, "no such resource"));
}

// ------------------------------------------------------------------ the table

enum Methods : unsigned { kGet = 1, kHead = 2, kPost = 4, kOther = 8, kAny = 15 };

unsigned methodBit(http::verb verb) {
  if (verb == http::verb::get) return kGet;
  if (verb == http::verb::head) return kHead;
  if (verb == http::verb::post) return kPost;
  return kOther;
}

constexpr std::string_view kSubmitPattern = "/v1/pools/{pool}/jobs";

struct Route {
  unsigned methods;
  const char* allow;  // the Allow header of a 405
  // Literal text with at most one placeholder: {name} is one non-empty path segment, {name+}
  // is any non-empty text (slashes included), {name*} is any text.
  std::string_view pattern;
  void (*handle)(Call&);
};

// First match wins.
constexpr Route kRoutes[] = {
    {kGet | kHead, "GET", "/livez", liveness},
    {kGet | kHead, "GET", "/healthz", liveness},
    {kGet | kHead, "GET", "/readyz", readiness},
    {kAny, "", "/v1/jobs/{id*}", job},
    {kGet, "GET", "/metrics", metrics},
    {kGet, "GET", "/v1/quarantine", quarantine},
    {kGet, "GET", "/v1/cluster", cluster},
    {kGet, "GET", "/v1/outcomes", outcomes},
    {kGet, "GET", "/", dashboard},
    {kGet, "GET", "/ui", dashboard},
    {kGet, "GET", "/ui/{file*}", dashboard},
    {kGet, "GET", "/v1/pools", pools},
    {kGet, "GET", "/v1/pools/{pool}", pool},
    {kPost, "POST", kSubmitPattern, submit},
    {kAny, "", "/v1/pools/{path+}/jobs", noSuchResource},
};

std::optional<std::string_view> match(std::string_view pattern, std::string_view path) {
  const auto open = pattern.find('{');
  if (open == std::string_view::npos) {
    return pattern == path ? std::optional<std::string_view>("") : std::nullopt;
  }
  const auto close = pattern.find('}', open);
  const std::string_view prefix = pattern.substr(0, open);
  const std::string_view suffix = pattern.substr(close + 1);
  const char kind = pattern[close - 1];
  if (path.size() < prefix.size() + suffix.size() || path.substr(0, prefix.size()) != prefix ||
      path.substr(path.size() - suffix.size()) != suffix) {
    return std::nullopt;
  }
  std::string_view capture =
      path.substr(prefix.size(), path.size() - prefix.size() - suffix.size());
  if (kind == '*') return capture;
  if (capture.empty()) return std::nullopt;
  if (kind == '+') return capture;
  if (capture.find('/') != std::string_view::npos) return std::nullopt;
  return capture;
}

}  // namespace

std::optional<std::string_view> submittedPool(std::string_view target) {
  return match(kSubmitPattern, target.substr(0, target.find('?')));
}

void route(Services& services, Request& req, Respond respond, core::Payload fileBody) {
  std::string_view target(req.target().data(), req.target().size());
  std::string_view path = target.substr(0, target.find('?'));
  for (const Route& r : kRoutes) {
    auto capture = match(r.pattern, path);
    if (!capture) continue;
    if (!(r.methods & methodBit(req.method()))) {
      return respond(methodNotAllowed(req.version(),
                                      std::string(req.method_string()) + " is not allowed on " +
                                          std::string(path) + " (allowed: " + r.allow + ")",
                                      r.allow));
    }
    Call call{services, req, respond, std::move(fileBody), path, *capture};
    return r.handle(call);
  }
  respond(errorAnswer(req.version(), ApiError::kNotFound, "no resource at " + std::string(path)));
}

}  // namespace bulkhead::api
