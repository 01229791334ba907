// `bulkhead top`'s frame: GET /v1/pools answers -> lines fitted to the terminal (see top_view.h).
//
// A frame has four parts: a two-line header (totals, jobs/s from the counters' change since the
// previous answer), the pools table, the workers table and the last failures (the pools' recent
// events of warning kinds, newest first). When the terminal is too short, every table keeps a
// few rows, then the pools get what they need, then the workers, and the failures take what is
// left; a cut table ends with "... N more" so nothing disappears silently.

#include "cli/top_view.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

namespace bulkhead::cli {

using nlohmann::json;

namespace {

// The job outcomes of the pools' counters, in the daemon's order (core::kAllOutcomes).
constexpr const char* kOutcomes[] = {
    "ok",         "handler_error",      "crashed", "timed_out",  "hung",
    "oom_killed", "resource_exhausted", "poison",  "overloaded", "unavailable",
    "cancelled"};
constexpr int kRowsKeptPerTable = 3;  // a cut table still shows this many rows

std::string text(const json& object, const char* key, const std::string& otherwise = "") {
  if (!object.is_object()) return otherwise;
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : otherwise;
}

double number(const json& object, const char* key) {
  if (!object.is_object()) return 0;
  auto it = object.find(key);
  return it != object.end() && it->is_number() ? it->get<double>() : 0;
}

std::uint64_t count(const json& object, const char* key) {
  if (!object.is_object()) return 0;
  auto it = object.find(key);
  if (it == object.end() || !it->is_number()) return 0;
  return it->is_number_unsigned() ? it->get<std::uint64_t>()
                                  : static_cast<std::uint64_t>(std::max(0.0, it->get<double>()));
}

const json& listOf(const json& object, const char* key) {
  static const json kEmpty = json::array();
  if (!object.is_object()) return kEmpty;
  auto it = object.find(key);
  return it != object.end() && it->is_array() ? *it : kEmpty;
}

const json& counters(const json& pool) {
  static const json kNone = json::object();
  auto it = pool.find("counters");
  return it != pool.end() && it->is_object() ? *it : kNone;
}

// Jobs that ended, whatever their outcome.
std::uint64_t finishedJobs(const json& pool) {
  std::uint64_t n = 0;
  for (const char* o : kOutcomes) n += count(counters(pool), o);
  return n;
}

bool isReady(const json& worker) {
  std::string state = text(worker, "state");
  return state == "idle" || state == "busy";
}

std::uint64_t readyWorkers(const json& pool) {
  if (pool.contains("ready_workers") && pool["ready_workers"].is_number()) {
    return count(pool, "ready_workers");
  }
  std::uint64_t n = 0;  // a daemon that does not count them: the same rule over its workers
  for (const auto& w : listOf(pool, "workers")) n += isReady(w);
  return n;
}

std::string fixed(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
  return buffer;
}

std::string perSecond(double value) { return fixed(value, value < 10 ? 1 : 0); }

// Jobs per second between two answers, or "-" when there is no earlier answer to compare with
// (or the daemon restarted in between: its counters went back).
struct Rates {
  bool known = false;
  double total = 0;
  std::map<std::string, double> byPool;
};

Rates ratesBetween(const TopSnapshot* previous, const TopSnapshot* current) {
  Rates rates;
  if (!previous || !current) return rates;
  double elapsed = current->takenAt - previous->takenAt;
  if (elapsed <= 0) return rates;
  if (number(current->pools, "uptime_s") < number(previous->pools, "uptime_s")) return rates;
  std::map<std::string, std::uint64_t> before;
  for (const auto& p : listOf(previous->pools, "pools")) before[text(p, "name")] = finishedJobs(p);
  rates.known = true;
  for (const auto& p : listOf(current->pools, "pools")) {
    auto it = before.find(text(p, "name"));
    std::uint64_t now = finishedJobs(p);
    if (it == before.end() || now < it->second) continue;
    double rate = static_cast<double>(now - it->second) / elapsed;
    rates.byPool[text(p, "name")] = rate;
    rates.total += rate;
  }
  return rates;
}

// A table whose columns are as wide as their widest cell; numbers align right.
class Table {
 public:
  struct Column {
    std::string title;
    bool alignRight = false;
  };
  explicit Table(std::vector<Column> columns) : columns_(std::move(columns)) {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  std::size_t size() const { return rows_.size(); }

  // The header line, then the first `shown` rows (all when shown >= size()).
  std::vector<std::string> lines(std::size_t shown) const {
    std::vector<std::size_t> widths;
    for (const auto& c : columns_) widths.push_back(c.title.size());
    for (const auto& row : rows_) {
      for (std::size_t i = 0; i + 1 < row.size() && i < widths.size(); ++i) {
        widths[i] = std::max(widths[i], row[i].size());
      }
    }
    std::vector<std::string> out;
    std::vector<std::string> titles;
    for (const auto& c : columns_) titles.push_back(c.title);
    out.push_back(join(titles, widths));
    for (std::size_t r = 0; r < std::min(shown, rows_.size()); ++r) {
      out.push_back(join(rows_[r], widths));
    }
    return out;
  }

 private:
  std::string join(const std::vector<std::string>& cells,
                   const std::vector<std::size_t>& widths) const {
    std::string line;
    for (std::size_t i = 0; i < cells.size() && i < columns_.size(); ++i) {
      const std::string& cell = cells[i];
      bool last = i + 1 == cells.size();
      std::size_t pad = widths[i] > cell.size() ? widths[i] - cell.size() : 0;
      if (columns_[i].alignRight) line.append(pad, ' ');
      line += cell;
      if (last) break;
      if (!columns_[i].alignRight) line.append(pad, ' ');
      line += "  ";
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    return line;
  }

  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

std::string outcomeSummary(const json& pool) {
  std::string out;
  for (const char* o : kOutcomes) {
    std::uint64_t n = count(counters(pool), o);
    if (std::string_view(o) == "ok" || n == 0) continue;
    if (!out.empty()) out += ", ";
    out += std::string(o) + " " + std::to_string(n);
  }
  return out.empty() ? "-" : out;
}

std::string modeOf(const json& pool) {
  std::string mode = text(pool, "mode", "spawn");
  if (pool.contains("zygote") && pool["zygote"].is_object()) {
    std::string state = text(pool["zygote"], "state");
    if (!state.empty() && state != "ready") mode += ":" + state;
  }
  return mode;
}

Table poolsTable(const json& answer, const Rates& rates) {
  Table t({{"POOL"},
           {"MODE"},
           {"READY", true},
           {"QUEUE", true},
           {"RUN", true},
           {"BREAKER"},
           {"JOBS/S", true},
           {"OK", true},
           {"FAILED", true},
           {"OUTCOMES"}});
  for (const auto& p : listOf(answer, "pools")) {
    std::string name = text(p, "name");
    auto rate = rates.byPool.find(name);
    std::uint64_t finished = finishedJobs(p), ok = count(counters(p), "ok");
    t.add({name, modeOf(p), readyColumn(p), std::to_string(count(p, "queue_length")),
           std::to_string(count(p, "in_flight")), text(p, "breaker", "-"),
           rate == rates.byPool.end() ? "-" : perSecond(rate->second), std::to_string(ok),
           std::to_string(finished - std::min(ok, finished)), outcomeSummary(p)});
  }
  return t;
}

std::string mebibytes(double bytes) { return fixed(bytes / (1 << 20), 1) + "MiB"; }

Table workersTable(const json& answer) {
  Table t({{"WORKER"},
           {"PID", true},
           {"STATE"},
           {"AGE", true},
           {"JOBS", true},
           {"RSS", true},
           {"THREADS", true},
           {"MAPS", true},
           {"FDS", true},
           {"RECYCLE"}});
  for (const auto& p : listOf(answer, "pools")) {
    for (const auto& w : listOf(p, "workers")) {
      // A worker still spawning (zygote mode: waiting for its fork) has no pid yet: null.
      std::string pid = w.contains("pid") && w["pid"].is_number() && count(w, "pid") > 0
                            ? std::to_string(count(w, "pid"))
                            : "-";
      std::string rss = "-", threads = "-", maps = "-", fds = "-";
      if (w.contains("sample") && w["sample"].is_object()) {
        const json& s = w["sample"];
        rss = mebibytes(number(s, "rss_bytes"));
        threads = std::to_string(count(s, "threads"));
        if (s.contains("maps") && s["maps"].is_number()) maps = std::to_string(count(s, "maps"));
        fds = std::to_string(count(s, "fds"));
      }
      t.add({text(w, "id"), pid, text(w, "state"), formatAge(number(w, "age_s")),
             std::to_string(count(w, "jobs_served")), rss, threads, maps, fds,
             text(w, "recycle_cause", "-")});
    }
  }
  return t;
}

Table failuresTable(const json& answer) {
  struct Failure {
    double age;
    std::vector<std::string> cells;
  };
  std::vector<Failure> failures;
  for (const auto& p : listOf(answer, "pools")) {
    for (const auto& e : listOf(p, "events")) {
      std::string kind = text(e, "kind");
      if (!isFailureEvent(kind)) continue;
      double age = number(e, "age_s");
      std::string worker = text(e, "worker");
      failures.push_back({age,
                          {formatAge(age), text(p, "name"), kind, worker.empty() ? "-" : worker,
                           text(e, "detail")}});
    }
  }
  // Newest first; the daemon lists each pool's events oldest first, so a stable sort keeps the
  // later of two events with the same age on top once reversed.
  std::reverse(failures.begin(), failures.end());
  std::stable_sort(failures.begin(), failures.end(),
                   [](const Failure& a, const Failure& b) { return a.age < b.age; });
  Table t({{"AGE", true}, {"POOL"}, {"EVENT"}, {"WORKER"}, {"DETAIL"}});
  for (auto& f : failures) t.add(std::move(f.cells));
  return t;
}

std::vector<std::string> headerLines(const TopFrameInput& in, const Rates& rates) {
  std::vector<std::string> lines;
  const json* answer = in.current ? &in.current->pools : nullptr;
  std::string first = "bulkhead top  " + in.url;
  const std::string hint = in.live ? "  (q: quit)" : "";
  if (answer) {
    std::uint64_t ready = 0, target = 0, workers = 0, queued = 0, running = 0;
    std::uint64_t finished = 0, ok = 0;
    const json& pools = listOf(*answer, "pools");
    for (const auto& p : pools) {
      ready += readyWorkers(p);
      target += count(p, "workers_target");
      workers += listOf(p, "workers").size();
      queued += count(p, "queue_length");
      running += count(p, "in_flight");
      finished += finishedJobs(p);
      ok += count(counters(p), "ok");
    }
    first += "  up " + formatAge(number(*answer, "uptime_s")) + "  pools " +
             std::to_string(pools.size()) + "  workers " + std::to_string(workers) + " (ready " +
             std::to_string(ready) + "/" + std::to_string(target) + ")  queued " +
             std::to_string(queued) + "  running " + std::to_string(running);
    if (answer->value("shutting_down", false)) first += "  SHUTTING DOWN";
    lines.push_back(first);
    lines.push_back("jobs " + std::to_string(finished) + " done: " + std::to_string(ok) + " ok, " +
                    std::to_string(finished - std::min(ok, finished)) + " failed  jobs/s " +
                    (rates.known ? perSecond(rates.total) : std::string("-")) + hint);
  } else {
    lines.push_back(first);
    lines.push_back((in.outage ? "no answer yet" : "connecting...") + hint);
  }
  if (in.outage) {
    // The error on a line of its own: on a narrow terminal it would be cut first.
    lines.push_back("DAEMON UNREACHABLE for " + formatAge(in.outage->downForSeconds) + " (" +
                    std::to_string(in.outage->tries) + " tries), retrying" +
                    (answer ? "; below: its last answer" : ""));
    lines.push_back("  " + in.outage->error);
  }
  return lines;
}

// How many rows each table shows within `room` lines, each table costing two more (a blank
// line and its header): first a few rows each, then the pools, the workers, the failures.
std::vector<std::size_t> shareRows(const std::vector<std::size_t>& wanted, int room) {
  std::vector<std::size_t> shown(wanted.size(), 0);
  long left = room - 2 * static_cast<long>(wanted.size());
  for (std::size_t i = 0; i < wanted.size() && left > 0; ++i) {
    shown[i] =
        std::min<std::size_t>({wanted[i], kRowsKeptPerTable, static_cast<std::size_t>(left)});
    left -= static_cast<long>(shown[i]);
  }
  for (std::size_t i = 0; i < wanted.size() && left > 0; ++i) {
    std::size_t more = std::min<std::size_t>(wanted[i] - shown[i], static_cast<std::size_t>(left));
    shown[i] += more;
    left -= static_cast<long>(more);
  }
  return shown;
}

void appendTable(std::vector<std::string>& lines, const Table& table, std::size_t shown,
                 const std::string& empty, const char* what) {
  lines.emplace_back();
  if (table.size() == 0) {
    lines.push_back(table.lines(0)[0]);
    lines.push_back(empty);
    return;
  }
  // A cut table gives its last row to the count of what it leaves out.
  bool cut = shown < table.size();
  std::size_t rows = cut && shown > 0 ? shown - 1 : shown;
  auto tableLines = table.lines(rows);
  lines.insert(lines.end(), tableLines.begin(), tableLines.end());
  if (cut && shown > 0) {
    lines.push_back("... " + std::to_string(table.size() - rows) + " more " + what);
  }
}

}  // namespace

std::vector<std::string> renderTopFrame(const TopFrameInput& in) {
  Rates rates = ratesBetween(in.previous, in.current);
  std::vector<std::string> lines = headerLines(in, rates);
  if (in.current) {
    const json& answer = in.current->pools;
    Table pools = poolsTable(answer, rates);
    Table workers = workersTable(answer);
    Table failures = failuresTable(answer);
    // An empty table still shows one row ("none").
    std::vector<std::size_t> wanted = {std::max<std::size_t>(pools.size(), 1),
                                       std::max<std::size_t>(workers.size(), 1),
                                       std::max<std::size_t>(failures.size(), 1)};
    std::vector<std::size_t> shown = wanted;
    if (in.height > 0) {
      // The failures' title line is the one more line of the three tables.
      shown = shareRows(wanted, in.height - static_cast<int>(lines.size()) - 1);
    } else {
      shown[2] = std::min(shown[2], kFailuresUnbounded);
    }
    appendTable(lines, pools, shown[0], "(no pools)", "pools");
    appendTable(lines, workers, shown[1], "(no workers)", "workers");
    // The failures' title says what the table is: the other two name themselves.
    lines.emplace_back();
    lines.push_back("LAST FAILURES (newest first)");
    std::vector<std::string> failureLines;
    appendTable(failureLines, failures, shown[2], "(none)", "failures");
    lines.insert(lines.end(), failureLines.begin() + 1, failureLines.end());
  }
  if (in.height > 0 && lines.size() > static_cast<std::size_t>(in.height)) {
    lines.resize(static_cast<std::size_t>(in.height));
  }
  for (auto& line : lines) line = fitToWidth(line, in.width);
  return lines;
}

std::string formatAge(double seconds) {
  if (!(seconds >= 0)) seconds = 0;  // NaN too
  auto s = static_cast<long long>(std::floor(seconds));
  char buffer[32];
  if (s < 60) {
    std::snprintf(buffer, sizeof buffer, "%llds", s);
  } else if (s < 3600) {
    std::snprintf(buffer, sizeof buffer, "%lldm%02llds", s / 60, s % 60);
  } else if (s < 86400) {
    std::snprintf(buffer, sizeof buffer, "%lldh%02lldm", s / 3600, s % 3600 / 60);
  } else {
    std::snprintf(buffer, sizeof buffer, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
  }
  return buffer;
}

std::string fitToWidth(std::string_view line, int width) {
  std::string out;
  int columns = 0;
  for (std::size_t i = 0; i < line.size() && columns < width;) {
    auto byte = static_cast<unsigned char>(line[i]);
    std::size_t length = byte < 0x80 ? 1 : (byte >> 5) == 0x6 ? 2 : (byte >> 4) == 0xe ? 3 : 4;
    if (i + length > line.size() || (byte >= 0x80 && byte < 0xc0)) length = 1;  // not UTF-8
    std::string_view character = line.substr(i, length);
    bool c1 = length == 2 && byte == 0xc2 && static_cast<unsigned char>(line[i + 1]) < 0xa0;
    if (byte < 0x20 || byte == 0x7f || c1 || (byte >= 0x80 && length == 1)) {
      out += ' ';  // an escape sequence from a worker's stderr must not reach the terminal
    } else {
      out += character;
    }
    i += length;
    ++columns;
  }
  return out;
}

std::string readyColumn(const json& pool) {
  std::string column =
      std::to_string(readyWorkers(pool)) + "/" + std::to_string(count(pool, "workers_target"));
  if (count(pool, "standby_target") > 0) {
    std::uint64_t standby = 0;
    for (const auto& w : listOf(pool, "workers")) standby += text(w, "state") == "standby";
    column += "+" + std::to_string(standby);
  }
  return column;
}

bool isFailureEvent(std::string_view kind) {
  // The same split as the operator log's levels: these are its debug and info kinds.
  return !(kind == "started" || kind == "ready" || kind == "zygote_ready" || kind == "cancelled" ||
           kind == "recycled" || kind == "breaker_closed");
}

}  // namespace bulkhead::cli
