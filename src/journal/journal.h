#pragma once
// The durable record of jobs (SQLite, WAL). Async jobs are written before they are acknowledged
// and survive a supervisor crash: at start-up, unfinished ones run again with their ids
// (at-least-once). Sync jobs that fail are recorded too, with their evidence, so an operator
// reads crash records instead of core dumps. Synchronous = NORMAL in WAL mode: a killed
// supervisor loses no committed row; a power cut may lose the last few.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;
struct sqlite3_stmt;

namespace bulkhead::journal {

struct JobRow {
  std::uint64_t id = 0;
  std::string pool;
  std::string payload;
  std::int64_t timeoutMs = 0;  // 0: the pool's job_timeout
  bool allowPoison = false;
  std::string idempotencyKey;
  // Set once finished:
  bool finished = false;
  std::string outcome;
  int httpStatus = 0;
  std::string contentType;
  std::string body;     // the result, or the problem+json document
  std::string headers;  // JSON object of the X-Bulkhead-* headers of the answer
  int runs = 0;         // times the job was submitted to a pool: 1, more after crash recoveries
};

struct FinishedJob {
  std::string outcome;
  int httpStatus = 0;
  std::string contentType;
  std::string body;
  std::string headers;
};

class Journal {
 public:
  // Opens (creating if needed) the database; throws std::runtime_error naming the path.
  explicit Journal(const std::string& path, std::uint64_t keepFinished = 100000);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  void insert(const JobRow& job);
  void markStarted(std::uint64_t id);
  void finish(std::uint64_t id, const FinishedJob& result);
  // A finished sync job worth keeping (a failure): one row, already finished.
  void record(std::uint64_t id, const std::string& pool, const FinishedJob& result);
  std::optional<JobRow> find(std::uint64_t id) const;
  std::optional<std::uint64_t> findByIdempotencyKey(const std::string& key) const;
  std::vector<JobRow> unfinished() const;
  std::uint64_t maxId() const;

 private:
  void exec(const char* sql);
  void prune();

  std::string path_;
  sqlite3* db_ = nullptr;
  std::uint64_t keepFinished_;
  std::uint64_t writesSincePrune_ = 0;
};

}  // namespace bulkhead::journal
