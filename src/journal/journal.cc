#include "journal/journal.h"

#include <sqlite3.h>

#include <stdexcept>

namespace bulkhead::journal {

namespace {

JournalError ioError(const std::string& path, sqlite3* db) {
  return {JournalError::Kind::kIo, "journal " + path + ": " + sqlite3_errmsg(db)};
}

// One prepared statement for the duration of a call; finalized on every path. The first failure
// (prepare, bind or step) latches: later calls do nothing and error() names it.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql, const std::string& path) : db_(db), path_(path) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) fail();
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int i, std::int64_t v) {
    if (!error_) check(sqlite3_bind_int64(stmt_, i, v));
    return *this;
  }
  Statement& bind(int i, const std::string& v) {
    if (!error_) {
      check(sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    }
    return *this;
  }
  Statement& bindBlob(int i, const std::string& v) {
    if (!error_) {
      check(sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
    }
    return *this;
  }
  // True when a row is ready; false when done or failed (then error() is set).
  bool step() {
    if (error_) return false;
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) fail(rc);
    return false;
  }
  // Runs a statement that returns no rows.
  Status run() {
    step();
    if (error_) return *error_;
    return Done{};
  }
  const std::optional<JournalError>& error() const { return error_; }

  std::int64_t integer(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::string text(int col) const {
    const void* p = sqlite3_column_blob(stmt_, col);
    int n = sqlite3_column_bytes(stmt_, col);
    return p ? std::string(static_cast<const char*>(p), static_cast<std::size_t>(n))
             : std::string();
  }

 private:
  void check(int rc) {
    if (rc != SQLITE_OK) fail(rc);
  }
  void fail(int rc = SQLITE_ERROR) {
    error_ = ioError(path_, db_);
    // A UNIQUE index refused the row: the only one is on the Idempotency-Key.
    if (sqlite3_extended_errcode(db_) == SQLITE_CONSTRAINT_UNIQUE ||
        rc == SQLITE_CONSTRAINT_UNIQUE) {
      error_->kind = JournalError::Kind::kDuplicateIdempotencyKey;
    }
  }

  sqlite3* db_;
  const std::string& path_;
  sqlite3_stmt* stmt_ = nullptr;
  std::optional<JournalError> error_;
};

constexpr const char* kColumns =
    "id, pool, payload, timeout_ms, allow_poison, idempotency_key, finished, outcome, "
    "http_status, content_type, body, headers, runs, report, result";

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
  r.runs = static_cast<int>(s.integer(12));
  r.report = s.text(13);
  r.result = s.text(14);
  if (r.finished && r.report.empty()) {
    // Finished under schema 1: what was kept is the answer itself.
    r.legacy = LegacyAnswer{static_cast<int>(s.integer(8)), s.text(9), s.text(10), s.text(11)};
  }
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
  try {
    migrate();
  } catch (...) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

void Journal::migrate() {
  auto must = [this](Status done) {
    if (!done) throw std::runtime_error(done.error().message);
  };
  must(exec("PRAGMA journal_mode=WAL"));
  must(exec("PRAGMA synchronous=NORMAL"));
  int version = 0;
  {
    Statement s(db_, "PRAGMA user_version", path_);
    if (s.step()) version = static_cast<int>(s.integer(0));
    if (s.error()) throw std::runtime_error(s.error()->message);
  }
  if (version > kSchemaVersion) {
    throw std::runtime_error("journal " + path_ + " has schema " + std::to_string(version) +
                             ", written by a newer bulkhead (this one reads up to " +
                             std::to_string(kSchemaVersion) + ")");
  }
  if (version == kSchemaVersion) return;
  // Schema 1 files have the table without report/result; new files have no table yet. Both
  // reach schema 2 in one transaction, so a crash mid-way leaves the file as it was.
  must(exec("BEGIN IMMEDIATE"));
  bool hasTable = false;
  {
    Statement s(db_, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'", path_);
    hasTable = s.step();
    if (s.error()) throw std::runtime_error(s.error()->message);
  }
  auto step = [&](const char* sql) {
    if (auto done = exec(sql); !done) {
      exec("ROLLBACK");
      throw std::runtime_error(done.error().message);
    }
  };
  if (hasTable) {
    step("ALTER TABLE jobs ADD COLUMN report TEXT");
    step("ALTER TABLE jobs ADD COLUMN result BLOB");
  } else {
    // http_status .. headers are schema 1's answer columns: kept so migrated rows still read.
    step(
        "CREATE TABLE jobs ("
        " id INTEGER PRIMARY KEY, pool TEXT NOT NULL, payload BLOB, timeout_ms INTEGER DEFAULT 0,"
        " allow_poison INTEGER DEFAULT 0, idempotency_key TEXT, finished INTEGER DEFAULT 0,"
        " outcome TEXT, http_status INTEGER DEFAULT 0, content_type TEXT, body BLOB,"
        " headers TEXT, runs INTEGER DEFAULT 0, created REAL DEFAULT (julianday('now')),"
        " ended REAL, report TEXT, result BLOB)");
  }
  step(
      "CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs(idempotency_key)"
      " WHERE idempotency_key IS NOT NULL AND idempotency_key != ''");
  step("CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs(finished)");
  step("PRAGMA user_version = 2");
  step("COMMIT");
}

Journal::~Journal() {
  if (db_) sqlite3_close(db_);
}

Status Journal::exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string why = error ? error : "unknown error";
    sqlite3_free(error);
    return JournalError{JournalError::Kind::kIo, "journal " + path_ + ": " + why};
  }
  return Done{};
}

Status Journal::insert(const JobRow& job) {
  Statement s(
      db_,
      "INSERT INTO jobs (id, pool, payload, timeout_ms, allow_poison, idempotency_key, runs)"
      " VALUES (?, ?, ?, ?, ?, ?, ?)",
      path_);
  s.bind(1, static_cast<std::int64_t>(job.id)).bind(2, job.pool).bindBlob(3, job.payload);
  s.bind(4, job.timeoutMs).bind(5, job.allowPoison ? 1 : 0).bind(6, job.idempotencyKey);
  return s.bind(7, job.runs).run();
}

Status Journal::markStarted(std::uint64_t id) {
  Statement s(db_, "UPDATE jobs SET runs = runs + 1 WHERE id = ?", path_);
  return s.bind(1, static_cast<std::int64_t>(id)).run();
}

Status Journal::finish(std::uint64_t id, const FinishedJob& r) {
  // The payload is not needed once the outcome is recorded: drop it to bound the journal.
  Statement s(db_,
              "UPDATE jobs SET finished = 1, outcome = ?, report = ?, result = ?,"
              " payload = NULL, ended = julianday('now') WHERE id = ?",
              path_);
  s.bind(1, r.outcome).bind(2, r.report).bindBlob(3, r.result);
  auto done = s.bind(4, static_cast<std::int64_t>(id)).run();
  if (!done) return done;
  return ++writesSincePrune_ >= 1000 ? prune() : done;
}

Status Journal::record(std::uint64_t id, const std::string& pool, const FinishedJob& r) {
  Statement s(db_,
              "INSERT OR REPLACE INTO jobs (id, pool, finished, outcome, report, result, runs,"
              " ended) VALUES (?, ?, 1, ?, ?, ?, 1, julianday('now'))",
              path_);
  s.bind(1, static_cast<std::int64_t>(id)).bind(2, pool).bind(3, r.outcome);
  auto done = s.bind(4, r.report).bindBlob(5, r.result).run();
  if (!done) return done;
  return ++writesSincePrune_ >= 1000 ? prune() : done;
}

Status Journal::prune() {
  writesSincePrune_ = 0;
  Statement s(db_,
              "DELETE FROM jobs WHERE finished = 1 AND id NOT IN"
              " (SELECT id FROM jobs WHERE finished = 1 ORDER BY id DESC LIMIT ?)",
              path_);
  return s.bind(1, static_cast<std::int64_t>(keepFinished_)).run();
}

Result<std::optional<JobRow>> Journal::find(std::uint64_t id) const {
  std::string sql = std::string("SELECT ") + kColumns + " FROM jobs WHERE id = ?";
  Statement s(db_, sql.c_str(), path_);
  s.bind(1, static_cast<std::int64_t>(id));
  if (s.step()) return std::optional<JobRow>(readRow(s));
  if (s.error()) return *s.error();
  return std::optional<JobRow>();
}

Result<std::optional<std::uint64_t>> Journal::findByIdempotencyKey(const std::string& key) const {
  Statement s(db_, "SELECT id FROM jobs WHERE idempotency_key = ?", path_);
  s.bind(1, key);
  if (s.step()) return std::optional<std::uint64_t>(static_cast<std::uint64_t>(s.integer(0)));
  if (s.error()) return *s.error();
  return std::optional<std::uint64_t>();
}

Result<std::vector<JobRow>> Journal::unfinished() const {
  std::string sql = std::string("SELECT ") + kColumns + " FROM jobs WHERE finished = 0 ORDER BY id";
  Statement s(db_, sql.c_str(), path_);
  std::vector<JobRow> rows;
  while (s.step()) rows.push_back(readRow(s));
  if (s.error()) return *s.error();
  return rows;
}

Result<std::uint64_t> Journal::maxId() const {
  Statement s(db_, "SELECT COALESCE(MAX(id), 0) FROM jobs", path_);
  if (s.step()) return static_cast<std::uint64_t>(s.integer(0));
  if (s.error()) return *s.error();
  return std::uint64_t{0};
}

}  // namespace bulkhead::journal
