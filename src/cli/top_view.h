#pragma once
// `bulkhead top`'s picture: one frame of the live view as lines of text, rendered from the
// daemon's `GET /v1/pools` answers and fitted to a terminal's width and height. Pure: no I/O, no
// clock; the caller passes the snapshots with the times they were taken (top_command.cc owns the
// terminal, the fetching and the timing).

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::cli {

// One answer of GET /v1/pools and when it arrived, in seconds on a monotonic clock.
struct TopSnapshot {
  nlohmann::json pools;
  double takenAt = 0;
};

// Why the daemon gives no answer, while it does not.
struct TopOutage {
  std::string error;  // e.g. "cannot talk to bulkhead at ...: Connection refused"
  int tries = 0;      // failed tries in a row
  double downForSeconds = 0;
};

struct TopFrameInput {
  std::string url;
  const TopSnapshot* current = nullptr;   // the latest answer; null before the first one
  const TopSnapshot* previous = nullptr;  // the one before it, for rates; null: no rate yet
  const TopOutage* outage = nullptr;      // set while the daemon does not answer
  int width = 80;                         // every line is cut to this many columns
  int height = 24;                        // at most this many lines; 0: no limit (a plain frame)
  bool live = true;                       // false: a frame printed once (no "q: quit" hint)
};

// How many of the newest failures a frame without a height limit lists.
inline constexpr std::size_t kFailuresUnbounded = 20;

// The frame: header, pools, workers and the last failures (newest first), each line at most
// `width` columns, at most `height` lines, control characters from the daemon replaced by spaces.
std::vector<std::string> renderTopFrame(const TopFrameInput& input);

// "42s", "3m05s", "2h07m", "3d04h": an age or uptime in at most 6 columns.
std::string formatAge(double seconds);

// The line with control characters (C0, DEL, C1) replaced by spaces and cut after `width`
// characters (UTF-8 aware: a character is never split).
std::string fitToWidth(std::string_view line, int width);

// A pool's READY column, as `bulkhead top` and `bulkhead status` show it: "ready/target", and
// "+N" ready standbys for a pool that keeps any (`standby`).
std::string readyColumn(const nlohmann::json& pool);

// True for the event kinds an operator must see (crashed, hung, oom_killed, start_failed, ...):
// everything but the routine ones (started, ready, recycled, breaker_closed, ...).
bool isFailureEvent(std::string_view kind);

}  // namespace bulkhead::cli
