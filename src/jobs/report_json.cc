#include "jobs/report_json.h"

#include <cstdlib>

#include "os/memfd.h"

namespace bulkhead::jobs {

using nlohmann::json;

namespace {

constexpr std::string_view kResultKinds[] = {"bytes", "json", "text"};

// Worker output and details are arbitrary bytes; JSON text must be UTF-8. Bad sequences become
// U+FFFD here, exactly as the API does when it renders them, so the answer does not change.
std::string utf8(const std::string& s) {
  return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
}

json sampleToJson(const core::ResourceSample& s) {
  return {{"rss_bytes", s.rssBytes},
          {"threads", s.threads},
          {"maps", s.maps >= 0 ? json(s.maps) : json(nullptr)},
          {"fds", s.fds},
          {"cpu_seconds", s.cpuSeconds},
          {"pids_max_events", s.pidsMaxEvents},
          {"gpu_memory_bytes", s.gpuMemoryBytes >= 0 ? json(s.gpuMemoryBytes) : json(nullptr)}};
}

core::ResourceSample sampleFromJson(const json& j) {
  core::ResourceSample s;
  s.rssBytes = j.value("rss_bytes", std::uint64_t{0});
  s.threads = j.value("threads", 0);
  s.maps = j.contains("maps") && j["maps"].is_number() ? j["maps"].get<int>() : -1;
  s.fds = j.value("fds", 0);
  s.cpuSeconds = j.value("cpu_seconds", 0.0);
  s.pidsMaxEvents = j.value("pids_max_events", std::uint64_t{0});
  s.gpuMemoryBytes = j.contains("gpu_memory_bytes") && j["gpu_memory_bytes"].is_number()
                         ? j["gpu_memory_bytes"].get<std::int64_t>()
                         : -1;
  return s;
}

json attemptToJson(const core::AttemptRecord& a) {
  const core::ExitEvidence& e = a.exit;
  json j = {{"attempt", a.number},
            {"worker", a.worker},
            {"pid", a.pid},
            {"outcome", std::string(core::outcomeName(a.outcome))},
            {"cause", a.cause},
            {"run_ms", a.runMs},
            {"limit", a.limit},
            {"limit_value", a.limitValue},
            {"signal_number", e.signal ? json(*e.signal) : json(nullptr)},
            {"exit_code", e.exitCode ? json(*e.exitCode) : json(nullptr)},
            {"core_dumped", e.coreDumped},
            {"stderr_tail", json::parse(utf8(e.stderrTail))},
            {"stderr_dropped_bytes", e.stderrDroppedBytes},
            {"stdout_tail", json::parse(utf8(e.stdoutTail))},
            {"stacks", json::parse(utf8(e.stacks))},
            {"oom_killed", e.oomKilled},
            {"memory_peak_bytes", e.memoryPeakBytes},
            {"pids_max_events", e.pidsMaxEvents}};
  if (a.lastSample) j["last_sample"] = sampleToJson(*a.lastSample);
  if (a.error) {
    j["error"] = {{"type", json::parse(utf8(a.error->type))},
                  {"message", json::parse(utf8(a.error->message))},
                  {"traceback", json::parse(utf8(a.error->traceback))}};
  }
  return j;
}

std::optional<int> optionalInt(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  return j[key].get<int>();
}

// Also reads the attempts of a problem+json document (schema-1 journals), whose fields are a
// subset of these: what it leaves out has its default.
core::AttemptRecord attemptFromJson(const json& j) {
  core::AttemptRecord a;
  a.number = j.value("attempt", 0);
  a.worker = j.value("worker", "");
  a.pid = j.value("pid", 0);
  a.outcome = outcomeFromName(j.value("outcome", "ok")).value_or(core::Outcome::kOk);
  a.cause = j.value("cause", "");
  a.runMs = j.value("run_ms", 0.0);
  a.limit = j.value("limit", "");
  a.limitValue = j.value("limit_value", std::uint64_t{0});
  core::ExitEvidence& e = a.exit;
  e.signal = optionalInt(j, "signal_number");
  e.exitCode = optionalInt(j, "exit_code");
  e.coreDumped = j.value("core_dumped", false);
  e.stderrTail = j.value("stderr_tail", "");
  e.stderrDroppedBytes = j.value("stderr_dropped_bytes", std::uint64_t{0});
  e.stdoutTail = j.value("stdout_tail", "");
  e.stacks = j.value("stacks", "");
  e.memoryPeakBytes = j.value("memory_peak_bytes", std::uint64_t{0});
  // A problem document shows memory_peak_bytes when the worker was OOM-killed or has a peak:
  // a peak of 0 there can only mean the former.
  e.oomKilled = j.value("oom_killed", j.contains("memory_peak_bytes") && e.memoryPeakBytes == 0);
  e.pidsMaxEvents = j.value("pids_max_events", std::uint64_t{0});
  if (j.contains("last_sample")) a.lastSample = sampleFromJson(j["last_sample"]);
  if (j.contains("error")) {
    const json& err = j["error"];
    a.error = core::ErrorInfo{err.value("type", ""), err.value("message", ""),
                              err.value("traceback", "")};
  }
  return a;
}

std::optional<core::JobReport> reportFromDocument(const json& j) {
  if (!j.is_object()) return std::nullopt;
  auto outcome = outcomeFromName(j.value("outcome", ""));
  if (!outcome) return std::nullopt;
  core::JobReport r;
  r.outcome = *outcome;
  r.jobId = std::strtoull(j.value("job", "0").c_str(), nullptr, 10);
  r.pool = j.value("pool", "");
  r.detail = j.value("detail", "");
  for (const auto& a : j.value("attempts", json::array())) r.attempts.push_back(attemptFromJson(a));
  const std::string kind = j.value("result_kind", "bytes");
  for (std::size_t i = 0; i < std::size(kResultKinds); ++i) {
    if (kResultKinds[i] == kind) r.resultKind = static_cast<core::ResultKind>(i);
  }
  r.worker = j.value("worker", "");
  const json timings = j.value("timings", json::object());
  r.queueMs = timings.value("queue_ms", 0.0);
  r.runMs = timings.value("run_ms", 0.0);
  r.totalMs = timings.value("total_ms", 0.0);
  if (j.contains("retry_after_s")) r.retryAfterSeconds = j["retry_after_s"].get<double>();
  r.queueFull = j.value("queue_full", false);
  r.breakerOpen = j.value("breaker", "") == "open";
  r.fingerprint = j.value("fingerprint", "");
  r.quarantined = j.value("quarantined", false);
  r.stage = j.value("stage", "");
  r.fallbackFrom = j.value("fallback_from", std::vector<std::string>{});
  if (j.contains("last_start_failure")) {
    r.lastStartFailure = attemptFromJson(j["last_start_failure"]);
  }
  r.node = j.value("node", "");
  r.runs = j.value("runs", std::uint64_t{0});
  return r;
}

// Schema 1 kept what the caller was sent: an ok result with X-Bulkhead-* headers, or a
// problem+json document. Both carry every field their answer shows, so the report rebuilt here
// renders the same answer again.
std::optional<core::JobReport> reportFromLegacy(const journal::LegacyAnswer& answer) {
  const json headers = json::parse(answer.headers, nullptr, false);
  auto header = [&](const char* name) -> std::string {
    if (!headers.is_object() || !headers.contains(name) || !headers[name].is_string()) return "";
    return headers[name].get<std::string>();
  };
  if (answer.httpStatus != 200) {
    auto report = reportFromDocument(json::parse(answer.body, nullptr, false));
    if (!report) return std::nullopt;
    report->queueFull = answer.httpStatus == 429;
    report->quarantined = report->quarantined || header("X-Bulkhead-Quarantined") == "1";
    return report;
  }
  core::JobReport r;
  r.jobId = std::strtoull(header("X-Bulkhead-Job").c_str(), nullptr, 10);
  r.pool = header("X-Bulkhead-Pool");
  r.worker = header("X-Bulkhead-Worker");
  if (auto from = header("X-Bulkhead-Fallback-From"); !from.empty()) r.fallbackFrom = {from};
  r.attempts.resize(std::strtoull(header("X-Bulkhead-Attempts").c_str(), nullptr, 10));
  r.queueMs = std::strtod(header("X-Bulkhead-Queue-Ms").c_str(), nullptr);
  r.runMs = std::strtod(header("X-Bulkhead-Run-Ms").c_str(), nullptr);
  r.totalMs = std::strtod(header("X-Bulkhead-Total-Ms").c_str(), nullptr);
  if (answer.contentType == "application/json") r.resultKind = core::ResultKind::kJson;
  if (answer.contentType.rfind("text/plain", 0) == 0) r.resultKind = core::ResultKind::kText;
  r.result = core::makePayload(answer.body);
  return r;
}

}  // namespace

std::optional<core::Outcome> outcomeFromName(std::string_view name) {
  for (core::Outcome o : core::kAllOutcomes) {
    if (core::outcomeName(o) == name) return o;
  }
  return std::nullopt;
}

json reportToJson(const core::JobReport& r) {
  json attempts = json::array();
  for (const auto& a : r.attempts) attempts.push_back(attemptToJson(a));
  json j = {{"job", std::to_string(r.jobId)},
            {"pool", r.pool},
            {"outcome", std::string(core::outcomeName(r.outcome))},
            {"detail", json::parse(utf8(r.detail))},
            {"attempts", std::move(attempts)},
            {"result_kind", std::string(kResultKinds[static_cast<int>(r.resultKind)])},
            {"worker", r.worker},
            {"timings", {{"queue_ms", r.queueMs}, {"run_ms", r.runMs}, {"total_ms", r.totalMs}}},
            {"queue_full", r.queueFull},
            {"fingerprint", r.fingerprint},
            {"quarantined", r.quarantined},
            {"stage", r.stage},
            {"fallback_from", r.fallbackFrom}};
  if (r.retryAfterSeconds) j["retry_after_s"] = *r.retryAfterSeconds;
  if (r.breakerOpen) j["breaker"] = "open";
  if (r.lastStartFailure) j["last_start_failure"] = attemptToJson(*r.lastStartFailure);
  if (!r.node.empty()) j["node"] = r.node;
  if (r.runs != 0) j["runs"] = r.runs;
  return j;
}

std::optional<core::JobReport> reportFromJson(const std::string& text, std::string result) {
  try {
    auto report = reportFromDocument(json::parse(text, nullptr, false));
    if (report && report->outcome == core::Outcome::kOk) {
      report->result = core::makePayload(std::move(result));
    }
    return report;
  } catch (const json::exception&) {
    return std::nullopt;  // a field of the wrong type: not a report this code wrote
  }
}

journal::FinishedJob finishedJobFrom(const core::JobReport& report) {
  journal::FinishedJob f;
  f.outcome = std::string(core::outcomeName(report.outcome));
  f.report = reportToJson(report).dump(-1, ' ', false, json::error_handler_t::replace);
  // A result in a memfd is read back for the journal: it must outlive the daemon.
  if (report.result) f.result = os::blobBytes(*report.result).value_or(std::string());
  return f;
}

std::optional<core::JobReport> reportFromRow(const journal::JobRow& row) {
  if (!row.finished) return std::nullopt;
  if (row.legacy) {
    try {
      return reportFromLegacy(*row.legacy);
    } catch (const json::exception&) {
      return std::nullopt;
    }
  }
  return reportFromJson(row.report, row.result);
}

}  // namespace bulkhead::jobs
