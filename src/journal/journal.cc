#include "journal/journal.h"

#include <sqlite3.h>

#include <stdexcept>

namespace bulkhead::journal {

namespace {

// One prepared statement for the duration of a call; finalized on every path.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql, const std::string& path) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) {
      throw std::runtime_error("journal " + path + ": " + sqlite3_errmsg(db));
    }
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int i, std::int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Statement& bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& bindBlob(int i, const std::string& v) {
    sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw std::runtime_error(std::string("journal: ") + sqlite3_errmsg(db_));
  }
  std::int64_t integer(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::string text(int col) const {
    const void* p = sqlite3_column_blob(stmt_, col);
    int n = sqlite3_column_bytes(stmt_, col);
    return p ? std::string(static_cast<const char*>(p), static_cast<std::size_t>(n))
             : std::string();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

constexpr const char* kColumns =
    "id, pool, payload, timeout_ms, allow_poison, idempotency_key, finished, outcome, "
    "http_status, content_type, body, headers, runs";

JobRow readRow(const Statement& s) {
  JobRow r;
  r.id = static_cast<std::uint64_t>(s.integer(0));
  r.pool = s.text(1);
  r.payload = s.text(2);
  r.timeoutMs = s.integer(3);
  r.allowPoison = s.integer(4) != 0;
  r.idempotencyKey = s.text(5);
  r.finished = s.integer(6) != 0;
  r.outcome = s.text(7);
  r.httpStatus = static_cast<int>(s.integer(8));
  r.contentType = s.text(9);
  r.body = s.text(10);
  r.headers = s.text(11);
  r.runs = static_cast<int>(s.integer(12));
  return r;
}

}  // namespace

Journal::Journal(const std::string& path, std::uint64_t keepFinished)
    : path_(path), keepFinished_(keepFinished) {
  if (sqlite3_open_v2(path.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      nullptr) != SQLITE_OK) {
    std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw std::runtime_error("cannot open journal " + path + ": " + why);
  }
  sqlite3_busy_timeout(db_, 2000);
  exec("PRAGMA journal_mode=WAL");
  exec("PRAGMA synchronous=NORMAL");
  exec(
      "CREATE TABLE IF NOT EXISTS jobs ("
      " id INTEGER PRIMARY KEY, pool TEXT NOT NULL, payload BLOB, timeout_ms INTEGER DEFAULT 0,"
      " allow_poison INTEGER DEFAULT 0, idempotency_key TEXT, finished INTEGER DEFAULT 0,"
      " outcome TEXT, http_status INTEGER DEFAULT 0, content_type TEXT, body BLOB,"
      " headers TEXT, runs INTEGER DEFAULT 0, created REAL DEFAULT (julianday('now')),"
      " ended REAL)");
  exec(
      "CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs(idempotency_key)"
      " WHERE idempotency_key IS NOT NULL AND idempotency_key != ''");
  exec("CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs(finished)");
}

Journal::~Journal() {
  if (db_) sqlite3_close(db_);
}

void Journal::exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string why = error ? error : "unknown error";
    sqlite3_free(error);
    throw std::runtime_error("journal " + path_ + ": " + why);
  }
}

void Journal::insert(const JobRow& job) {
  Statement s(
      db_,
      "INSERT INTO jobs (id, pool, payload, timeout_ms, allow_poison, idempotency_key, runs)"
      " VALUES (?, ?, ?, ?, ?, ?, ?)",
      path_);
  s.bind(1, static_cast<std::int64_t>(job.id)).bind(2, job.pool).bindBlob(3, job.payload);
  s.bind(4, job.timeoutMs).bind(5, job.allowPoison ? 1 : 0).bind(6, job.idempotencyKey);
  s.bind(7, job.runs).step();
}

void Journal::markStarted(std::uint64_t id) {
  Statement s(db_, "UPDATE jobs SET runs = runs + 1 WHERE id = ?", path_);
  s.bind(1, static_cast<std::int64_t>(id)).step();
}

void Journal::finish(std::uint64_t id, const FinishedJob& r) {
  // The payload is not needed once the outcome is recorded: drop it to bound the journal.
  Statement s(db_,
              "UPDATE jobs SET finished = 1, outcome = ?, http_status = ?, content_type = ?,"
              " body = ?, headers = ?, payload = NULL, ended = julianday('now') WHERE id = ?",
              path_);
  s.bind(1, r.outcome).bind(2, r.httpStatus).bind(3, r.contentType).bindBlob(4, r.body);
  s.bind(5, r.headers).bind(6, static_cast<std::int64_t>(id)).step();
  if (++writesSincePrune_ >= 1000) prune();
}

void Journal::record(std::uint64_t id, const std::string& pool, const FinishedJob& r) {
  Statement s(db_,
              "INSERT OR REPLACE INTO jobs (id, pool, finished, outcome, http_status, content_type,"
              " body, headers, runs, ended) VALUES (?, ?, 1, ?, ?, ?, ?, ?, 1, julianday('now'))",
              path_);
  s.bind(1, static_cast<std::int64_t>(id)).bind(2, pool).bind(3, r.outcome);
  s.bind(4, r.httpStatus).bind(5, r.contentType).bindBlob(6, r.body).bind(7, r.headers).step();
  if (++writesSincePrune_ >= 1000) prune();
}

void Journal::prune() {
  writesSincePrune_ = 0;
  Statement s(db_,
              "DELETE FROM jobs WHERE finished = 1 AND id NOT IN"
              " (SELECT id FROM jobs WHERE finished = 1 ORDER BY id DESC LIMIT ?)",
              path_);
  s.bind(1, static_cast<std::int64_t>(keepFinished_)).step();
}

std::optional<JobRow> Journal::find(std::uint64_t id) const {
  std::string sql = std::string("SELECT ") + kColumns + " FROM jobs WHERE id = ?";
  Statement s(db_, sql.c_str(), path_);
  s.bind(1, static_cast<std::int64_t>(id));
  if (!s.step()) return std::nullopt;
  return readRow(s);
}

std::optional<std::uint64_t> Journal::findByIdempotencyKey(const std::string& key) const {
  Statement s(db_, "SELECT id FROM jobs WHERE idempotency_key = ?", path_);
  s.bind(1, key);
  if (!s.step()) return std::nullopt;
  return static_cast<std::uint64_t>(s.integer(0));
}

std::vector<JobRow> Journal::unfinished() const {
  std::string sql = std::string("SELECT ") + kColumns + " FROM jobs WHERE finished = 0 ORDER BY id";
  Statement s(db_, sql.c_str(), path_);
  std::vector<JobRow> rows;
  while (s.step()) rows.push_back(readRow(s));
  return rows;
}

std::uint64_t Journal::maxId() const {
  Statement s(db_, "SELECT COALESCE(MAX(id), 0) FROM jobs", path_);
  s.step();
  return static_cast<std::uint64_t>(s.integer(0));
}

}  // namespace bulkhead::journal
