#include "api/problem.h"

#include "api/pool_views.h"
#include "core/signal_names.h"

namespace bulkhead::api {

using nlohmann::json;

namespace {

constexpr std::string_view kProblemTypes = "https://bulkhead.dev/problems/";

// Indexed by core::Outcome. An overloaded job whose pool's queue was full answers 429 instead
// (the caller should slow down; a queue wait past the deadline is our capacity): httpStatusFor.
constexpr StatusRow kOutcomes[] = {
    {"ok", 200, "ok"},
    {"handler_error", 422, "the handler raised an exception"},
    {"crashed", 502, "worker crashed"},
    {"timed_out", 504, "job timed out"},
    {"hung", 504, "worker hung"},
    {"oom_killed", 502, "worker killed at its memory limit"},
    {"resource_exhausted", 502, "worker ran out of a limited resource"},
    {"poison", 422, "job quarantined as poison"},
    {"overloaded", 503, "pool overloaded"},
    {"unavailable", 503, "pool unavailable"},
    {"cancelled", 409, "job cancelled"},
};
static_assert(std::size(kOutcomes) == std::size(core::kAllOutcomes));

// Indexed by ApiError; an API error's title is its name. Headers too large answer 431 with the
// error "bad_request", as they always have.
constexpr StatusRow kApiErrors[] = {
    {"bad_request", 400, "bad_request"},
    {"bad_request", 431, "bad_request"},
    {"not_found", 404, "not_found"},
    {"unknown_pool", 404, "unknown_pool"},
    {"unknown_job", 404, "unknown_job"},
    {"method_not_allowed", 405, "method_not_allowed"},
    {"request_timeout", 408, "request_timeout"},
    {"already_finished", 409, "already_finished"},
    {"payload_too_large", 413, "payload_too_large"},
    {"duplicate_id", 500, "duplicate_id"},
    {"shutting_down", 503, "shutting_down"},
    {"too_many_connections", 503, "too_many_connections"},
    {"journal_unavailable", 503, "journal_unavailable"},
    {"cluster_unavailable", 503, "cluster_unavailable"},
};
static_assert(std::size(kApiErrors) == static_cast<std::size_t>(ApiError::kClusterUnavailable) + 1);

}  // namespace

const StatusRow& statusRow(core::Outcome outcome) {
  return kOutcomes[static_cast<std::size_t>(outcome)];
}

const StatusRow& statusRow(ApiError error) { return kApiErrors[static_cast<std::size_t>(error)]; }

int httpStatusFor(const core::JobReport& report) {
  if (report.outcome == core::Outcome::kOverloaded && report.queueFull) return 429;
  return statusRow(report.outcome).status;
}

json attemptJson(const core::AttemptRecord& a) {
  json j = {{"attempt", a.number},
            {"worker", a.worker},
            {"pid", a.pid},
            {"outcome", std::string(core::outcomeName(a.outcome))},
            {"run_ms", a.runMs}};
  if (!a.cause.empty()) j["cause"] = a.cause;
  const bool exited = a.exit.signal || a.exit.exitCode;
  if (exited) {
    j["signal"] = a.exit.signal ? json(core::signalName(*a.exit.signal)) : json(nullptr);
    j["signal_number"] = a.exit.signal ? json(*a.exit.signal) : json(nullptr);
    j["exit_code"] = a.exit.exitCode ? json(*a.exit.exitCode) : json(nullptr);
    j["core_dumped"] = a.exit.coreDumped;
  }
  if (exited || !a.exit.stderrTail.empty() || !a.exit.stacks.empty()) {
    // Worker output is arbitrary bytes; JSON needs valid UTF-8, so bad sequences are replaced.
    auto text = [](const std::string& s) {
      return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
    };
    j["stderr_tail"] = json::parse(text(a.exit.stderrTail));
    j["stderr_dropped_bytes"] = a.exit.stderrDroppedBytes;
    j["stdout_tail"] = json::parse(text(a.exit.stdoutTail));
    j["stacks"] = json::parse(text(a.exit.stacks));
  }
  if (!a.limit.empty()) {
    j["limit"] = a.limit;
    if (a.limitValue) j["limit_value"] = a.limitValue;
  }
  if (a.exit.oomKilled || a.exit.memoryPeakBytes) j["memory_peak_bytes"] = a.exit.memoryPeakBytes;
  if (a.exit.pidsMaxEvents) j["pids_max_events"] = a.exit.pidsMaxEvents;
  if (a.lastSample) {
    j["last_sample"] = sampleJson(*a.lastSample);
  }
  if (a.error) {
    j["error"] = {
        {"type", a.error->type}, {"message", a.error->message}, {"traceback", a.error->traceback}};
  }
  return j;
}

json problemFor(const core::JobReport& r) {
  const std::string outcome(core::outcomeName(r.outcome));
  json attempts = json::array();
  for (const auto& a : r.attempts) attempts.push_back(attemptJson(a));
  json j = {{"type", std::string(kProblemTypes) + outcome},
            {"title", std::string(statusRow(r.outcome).title)},
            {"status", httpStatusFor(r)},
            {"detail", r.detail},
            {"outcome", outcome},
            {"job", std::to_string(r.jobId)},
            {"pool", r.pool},
            {"attempts", std::move(attempts)},
            {"timings", {{"queue_ms", r.queueMs}, {"run_ms", r.runMs}, {"total_ms", r.totalMs}}}};
  if (r.retryAfterSeconds) j["retry_after_s"] = *r.retryAfterSeconds;
  if (r.lastStartFailure) j["last_start_failure"] = attemptJson(*r.lastStartFailure);
  if (r.breakerOpen) j["breaker"] = "open";
  if (!r.fingerprint.empty()) j["fingerprint"] = r.fingerprint;
  if (r.outcome != core::Outcome::kPoison) j["quarantined"] = r.quarantined;
  if (!r.stage.empty()) j["stage"] = r.stage;
  if (!r.fallbackFrom.empty()) j["fallback_from"] = r.fallbackFrom;
  if (!r.node.empty()) j["node"] = r.node;
  if (r.runs != 0) j["runs"] = r.runs;
  return j;
}

json apiProblem(ApiError error, const std::string& detail) {
  const StatusRow& row = statusRow(error);
  return {{"type", std::string(kProblemTypes) + std::string(row.name)},
          {"title", std::string(row.title)},
          {"status", row.status},
          {"error", std::string(row.name)},
          {"detail", detail}};
}

}  // namespace bulkhead::api
