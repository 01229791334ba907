#pragma once
// The durable record of jobs (SQLite, WAL). Async jobs are written before they are acknowledged
// and survive a supervisor crash: at start-up, unfinished ones run again with their ids
// (at-least-once). Sync jobs that fail are recorded too, with their evidence, so an operator
// reads crash records instead of core dumps. Synchronous = NORMAL in WAL mode: a killed
// supervisor loses no committed row; a power cut may lose the last few.
//
// Owns: the database file, its schema and the migration between schema versions. It stores what
// it is given (a job's report as JSON text, its result bytes) and does not interpret it: the
// report format belongs to src/jobs. It may not touch the supervisor, HTTP or the event loop.
//
// Error policy: only the constructor throws (the journal is configuration; a daemon that cannot
// open it does not start). Every later operation returns a typed Result: a full disk or an I/O
// error at run time is the caller's to degrade around, never an exception out of io.run().
//
// Schema 2 (PRAGMA user_version = 2) keeps each finished job as `report` (JSON) + `result`
// (BLOB). Schema 1 (user_version 0, written before the jobs service) kept the HTTP answer
// instead (http_status, content_type, body, headers); opening such a file adds the new columns
// in place, and its finished rows are returned with their recorded answer (JobRow::legacy).

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

struct sqlite3;

namespace bulkhead::journal {

inline constexpr int kSchemaVersion = 2;

struct JournalError {
  enum class Kind {
    kIo,                       // the database could not be read or written (disk full, I/O error)
    kDuplicateIdempotencyKey,  // insert: another job already holds this Idempotency-Key
  };
  Kind kind = Kind::kIo;
  std::string message;  // names the journal's path and SQLite's reason
};

// A value or the reason there is none. Only move-only in spirit: copy when you must.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}             // NOLINT: implicit, like std::expected
  Result(JournalError error) : v_(std::move(error)) {}  // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const JournalError& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, JournalError> v_;
};

struct Done {};  // the value of an operation that returns nothing but may fail
using Status = Result<Done>;

// What a schema-1 journal recorded for a finished job: the HTTP answer itself.
struct LegacyAnswer {
  int httpStatus = 0;
  std::string contentType;
  std::string body;     // the result, or the problem+json document
  std::string headers;  // JSON object of the X-Bulkhead-* (and Retry-After) headers
};

struct JobRow {
  std::uint64_t id = 0;
  std::string pool;
  std::string payload;
  std::int64_t timeoutMs = 0;  // 0: the pool's job_timeout
  bool allowPoison = false;
  std::string idempotencyKey;
  int runs = 0;  // times the job was submitted to a pool: 1, more after crash recoveries
  // Set once finished:
  bool finished = false;
  std::string outcome;
  std::string report;  // the JobReport as JSON (src/jobs/report_json.h); empty for legacy rows
  std::string result;  // an ok job's result bytes
  std::optional<LegacyAnswer> legacy;  // a row finished under schema 1
};

struct FinishedJob {
  std::string outcome;
  std::string report;  // JSON text
  std::string result;  // bytes
};

class Journal {
 public:
  // Opens (creating or migrating if needed) the database; throws std::runtime_error naming the
  // path when it cannot.
  explicit Journal(const std::string& path, std::uint64_t keepFinished = 100000);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  Status insert(const JobRow& job);
  Status markStarted(std::uint64_t id);
  Status finish(std::uint64_t id, const FinishedJob& result);
  // A finished sync job worth keeping (a failure): one row, already finished.
  Status record(std::uint64_t id, const std::string& pool, const FinishedJob& result);
  Result<std::optional<JobRow>> find(std::uint64_t id) const;
  Result<std::optional<std::uint64_t>> findByIdempotencyKey(const std::string& key) const;
  Result<std::vector<JobRow>> unfinished() const;
  Result<std::uint64_t> maxId() const;
  const std::string& path() const { return path_; }

 private:
  void migrate();  // constructor only: throws
  Status exec(const char* sql);
  Status prune();

  std::string path_;
  sqlite3* db_ = nullptr;
  std::uint64_t keepFinished_;
  std::uint64_t writesSincePrune_ = 0;
};

}  // namespace bulkhead::journal
