#include "jobs/jobs_service.h"

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "jobs/foreign_jobs.h"
#include "jobs/report_json.h"
#include "os/memfd.h"
#include "runtime/operator_log.h"

namespace bulkhead::jobs {

namespace {
constexpr std::size_t kUnjournaledKept = 10000;
constexpr auto kJournalLogEvery = std::chrono::seconds(10);

SubmitError error(SubmitError::Kind kind, const SubmitRequest& request) {
  SubmitError e;
  e.kind = kind;
  e.pool = request.pool;
  return e;
}
}  // namespace

JobsService::JobsService(PoolRunner& runner, Timers& timers,
                         std::unique_ptr<journal::Journal> journal)
    : runner_(runner), timers_(timers), journal_(std::move(journal)) {
  if (!journal_) return;
  auto last = journal_->maxId();
  if (!last) throw std::runtime_error(last.error().message);
  runner_.startJobIdsAfter(*last);
}

JobsService::~JobsService() {
  foreign_.reset();
  for (auto& [id, waiters] : waiters_) {
    for (auto& w : waiters) timers_.cancelTimer(w.timer);
  }
}

// The one place a submission is refused, in the order callers have always seen.
std::optional<SubmitError> JobsService::refusal(const SubmitRequest& request, bool async) const {
  if (runner_.shuttingDown()) return error(SubmitError::Kind::kShuttingDown, request);
  if (request.invalid) {
    SubmitError e = error(SubmitError::Kind::kInvalid, request);
    e.detail = *request.invalid;
    return e;
  }
  if (!runner_.hasPool(request.pool)) return error(SubmitError::Kind::kUnknownPool, request);
  if (auto why = runner_.unreachable(request.pool)) {
    SubmitError e = error(SubmitError::Kind::kClusterUnavailable, request);
    e.detail = *why;
    return e;
  }
  const std::uint64_t limit = runner_.maxPayload(request.pool);
  if (request.payload->size() > limit) {
    SubmitError e = error(SubmitError::Kind::kPayloadTooLarge, request);
    e.payloadBytes = request.payload->size();
    e.maxPayload = limit;
    return e;
  }
  if (async && !journal_) return error(SubmitError::Kind::kAsyncNeedsJournal, request);
  return std::nullopt;
}

RunOptions JobsService::optionsFor(const SubmitRequest& request, bool async) const {
  RunOptions options;
  options.timeout = request.timeout;
  // The caller's whole budget starts now, when the request has been read.
  if (request.budget) options.deadline = timers_.now() + *request.budget;
  options.async = async;
  options.allowPoison = request.allowPoison;
  return options;
}

std::optional<SubmitError> JobsService::submit(SubmitRequest request, ReportCallback done) {
  if (auto refused = refusal(request, false)) return refused;
  const core::JobId id = runner_.reserveJobId();
  auto refused = runner_.submitWithId(
      id, request.pool, request.payload, optionsFor(request, false),
      [this, done = std::move(done)](const core::JobReport& report) {
        recent_.add(report, timers_.now(), false);
        if (journal_ && report.outcome != core::Outcome::kOk) {
          if (auto kept = journal_->record(report.jobId, report.pool, finishedJobFrom(report));
              !kept) {
            journalFailed("record a failed sync job", kept.error());  // the answer stands
          }
        }
        done(report);
      });
  if (!refused) return std::nullopt;
  // Only an id clash can get here (the checks above ran on the same state); answer it rather
  // than leave the caller waiting for a reply that will not come.
  switch (*refused) {
    case RunnerRefusal::kUnknownPool:
      return error(SubmitError::Kind::kUnknownPool, request);
    case RunnerRefusal::kPayloadTooLarge: {
      SubmitError e = error(SubmitError::Kind::kPayloadTooLarge, request);
      e.payloadBytes = request.payload->size();
      e.maxPayload = runner_.maxPayload(request.pool);
      return e;
    }
    case RunnerRefusal::kClusterUnavailable: {  // Redis went away since the check above
      SubmitError e = error(SubmitError::Kind::kClusterUnavailable, request);
      e.detail = runner_.unreachable(request.pool).value_or("Redis is not reachable");
      return e;
    }
    case RunnerRefusal::kDuplicateId:
      break;
  }
  return error(SubmitError::Kind::kDuplicateId, request);
}

std::variant<Accepted, SubmitError> JobsService::submitAsync(SubmitRequest request) {
  if (auto refused = refusal(request, true)) return *refused;
  if (!request.idempotencyKey.empty()) {
    auto existing = journal_->findByIdempotencyKey(request.idempotencyKey);
    if (!existing) {
      journalFailed("look up an idempotency key", existing.error());
      return error(SubmitError::Kind::kJournalUnavailable, request);
    }
    if (*existing) {
      return Accepted{**existing, request.pool, true,
                      runner_.jobState(**existing).value_or("finished")};
    }
  }
  return admit(request, runner_.reserveJobId(), true);
}

void JobsService::submitAsync(SubmitRequest request, AcceptCallback done) {
  if (!shared_) return done(submitAsync(std::move(request)));
  if (auto refused = refusal(request, true)) return done(*refused);
  if (request.idempotencyKey.empty()) {
    // Answered once the other nodes can find the job: a caller may ask any node for it next.
    // The record is written later, on the event loop, so the answer is in place by then.
    auto answer = std::make_shared<std::variant<Accepted, SubmitError>>();
    auto recorded = [life = std::weak_ptr<int>(life_), answer, done] {
      if (life.lock()) done(*answer);
    };
    *answer = admit(request, runner_.reserveJobId(), true, std::move(recorded));
    if (std::holds_alternative<SubmitError>(*answer)) done(*answer);  // nothing was recorded
    return;
  }
  // A key this node gave out answers without Redis, as it always did.
  auto existing = journal_->findByIdempotencyKey(request.idempotencyKey);
  if (!existing) {
    journalFailed("look up an idempotency key", existing.error());
    return done(error(SubmitError::Kind::kJournalUnavailable, request));
  }
  if (*existing) {
    return done(Accepted{**existing, request.pool, true,
                         runner_.jobState(**existing).value_or("finished")});
  }
  // Another node may hold the key: asked first, so two nodes never both start a job for it.
  if (!shared_->connected()) return done(error(SubmitError::Kind::kKeyUnchecked, request));
  const core::JobId id = runner_.reserveJobId();
  const std::string key = request.idempotencyKey, pool = request.pool;
  shared_->claimKey(key, id, pool,
                    [this, life = std::weak_ptr<int>(life_), request = std::move(request), id,
                     done = std::move(done)](std::optional<SharedClaim> claim) mutable {
                      if (!life.lock()) return;
                      claimed(std::move(request), id, std::move(claim), done);
                    });
}

void JobsService::claimed(SubmitRequest request, core::JobId id, std::optional<SharedClaim> claim,
                          const AcceptCallback& done) {
  if (!claim) return done(error(SubmitError::Kind::kKeyUnchecked, request));
  if (claim->holder != id) {  // an earlier job, perhaps of another node
    const bool ended = claim->record && claim->record->finished;
    return done(Accepted{claim->holder, request.pool, true,
                         runner_.jobState(claim->holder).value_or(ended ? "finished" : "queued")});
  }
  // Things may have changed during the round trip (a shutdown began, the pool went away).
  auto answer = refusal(request, true);
  if (!answer) {
    auto admitted = admit(request, id, false);  // the claim recorded it as accepted
    if (std::holds_alternative<Accepted>(admitted)) return done(std::move(admitted));
    answer = std::get<SubmitError>(admitted);
  }
  shared_->releaseKey(request.idempotencyKey, id);
  done(*answer);
}

// Journals job `id` and starts it; `share`: records it for the other nodes first (before it
// starts: a job that ends at once must not have its outcome overwritten by its acceptance),
// calling `recorded` once the record is written.
std::variant<Accepted, SubmitError> JobsService::admit(const SubmitRequest& request, core::JobId id,
                                                       bool share, std::function<void()> recorded) {
  const RunOptions options = optionsFor(request, true);
  journal::JobRow row;
  row.id = id;
  row.pool = request.pool;
  auto bytes = os::blobBytes(*request.payload);  // a memfd payload is read into the row
  if (!bytes) {
    journalFailed("read an async job's payload",
                  journal::JournalError{journal::JournalError::Kind::kIo,
                                        std::string("memfd read: ") + std::strerror(errno)});
    return error(SubmitError::Kind::kJournalUnavailable, request);
  }
  row.payload = std::move(*bytes);
  row.timeoutMs =
      options.timeout
          ? std::chrono::duration_cast<std::chrono::milliseconds>(*options.timeout).count()
          : 0;
  row.allowPoison = options.allowPoison;
  row.idempotencyKey = request.idempotencyKey;
  row.runs = 1;
  // Durable before the caller hears 202, in one commit.
  if (auto inserted = journal_->insert(row); !inserted) {
    journalFailed("accept an async job", inserted.error());
    return error(SubmitError::Kind::kJournalUnavailable, request);
  }
  if (shared_ && share) shared_->accepted(id, request.pool, std::move(recorded));
  start(id, request.pool, request.payload, options);
  return Accepted{id, request.pool, false, runner_.jobState(id).value_or("finished")};
}

std::size_t JobsService::recover() {
  if (!journal_) return 0;
  auto rows = journal_->unfinished();
  if (!rows) {
    journalFailed("read the unfinished jobs", rows.error());
    return 0;
  }
  for (auto& row : *rows) {
    RunOptions options;
    options.async = true;
    if (row.timeoutMs > 0) options.timeout = std::chrono::milliseconds(row.timeoutMs);
    options.allowPoison = row.allowPoison;
    // One more submission: the job outlived a supervisor.
    if (auto counted = journal_->markStarted(row.id); !counted) {
      journalFailed("count a recovered run", counted.error());
    }
    if (shared_) shared_->accepted(row.id, row.pool, {});  // its record may not have been written
    start(row.id, row.pool, core::makePayload(std::move(row.payload)), options);
  }
  return rows->size();
}

void JobsService::start(core::JobId id, const std::string& pool, core::Payload payload,
                        const RunOptions& options) {
  auto refused =
      runner_.submitWithId(id, pool, std::move(payload), options,
                           [this, id](const core::JobReport& report) { finished(id, report); });
  if (!refused) return;
  // The pool disappeared from the config since the job was accepted (or its payload no longer
  // fits, or the id is taken): end it for good. The detail is the one this answer has always had.
  core::JobReport report;
  report.jobId = id;
  report.pool = pool;
  report.outcome = core::Outcome::kUnavailable;
  report.detail = *refused == RunnerRefusal::kClusterUnavailable
                      ? "pool '" + pool + "' runs on other nodes and Redis is not reachable"
                      : "pool '" + pool + "' no longer exists";
  finished(id, report);
}

void JobsService::finished(core::JobId id, const core::JobReport& report) {
  recent_.add(report, timers_.now(), true);
  std::optional<int> runs;
  auto stored = journal_->finish(id, finishedJobFrom(report));
  if (stored) {
    auto row = journal_->find(id);  // for the run count, as a later get() answers
    if (!row)
      stored = row.error();
    else if (*row)
      runs = (*row)->runs;
  }
  if (shared_) shared_->finished(report, runs);
  if (!stored) {
    journalFailed("store an outcome", stored.error());
    // Its caller still gets it (now, or from a later get() of this process); it runs again after
    // a restart, as any job without a stored outcome does.
    unjournaled_.insert_or_assign(id, report);
    if (unjournaled_.size() > kUnjournaledKept) unjournaled_.erase(unjournaled_.begin());
  }
  auto it = waiters_.find(id);
  if (it == waiters_.end()) return;
  auto waiters = std::move(it->second);
  waiters_.erase(it);
  for (auto& w : waiters) {
    timers_.cancelTimer(w.timer);
    w.answer(Finished{report, runs});
  }
}

Pending JobsService::pending(core::JobId id) const {
  return Pending{id, runner_.jobState(id).value_or("queued")};
}

void JobsService::get(core::JobId id, core::Duration wait, AnswerCallback answer) {
  if (auto kept = unjournaled_.find(id); kept != unjournaled_.end()) {
    return answer(Finished{kept->second, std::nullopt});
  }
  if (!journal_) return answer(LookupError::kUnknownJob);
  auto row = journal_->find(id);
  if (!row) {
    journalFailed("read a job", row.error());
    return answer(LookupError::kJournalUnavailable);
  }
  if (!*row) {
    if (shared_ && shared_->foreign(id)) return foreign_->get(id, wait, std::move(answer));
    return answer(LookupError::kUnknownJob);
  }
  if ((*row)->finished) {
    auto report = reportFromRow(**row);
    if (!report) {
      journalFailed("read a job", {journal::JournalError::Kind::kIo,
                                   "journal " + journal_->path() + ": job " + std::to_string(id) +
                                       " has an unreadable report"});
      return answer(LookupError::kJournalUnavailable);
    }
    return answer(Finished{std::move(*report), (*row)->runs});
  }
  if (wait.count() <= 0) return answer(pending(id));
  const std::uint64_t ticket = nextTicket_++;
  const Timers::TimerId timer =
      timers_.startTimer(wait, [this, id, ticket] { waitExpired(id, ticket); });
  waiters_[id].push_back({ticket, timer, std::move(answer)});
}

void JobsService::waitExpired(core::JobId id, std::uint64_t ticket) {
  auto it = waiters_.find(id);
  if (it == waiters_.end()) return;
  auto& list = it->second;
  for (auto w = list.begin(); w != list.end(); ++w) {
    if (w->ticket != ticket) continue;
    AnswerCallback answer = std::move(w->answer);
    list.erase(w);
    if (list.empty()) waiters_.erase(it);
    answer(pending(id));
    return;
  }
}

CancelAnswer JobsService::cancel(core::JobId id) {
  if (auto kept = unjournaled_.find(id); kept != unjournaled_.end()) {
    return AlreadyFinished{id, std::string(core::outcomeName(kept->second.outcome))};
  }
  if (!journal_) return LookupError::kUnknownJob;
  auto row = journal_->find(id);
  if (!row) {
    journalFailed("read a job", row.error());
    return LookupError::kJournalUnavailable;
  }
  if (!*row) return LookupError::kUnknownJob;
  if ((*row)->finished) return AlreadyFinished{id, (*row)->outcome};
  runner_.cancel(id);
  return Cancelling{id};
}

void JobsService::cancel(core::JobId id, CancelCallback done) {
  if (foreignHere(id)) return foreign_->cancel(id, std::move(done));
  done(cancel(id));
}

bool JobsService::foreignHere(core::JobId id) {
  if (!shared_ || !shared_->foreign(id) || unjournaled_.count(id) || !journal_) return false;
  auto row = journal_->find(id);
  return row && !*row;  // a journal that cannot be read is answered by cancel(id)
}

void JobsService::shareWith(SharedJobs& shared) {
  shared_ = &shared;
  foreign_ = std::make_unique<ForeignJobs>(shared, timers_);
}

void JobsService::journalFailed(const char* doing, const journal::JournalError& error) {
  journalErrors_++;
  // A full disk fails every write: one line now, then one every 10 s with the count.
  const core::Time t = timers_.now();
  if (lastJournalLog_ && t - *lastJournalLog_ < kJournalLogEvery) return;
  lastJournalLog_ = t;
  const std::uint64_t since = journalErrors_ - journalErrorsLogged_;
  journalErrorsLogged_ = journalErrors_;
  runtime::logAt(runtime::LogLevel::kError,
                 std::string("journal trouble: cannot ") + doing + ": " + error.message + " (" +
                     std::to_string(since) +
                     " failure(s) since the last report; async submits answer 503 "
                     "journal_unavailable, sync jobs go on)",
                 {{"event", "journal_error"}, {"errors_total", journalErrors_}});
}

}  // namespace bulkhead::jobs
