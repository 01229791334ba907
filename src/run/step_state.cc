// StepState: the SQLite store of `bulkhead run` (see step_state.h).

#include "run/step_state.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <cstring>

namespace bulkhead::run {

namespace {

constexpr const char* kSchema =
    "CREATE TABLE IF NOT EXISTS steps("
    " name TEXT PRIMARY KEY,"
    " outcome TEXT NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " duration_ms REAL NOT NULL DEFAULT 0,"
    " runner_pid INTEGER NOT NULL DEFAULT 0,"
    " pid INTEGER NOT NULL DEFAULT 0,"
    " peak_rss_bytes INTEGER NOT NULL DEFAULT 0,"
    " peak_threads INTEGER NOT NULL DEFAULT 0,"
    " peak_maps INTEGER NOT NULL DEFAULT 0,"
    " peak_pids INTEGER NOT NULL DEFAULT 0,"
    " evidence TEXT NOT NULL DEFAULT '{}',"
    " result TEXT,"
    " updated_at_ms INTEGER NOT NULL DEFAULT 0);";

std::string text(sqlite3_stmt* stmt, int col) {
  const unsigned char* p = sqlite3_column_text(stmt, col);
  return p ? std::string(reinterpret_cast<const char*>(p)) : std::string();
}

bool makeDirectory(const std::string& path, std::string* error) {
  if (::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) return true;
  if (error) *error = "cannot create " + path + ": " + std::strerror(errno);
  return false;
}

}  // namespace

std::unique_ptr<StepState> StepState::open(const std::string& dir, std::string* error) {
  // Parents too (runs/cv): one mkdir per component.
  for (std::size_t at = dir.find('/', 1); at != std::string::npos; at = dir.find('/', at + 1)) {
    if (!makeDirectory(dir.substr(0, at), error)) return nullptr;
  }
  if (!makeDirectory(dir, error) || !makeDirectory(dir + "/results", error)) return nullptr;
  std::unique_ptr<StepState> s(new StepState());
  s->dir_ = dir;
  s->lock_.reset(::open((dir + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!s->lock_.valid()) {
    if (error) *error = "cannot open " + dir + "/lock: " + std::strerror(errno);
    return nullptr;
  }
  if (::flock(s->lock_.get(), LOCK_EX | LOCK_NB) != 0) {
    if (error) *error = "state " + dir + " is in use by another `bulkhead run`";
    return nullptr;
  }
  const std::string file = dir + "/state.sqlite";
  if (sqlite3_open_v2(file.c_str(), &s->db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    if (error) *error = file + ": " + (s->db_ ? sqlite3_errmsg(s->db_) : "cannot open");
    return nullptr;
  }
  sqlite3_busy_timeout(s->db_, 5000);
  // WAL with synchronous=NORMAL: a commit survives our SIGKILL (the kernel has the pages) without
  // an fsync per step; only a power loss can lose the last rows, which are then simply rerun.
  if (!s->exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", error) ||
      !s->exec(kSchema, error)) {
    return nullptr;
  }
  return s;
}

std::unique_ptr<StepState> StepState::inMemory(std::string* error) {
  std::unique_ptr<StepState> s(new StepState());
  if (sqlite3_open(":memory:", &s->db_) != SQLITE_OK || !s->exec(kSchema, error)) return nullptr;
  return s;
}

StepState::~StepState() {
  if (db_) sqlite3_close(db_);
}

bool StepState::exec(const char* sql, std::string* error) {
  char* message = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) == SQLITE_OK) return true;
  if (error) *error = std::string("state: ") + (message ? message : "error");
  sqlite3_free(message);
  return false;
}

bool StepState::clear(std::string* error) { return exec("DELETE FROM steps;", error); }

std::optional<StepRecord> StepState::get(const std::string& name, std::string* error) {
  sqlite3_stmt* stmt = nullptr;
  const char* sql =
      "SELECT outcome, attempts, duration_ms, runner_pid, pid, peak_rss_bytes, peak_threads,"
      " peak_maps, peak_pids, evidence, result, updated_at_ms FROM steps WHERE name = ?";
  if (sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr) != SQLITE_OK) {
    if (error) *error = std::string("state: ") + sqlite3_errmsg(db_);
    return std::nullopt;
  }
  sqlite3_bind_text(stmt, 1, name.c_str(), -1, SQLITE_TRANSIENT);
  std::optional<StepRecord> out;
  if (sqlite3_step(stmt) == SQLITE_ROW) {
    StepRecord r;
    r.name = name;
    r.outcome = text(stmt, 0);
    r.attempts = sqlite3_column_int(stmt, 1);
    r.durationMs = sqlite3_column_double(stmt, 2);
    r.runnerPid = sqlite3_column_int(stmt, 3);
    r.pid = sqlite3_column_int(stmt, 4);
    r.peaks.rssBytes = static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 5));
    r.peaks.threads = sqlite3_column_int(stmt, 6);
    r.peaks.maps = sqlite3_column_int(stmt, 7);
    r.peaks.pids = sqlite3_column_int(stmt, 8);
    r.evidenceJson = text(stmt, 9);
    if (sqlite3_column_type(stmt, 10) != SQLITE_NULL) r.resultJson = text(stmt, 10);
    r.updatedAtMs = sqlite3_column_int64(stmt, 11);
    out = std::move(r);
  }
  sqlite3_finalize(stmt);
  return out;
}

bool StepState::put(const StepRecord& r, std::string* error) {
  sqlite3_stmt* stmt = nullptr;
  const char* sql =
      "INSERT OR REPLACE INTO steps(name, outcome, attempts, duration_ms, runner_pid, pid,"
      " peak_rss_bytes, peak_threads, peak_maps, peak_pids, evidence, result, updated_at_ms)"
      " VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
  if (sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr) != SQLITE_OK) {
    if (error) *error = std::string("state: ") + sqlite3_errmsg(db_);
    return false;
  }
  sqlite3_bind_text(stmt, 1, r.name.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_text(stmt, 2, r.outcome.c_str(), -1, SQLITE_TRANSIENT);
  sqlite3_bind_int(stmt, 3, r.attempts);
  sqlite3_bind_double(stmt, 4, r.durationMs);
  sqlite3_bind_int(stmt, 5, r.runnerPid);
  sqlite3_bind_int(stmt, 6, r.pid);
  sqlite3_bind_int64(stmt, 7, static_cast<sqlite3_int64>(r.peaks.rssBytes));
  sqlite3_bind_int(stmt, 8, r.peaks.threads);
  sqlite3_bind_int(stmt, 9, r.peaks.maps);
  sqlite3_bind_int(stmt, 10, r.peaks.pids);
  sqlite3_bind_text(stmt, 11, r.evidenceJson.c_str(), -1, SQLITE_TRANSIENT);
  if (r.resultJson) {
    sqlite3_bind_text(stmt, 12, r.resultJson->c_str(), -1, SQLITE_TRANSIENT);
  } else {
    sqlite3_bind_null(stmt, 12);
  }
  sqlite3_bind_int64(stmt, 13, r.updatedAtMs);
  const bool ok = sqlite3_step(stmt) == SQLITE_DONE;
  if (!ok && error) *error = std::string("state: ") + sqlite3_errmsg(db_);
  sqlite3_finalize(stmt);
  return ok;
}

}  // namespace bulkhead::run
