#include "runtime/operator_log.h"

#include <cstdio>
#include <ctime>

namespace bulkhead::runtime {

using nlohmann::json;

namespace {

struct Sink {
  LogFormat format = LogFormat::kText;
  LogLevel minimum = LogLevel::kInfo;
};

Sink& sink() {
  static Sink s;
  return s;
}

std::string isoTime(std::chrono::system_clock::time_point at) {
  const auto since = at.time_since_epoch();
  const std::time_t seconds = std::chrono::duration_cast<std::chrono::seconds>(since).count();
  const long millis = static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(since).count() % 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, millis);
  return buf;
}

// Worker output quoted in a log line must stay on that line.
std::string oneLine(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) out += (c == '\n' || c == '\r') ? ' ' : c;
  return out;
}

LogLevel levelOfEvent(std::string_view kind) {
  if (kind == "started" || kind == "ready" || kind == "zygote_ready" || kind == "cancelled" ||
      kind == "swapped") {
    return LogLevel::kDebug;
  }
  // A promotion follows a death (logged as a warning) or a recycle, and so does a prefetched job
  // sent back unstarted: what it did, not a fault.
  if (kind == "recycled" || kind == "breaker_closed" || kind == "promoted" || kind == "requeued") {
    return LogLevel::kInfo;
  }
  return LogLevel::kWarning;  // crashes, timeouts, hangs, OOM, exhaustion, quarantine, refusals
}

}  // namespace

std::optional<LogLevel> parseLogLevel(std::string_view text) {
  if (text == "debug") return LogLevel::kDebug;
  if (text == "info") return LogLevel::kInfo;
  if (text == "warning" || text == "warn") return LogLevel::kWarning;
  if (text == "error") return LogLevel::kError;
  return std::nullopt;
}

std::optional<LogFormat> parseLogFormat(std::string_view text) {
  if (text == "text") return LogFormat::kText;
  if (text == "json") return LogFormat::kJson;
  return std::nullopt;
}

std::string_view logLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "info";
}

std::string formatLogLine(LogFormat format, LogLevel level,
                          std::chrono::system_clock::time_point at, std::string_view message,
                          const json& fields) {
  switch (format) {
    case LogFormat::kText: {
      std::string line = "bulkhead: ";
      if (level != LogLevel::kInfo) line += std::string(logLevelName(level)) + ": ";
      return line + oneLine(message);
    }
    case LogFormat::kJson: {
      json j = {{"time", isoTime(at)},
                {"level", std::string(logLevelName(level))},
                {"message", std::string(message)}};
      if (fields.is_object()) {
        for (const auto& [key, value] : fields.items()) j[key] = value;
      }
      return j.dump(-1, ' ', false, json::error_handler_t::replace);
    }
  }
  return std::string(message);
}

void configureLog(LogFormat format, LogLevel minimum) { sink() = Sink{format, minimum}; }

void logAt(LogLevel level, std::string_view message, const json& fields) {
  const Sink& s = sink();
  if (level < s.minimum) return;
  std::string line =
      formatLogLine(s.format, level, std::chrono::system_clock::now(), message, fields);
  line += '\n';
  // One write per line: lines of concurrent writers (none today) never interleave mid-line.
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

EventLine eventLine(std::string_view pool, const core::PoolEvent& e) {
  json fields = {{"pool", std::string(pool)}, {"event", e.kind}};
  std::string who;
  if (!e.worker.empty()) {
    fields["worker"] = e.worker;
    who = " " + e.worker;
  }
  std::string context;
  if (e.pid > 0) {
    fields["pid"] = e.pid;
    context = "pid " + std::to_string(e.pid);
  }
  if (e.job > 0) {
    fields["job"] = std::to_string(e.job);
    context += (context.empty() ? "" : ", ") + std::string("job ") + std::to_string(e.job);
  }
  if (!context.empty()) who += " (" + context + ")";
  fields["detail"] = e.detail;
  std::string message = "pool " + std::string(pool) + ": " + e.kind + who;
  if (!e.detail.empty()) message += ": " + e.detail;
  return {levelOfEvent(e.kind), std::move(message), std::move(fields)};
}

}  // namespace bulkhead::runtime
