#pragma once
// The operator's log: one line on stderr per event that matters (a worker that failed to start,
// crashed, timed out, hung, was OOM-killed or ran out of a resource; a recycle; a quarantine; a
// breaker change; a zygote refusal; journal trouble), in text for a terminal or journald, or in
// JSON for a log shipper.
//
// The sink is process-wide and configured once by `bulkhead serve` (--log-format, --log-level)
// before the event loop starts; everything else only formats. formatLogLine() is pure, so the
// exact lines are tested without capturing stderr.

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "core/pool.h"

namespace bulkhead::runtime {

enum class LogLevel { kDebug, kInfo, kWarning, kError };
enum class LogFormat { kText, kJson };

std::optional<LogLevel> parseLogLevel(std::string_view text);    // debug|info|warning|error
std::optional<LogFormat> parseLogFormat(std::string_view text);  // text|json
std::string_view logLevelName(LogLevel level);

// text: "bulkhead: warning: <message>" (journald adds the time; the level leads so that
//       `grep warning` and syslog-style filters work);
// json: {"time": "...Z", "level": "warning", "message": "...", <fields>...} on one line.
std::string formatLogLine(LogFormat format, LogLevel level,
                          std::chrono::system_clock::time_point at, std::string_view message,
                          const nlohmann::json& fields);

void configureLog(LogFormat format, LogLevel minimum);
void logAt(LogLevel level, std::string_view message,
           const nlohmann::json& fields = nlohmann::json::object());

// A pool event as the operator reads it: its level, its sentence and its structured fields.
struct EventLine {
  LogLevel level;
  std::string message;
  nlohmann::json fields;
};
EventLine eventLine(std::string_view pool, const core::PoolEvent& event);

}  // namespace bulkhead::runtime
