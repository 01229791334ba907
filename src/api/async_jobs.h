#pragma once
// Async jobs: accepted into the journal before the 202, answered later through GET /v1/jobs/{id}
// (long poll), cancellable, and re-run after a supervisor restart. Also records failed sync jobs.

#include <boost/asio.hpp>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "api/routes.h"
#include "journal/journal.h"
#include "runtime/supervisor.h"

namespace bulkhead::api {

class AsyncJobs {
 public:
  AsyncJobs(boost::asio::io_context& io, runtime::Supervisor& supervisor,
            std::unique_ptr<journal::Journal> journal);

  // Re-submits every journaled job without an outcome; returns how many.
  std::size_t recover();

  // POST ?wait=0. Responds 202 (or a problem).
  void submit(unsigned version, const std::string& pool, core::Payload payload,
              runtime::JobOptions options, const std::string& idempotencyKey,
              const Respond& respond);
  // GET /v1/jobs/{id}?wait=...
  void get(unsigned version, std::uint64_t id, core::Duration wait, Respond respond);
  // DELETE /v1/jobs/{id}
  void cancel(unsigned version, std::uint64_t id, const Respond& respond);
  // A sync job ended: keep its record when it failed.
  void recordSync(const core::JobReport& report);
  // Journal writes or reads that failed (disk full, I/O error): the daemon degrades instead of
  // dying. Async submits answer 503 journal_unavailable; sync jobs go on; outcomes that could not
  // be written are kept in memory (bounded) so their callers still get them.
  std::uint64_t journalErrors() const { return journalErrors_; }

 private:
  struct Waiter {
    std::shared_ptr<boost::asio::steady_timer> timer;
    Respond respond;
    unsigned version;
  };

  void start(std::uint64_t id, const std::string& pool, core::Payload payload,
             runtime::JobOptions options);
  void finished(std::uint64_t id, const core::JobReport& report);
  Response pendingResponse(unsigned version, std::uint64_t id) const;
  void journalFailed(const char* doing, const journal::JournalError& error);
  // False (logged, counted) when the journal cannot be read; row is nullopt for an unknown id.
  bool readRow(std::uint64_t id, std::optional<journal::JobRow>& row);
  Response journalUnavailable(unsigned version) const;

  boost::asio::io_context& io_;
  runtime::Supervisor& supervisor_;
  std::unique_ptr<journal::Journal> journal_;
  std::map<std::uint64_t, std::vector<Waiter>> waiters_;
  std::map<std::uint64_t, core::JobReport> unjournaled_;  // outcomes the journal refused
  std::uint64_t journalErrors_ = 0;
  std::uint64_t journalErrorsLogged_ = 0;
  std::optional<std::chrono::steady_clock::time_point> lastJournalLog_;
};

}  // namespace bulkhead::api
