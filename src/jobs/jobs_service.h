#pragma once
// The jobs service: what a caller can do with jobs (submit and wait, submit and come back, look
// up, cancel) and what happens to journaled jobs across a restart (recover). It sits between the
// API, which parses requests into these calls and translates their typed answers, and the pools
// (PoolRunner). Every refusal is decided here, once, in a fixed order; the API repeats none.
//
// Owns: the submit checks and their order, job ids for the jobs it starts, the journal (optional:
// without one there are no async jobs) and what is written to it (a JobReport, never an HTTP
// answer), long-poll waiters and their timers, degraded operation when the journal fails (counted,
// logged at most every 10 s, outcomes kept in memory so their callers still get them), and the
// log of recent outcomes (sync and async) that GET /v1/outcomes and the dashboard read.
// With [cluster] it also shares async jobs through SharedJobs (shared_jobs.h): the jobs it accepts
// and their outcomes are recorded for the other nodes, an Idempotency-Key holds across the cluster,
// and another node's job ids are looked up and cancelled there (foreign_jobs.h).
// It may not: touch HTTP, sockets, Redis or the real clock (Timers gives time), or decide how a
// job runs (the pools do).

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "jobs/pool_runner.h"
#include "jobs/recent_outcomes.h"
#include "jobs/shared_jobs.h"
#include "journal/journal.h"

namespace bulkhead::jobs {

struct SubmitRequest {
  std::string pool;
  core::Payload payload;
  std::optional<core::Duration> timeout;  // X-Bulkhead-Timeout
  std::optional<core::Duration> budget;   // X-Bulkhead-Deadline: the whole job, from submission
  bool allowPoison = false;
  std::string idempotencyKey;  // async only
  // Set when the request could not be parsed (a malformed header): refused as kInvalid with this
  // detail, but only after the shutting-down check, as it always was.
  std::optional<std::string> invalid;
};

struct SubmitError {
  enum class Kind {
    kShuttingDown,
    kInvalid,
    kUnknownPool,
    kPayloadTooLarge,
    kAsyncNeedsJournal,
    kJournalUnavailable,
    kDuplicateId,         // the pools already hold a job with the id chosen: a bug, never a hang
    kClusterUnavailable,  // [cluster]: the job needs another node and Redis is away
    kKeyUnchecked,        // [cluster]: an Idempotency-Key cannot be checked, Redis is away
  };
  Kind kind = Kind::kInvalid;
  std::string pool;
  std::string detail;              // kInvalid, kClusterUnavailable
  std::uint64_t payloadBytes = 0;  // kPayloadTooLarge
  std::uint64_t maxPayload = 0;    // kPayloadTooLarge
};

struct Accepted {
  core::JobId id = 0;
  std::string pool;
  bool duplicate = false;  // an earlier job with the same Idempotency-Key
  std::string state;       // "queued", "running", ... or "finished"
};

struct Finished {
  core::JobReport report;
  std::optional<int> runs;  // times it was submitted, as the journal counted them
};

struct Pending {
  core::JobId id = 0;
  std::string state;  // "queued" when the pools no longer (or not yet) know it
};

// kClusterUnavailable: the id is another node's, and Redis cannot be reached to ask.
enum class LookupError { kUnknownJob, kJournalUnavailable, kClusterUnavailable };

using JobAnswer = std::variant<Finished, Pending, LookupError>;

struct Cancelling {
  core::JobId id = 0;
};
struct AlreadyFinished {
  core::JobId id = 0;
  std::string outcome;
};
using CancelAnswer = std::variant<Cancelling, AlreadyFinished, LookupError>;

class ForeignJobs;

class JobsService {
 public:
  using ReportCallback = std::function<void(const core::JobReport&)>;
  using AnswerCallback = std::function<void(JobAnswer)>;
  using AcceptCallback = std::function<void(std::variant<Accepted, SubmitError>)>;
  using CancelCallback = std::function<void(CancelAnswer)>;

  // With a journal, job ids continue after the largest it holds; throws std::runtime_error when
  // the journal cannot be read (start-up: the daemon does not start).
  JobsService(PoolRunner& runner, Timers& timers, std::unique_ptr<journal::Journal> journal);
  ~JobsService();
  JobsService(const JobsService&) = delete;
  JobsService& operator=(const JobsService&) = delete;

  bool journaled() const { return journal_ != nullptr; }
  // [cluster]: shares async jobs with the other nodes from now on (it must outlive this).
  void shareWith(SharedJobs& shared);

  // Runs a job and calls done with its report (perhaps before returning); or refuses it, and
  // then done is never called. A failed job is recorded in the journal, when there is one.
  std::optional<SubmitError> submit(SubmitRequest request, ReportCallback done);
  // Accepts a job into the journal before it starts; its report is kept for get().
  std::variant<Accepted, SubmitError> submitAsync(SubmitRequest request);
  // The same, and with [cluster] an Idempotency-Key is checked across the cluster first (so the
  // answer may come after a round trip to Redis).
  void submitAsync(SubmitRequest request, AcceptCallback done);
  // The job's report once it has one; else, after waiting up to `wait` for it, where it is.
  // Another node's job is asked of the cluster.
  void get(core::JobId id, core::Duration wait, AnswerCallback answer);
  CancelAnswer cancel(core::JobId id);
  // The same, and another node's job is cancelled through the cluster.
  void cancel(core::JobId id, CancelCallback done);
  // Re-submits every journaled job without an outcome; returns how many.
  std::size_t recover();

  // Journal reads and writes that failed (disk full, I/O error) since start.
  std::uint64_t journalErrors() const { return journalErrors_; }
  // The last finished jobs, whatever their outcome, as they ended.
  const RecentOutcomes& recentOutcomes() const { return recent_; }
  core::Time now() const { return timers_.now(); }

 private:
  struct Waiter {
    std::uint64_t ticket;  // names the waiter to its timer, which is started before it is stored
    Timers::TimerId timer;
    AnswerCallback answer;
  };

  std::optional<SubmitError> refusal(const SubmitRequest& request, bool async) const;
  std::variant<Accepted, SubmitError> admit(const SubmitRequest& request, core::JobId id,
                                            bool share, std::function<void()> recorded = {});
  void claimed(SubmitRequest request, core::JobId id, std::optional<SharedClaim> claim,
               const AcceptCallback& done);
  // Whether the job is neither in this node's journal nor kept in memory, but another node's.
  bool foreignHere(core::JobId id);
  RunOptions optionsFor(const SubmitRequest& request, bool async) const;
  void start(core::JobId id, const std::string& pool, core::Payload payload,
             const RunOptions& options);
  void finished(core::JobId id, const core::JobReport& report);
  void waitExpired(core::JobId id, std::uint64_t ticket);
  Pending pending(core::JobId id) const;
  void journalFailed(const char* doing, const journal::JournalError& error);

  PoolRunner& runner_;
  Timers& timers_;
  std::unique_ptr<journal::Journal> journal_;
  std::map<core::JobId, std::vector<Waiter>> waiters_;
  std::uint64_t nextTicket_ = 1;
  std::map<core::JobId, core::JobReport> unjournaled_;  // outcomes the journal refused
  std::uint64_t journalErrors_ = 0;
  std::uint64_t journalErrorsLogged_ = 0;
  std::optional<core::Time> lastJournalLog_;
  RecentOutcomes recent_;
  SharedJobs* shared_ = nullptr;
  std::unique_ptr<ForeignJobs> foreign_;
  // Callbacks from the cluster that arrive after this service is gone find it expired.
  std::shared_ptr<int> life_ = std::make_shared<int>(0);
};

}  // namespace bulkhead::jobs
