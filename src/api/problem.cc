#include "api/problem.h"

#include "core/signal_names.h"

namespace bulkhead::api {

using nlohmann::json;

int httpStatusFor(const core::JobReport& report) {
  switch (report.outcome) {
    case core::Outcome::kOk:
      return 200;
    case core::Outcome::kHandlerError:
      return 422;
    case core::Outcome::kPoison:
      return 422;
    case core::Outcome::kCrashed:
      return 502;
    case core::Outcome::kOomKilled:
      return 502;
    case core::Outcome::kResourceExhausted:
      return 502;
    case core::Outcome::kTimedOut:
      return 504;
    case core::Outcome::kHung:
      return 504;
    case core::Outcome::kOverloaded:
      // A full queue asks the caller to slow down; a queue wait past the deadline is our capacity.
      return report.queueFull ? 429 : 503;
    case core::Outcome::kUnavailable:
      return 503;
    case core::Outcome::kCancelled:
      return 409;
  }
  return 500;
}

std::string titleFor(core::Outcome outcome) {
  switch (outcome) {
    case core::Outcome::kOk:
      return "ok";
    case core::Outcome::kHandlerError:
      return "the handler raised an exception";
    case core::Outcome::kCrashed:
      return "worker crashed";
    case core::Outcome::kTimedOut:
      return "job timed out";
    case core::Outcome::kHung:
      return "worker hung";
    case core::Outcome::kOomKilled:
      return "worker killed at its memory limit";
    case core::Outcome::kResourceExhausted:
      return "worker ran out of a limited resource";
    case core::Outcome::kPoison:
      return "job quarantined as poison";
    case core::Outcome::kOverloaded:
      return "pool overloaded";
    case core::Outcome::kUnavailable:
      return "pool unavailable";
    case core::Outcome::kCancelled:
      return "job cancelled";
  }
  return "unknown";
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
    j["last_sample"] = {
        {"rss_bytes", a.lastSample->rssBytes},
        {"threads", a.lastSample->threads},
        {"maps", a.lastSample->maps >= 0 ? json(a.lastSample->maps) : json(nullptr)},
        {"fds", a.lastSample->fds},
        {"cpu_seconds", a.lastSample->cpuSeconds}};
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
  json j = {{"type", "https://bulkhead.dev/problems/" + outcome},
            {"title", titleFor(r.outcome)},
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
  return j;
}

json apiProblem(int status, const std::string& error, const std::string& detail) {
  return {{"type", "https://bulkhead.dev/problems/" + error},
          {"title", error},
          {"status", status},
          {"error", error},
          {"detail", detail}};
}

}  // namespace bulkhead::api
