// Formatting for `bulkhead run` (see step_report.h).

#include "run/step_report.h"

#include <cstdio>

namespace bulkhead::run {

std::string jsonText(const nlohmann::json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string formatBytes(std::uint64_t bytes) {
  char text[32];
  const double b = static_cast<double>(bytes);
  if (bytes >= (1ull << 30)) {
    std::snprintf(text, sizeof text, "%.1fGiB", b / (1ull << 30));
  } else if (bytes >= (1ull << 20)) {
    std::snprintf(text, sizeof text, "%.0fMiB", b / (1ull << 20));
  } else {
    std::snprintf(text, sizeof text, "%.0fKiB", b / 1024);
  }
  return text;
}

std::string formatDuration(double ms) {
  char text[32];
  if (ms < 1000) {
    std::snprintf(text, sizeof text, "%.0fms", ms);
  } else if (ms < 60000) {
    std::snprintf(text, sizeof text, "%.1fs", ms / 1000);
  } else if (ms < 3600000) {
    const long s = static_cast<long>(ms / 1000);
    std::snprintf(text, sizeof text, "%ldm%02lds", s / 60, s % 60);
  } else {
    const long m = static_cast<long>(ms / 60000);
    std::snprintf(text, sizeof text, "%ldh%02ldm", m / 60, m % 60);
  }
  return text;
}

std::string liveLine(const std::string& name, int attempt, double elapsedMs, const TreeSample& s,
                     int maxMapCount, std::uint64_t pidsLimit) {
  const long seconds = static_cast<long>(elapsedMs / 1000);
  char clock[32];
  std::snprintf(clock, sizeof clock, "%02ld:%02ld:%02ld", seconds / 3600, (seconds / 60) % 60,
                seconds % 60);
  std::string line = "step " + name;
  if (attempt > 1) line += " (attempt " + std::to_string(attempt) + ")";
  line += "  " + std::string(clock) + "  rss=" + formatBytes(s.rssBytes) +
          " threads=" + std::to_string(s.threads) + " maps=" + std::to_string(s.maps) + "/" +
          std::to_string(maxMapCount) + " pids=" + std::to_string(s.pids) + "/" +
          (pidsLimit ? std::to_string(pidsLimit) : std::string("-")) +
          " procs=" + std::to_string(s.processes);
  return line;
}

namespace {

std::string evidenceText(const StepSummary& s) {
  std::string text;
  if (s.outcome == "ok" && s.result) {
    text = "result " + jsonText(*s.result);
    if (text.size() > 120) text = text.substr(0, 117) + "...";
  }
  if (s.skipped) return "from state (not run again); " + text;
  const auto& e = s.evidence;
  if (s.outcome != "ok" && e.contains("cause")) text = e["cause"].get<std::string>();
  if (s.outcome != "ok" && e.contains("stderr_tail")) {
    std::string tail = e["stderr_tail"].get<std::string>();
    std::size_t end = tail.find_last_not_of("\r\n \t");
    if (end != std::string::npos) {
      std::size_t begin = tail.find_last_of('\n', end);
      begin = begin == std::string::npos ? 0 : begin + 1;
      std::string last = tail.substr(begin, end - begin + 1);
      if (last.size() > 120) last = last.substr(0, 120) + "...";
      text += " | stderr: " + last;
    }
  }
  return text;
}

}  // namespace

std::string finalTable(const std::vector<StepSummary>& steps) {
  std::size_t nameWidth = 4;
  for (const auto& s : steps) nameWidth = std::max(nameWidth, s.name.size());
  char line[512];
  std::string out;
  std::snprintf(line, sizeof line, "%-*s  %-18s %4s %9s %9s %7s %7s  %s\n",
                static_cast<int>(nameWidth), "step", "outcome", "try", "duration", "peak_rss",
                "threads", "maps", "evidence");
  out += line;
  for (const auto& s : steps) {
    std::snprintf(line, sizeof line, "%-*s  %-18s %4d %9s %9s %7d %7d  ",
                  static_cast<int>(nameWidth), s.name.c_str(), s.outcome.c_str(), s.attempts,
                  formatDuration(s.durationMs).c_str(), formatBytes(s.peaks.rssBytes).c_str(),
                  s.peaks.threads, s.peaks.maps);
    out += line + evidenceText(s) + "\n";
  }
  return out;
}

StepSummary summaryFromRecord(const StepRecord& row) {
  StepSummary s;
  s.name = row.name;
  s.outcome = row.outcome;
  s.skipped = true;
  s.attempts = row.attempts;
  s.durationMs = row.durationMs;
  s.peaks = row.peaks;
  s.evidence = nlohmann::json::parse(row.evidenceJson, nullptr, false);
  if (s.evidence.is_discarded()) s.evidence = nlohmann::json::object();
  if (row.resultJson) {
    auto r = nlohmann::json::parse(*row.resultJson, nullptr, false);
    s.result = r.is_discarded() ? nlohmann::json(*row.resultJson) : r;
  }
  return s;
}

nlohmann::json summaryJson(const StepSummary& s) {
  nlohmann::json j;
  j["step"] = s.name;
  j["outcome"] = s.outcome;
  j["skipped"] = s.skipped;
  j["attempts"] = s.attempts;
  j["attempt_outcomes"] = s.attemptOutcomes;
  j["duration_ms"] = s.durationMs;
  j["peaks"] = {{"rss_bytes", s.peaks.rssBytes},
                {"threads", s.peaks.threads},
                {"maps", s.peaks.maps},
                {"pids", s.peaks.pids}};
  j["evidence"] = s.evidence;
  j["result"] = s.result ? *s.result : nlohmann::json(nullptr);
  return j;
}

nlohmann::json runJson(const std::vector<StepSummary>& steps, int exitCode, bool interrupted,
                       int maxMapCount, const std::string& cgroupMode) {
  nlohmann::json j;
  j["exit_code"] = exitCode;
  j["interrupted"] = interrupted;
  j["max_map_count"] = maxMapCount;
  j["cgroups"] = cgroupMode;
  j["steps"] = nlohmann::json::array();
  for (const auto& s : steps) j["steps"].push_back(summaryJson(s));
  return j;
}

void keepStepResult(const std::optional<std::string>& text, bool tooLarge, StepSummary& summary,
                    nlohmann::json& evidence) {
  summary.result.reset();
  if (!text) return;
  if (tooLarge) {
    evidence["result_error"] = "result file larger than 1 MiB: not kept";
    return;
  }
  auto parsed = nlohmann::json::parse(*text, nullptr, false);
  if (parsed.is_discarded()) {
    evidence["result_error"] = "result file is not JSON: kept as a string";
    summary.result = nlohmann::json(*text);
  } else {
    summary.result = parsed;
  }
}

}  // namespace bulkhead::run
