#include "api/async_jobs.h"

#include <nlohmann/json.hpp>

#include "api/problem.h"
#include "jobs/report_json.h"
#include "runtime/operator_log.h"

namespace bulkhead::api {

namespace http = boost::beast::http;
using nlohmann::json;

namespace {
constexpr std::size_t kUnjournaledKept = 10000;
}  // namespace

AsyncJobs::AsyncJobs(boost::asio::io_context& io, runtime::Supervisor& supervisor,
                     std::unique_ptr<journal::Journal> journal)
    : io_(io), supervisor_(supervisor), journal_(std::move(journal)) {
  auto last = journal_->maxId();
  if (!last) throw std::runtime_error(last.error().message);  // start-up: the daemon stops
  supervisor_.startJobIdsAfter(*last);
}

std::size_t AsyncJobs::recover() {
  auto rows = journal_->unfinished();
  if (!rows) {
    journalFailed("read the unfinished jobs", rows.error());
    return 0;
  }
  for (auto& row : *rows) {
    runtime::JobOptions options;
    options.async = true;
    if (row.timeoutMs > 0) options.timeout = std::chrono::milliseconds(row.timeoutMs);
    options.allowPoison = row.allowPoison;
    // One more submission: the job outlived a supervisor.
    if (auto marked = journal_->markStarted(row.id); !marked) {
      journalFailed("count a recovered run", marked.error());
    }
    start(row.id, row.pool, std::make_shared<const std::string>(std::move(row.payload)), options);
  }
  return rows->size();
}

void AsyncJobs::start(std::uint64_t id, const std::string& pool, core::Payload payload,
                      runtime::JobOptions options) {
  auto error =
      supervisor_.submitWithId(id, pool, std::move(payload), options,
                               [this, id](const core::JobReport& report) { finished(id, report); });
  if (error) {
    // The pool disappeared from the config since the job was accepted: end it for good.
    core::JobReport report;
    report.jobId = id;
    report.pool = pool;
    report.outcome = core::Outcome::kUnavailable;
    report.detail = "pool '" + pool + "' no longer exists";
    finished(id, report);
  }
}

void AsyncJobs::submit(unsigned version, const std::string& pool, core::Payload payload,
                       runtime::JobOptions options, const std::string& idempotencyKey,
                       const Respond& respond) {
  auto accepted = [&](std::uint64_t id, bool duplicate) {
    json body = {{"job", std::to_string(id)}, {"pool", pool}, {"duplicate", duplicate}};
    auto state = supervisor_.jobState(id);
    body["state"] = state ? *state : "finished";
    Response res = jsonResponse(version, 202, body);
    res.set(http::field::location, "/v1/jobs/" + std::to_string(id));
    res.set("X-Bulkhead-Job", std::to_string(id));
    respond(std::move(res));
  };
  if (!idempotencyKey.empty()) {
    auto existing = journal_->findByIdempotencyKey(idempotencyKey);
    if (!existing) {
      journalFailed("look up an idempotency key", existing.error());
      return respond(journalUnavailable(version));
    }
    if (*existing) return accepted(**existing, true);
  }
  const std::uint64_t id = supervisor_.reserveJobId();
  journal::JobRow row;
  row.id = id;
  row.pool = pool;
  row.payload = *payload;
  row.timeoutMs =
      options.timeout
          ? std::chrono::duration_cast<std::chrono::milliseconds>(*options.timeout).count()
          : 0;
  row.allowPoison = options.allowPoison;
  row.idempotencyKey = idempotencyKey;
  row.runs = 1;
  // Durable before the caller hears 202, in one commit.
  if (auto inserted = journal_->insert(row); !inserted) {
    journalFailed("accept an async job", inserted.error());
    return respond(journalUnavailable(version));
  }
  start(id, pool, std::move(payload), options);
  accepted(id, false);
}

Response AsyncJobs::pendingResponse(unsigned version, std::uint64_t id) const {
  auto state = supervisor_.jobState(id);
  Response res = jsonResponse(version, 202,
                              {{"job", std::to_string(id)}, {"state", state ? *state : "queued"}});
  res.set("X-Bulkhead-Job", std::to_string(id));
  return res;
}

void AsyncJobs::get(unsigned version, std::uint64_t id, core::Duration wait, Respond respond) {
  if (auto kept = unjournaled_.find(id); kept != unjournaled_.end()) {
    return respond(responseFor(version, kept->second));
  }
  std::optional<journal::JobRow> row;
  if (!readRow(id, row)) return respond(journalUnavailable(version));
  if (!row) {
    return respond(problemResponse(version, 404,
                                   apiProblem(404, "unknown_job", "no job " + std::to_string(id))));
  }
  if (row->finished) {
    auto report = jobs::reportFromRow(*row);
    if (!report) return respond(journalUnavailable(version));
    Response res = responseFor(version, *report);
    res.set("X-Bulkhead-Runs", std::to_string(row->runs));
    return respond(std::move(res));
  }
  if (wait.count() <= 0) return respond(pendingResponse(version, id));
  auto timer = std::make_shared<boost::asio::steady_timer>(io_, wait);
  waiters_[id].push_back({timer, std::move(respond), version});
  timer->async_wait([this, id, timer](const boost::system::error_code& ec) {
    if (ec) return;  // answered by finished()
    auto it = waiters_.find(id);
    if (it == waiters_.end()) return;
    auto& list = it->second;
    for (auto w = list.begin(); w != list.end(); ++w) {
      if (w->timer != timer) continue;
      Respond respond = std::move(w->respond);
      unsigned version = w->version;
      list.erase(w);
      if (list.empty()) waiters_.erase(it);
      respond(pendingResponse(version, id));
      return;
    }
  });
}

void AsyncJobs::cancel(unsigned version, std::uint64_t id, const Respond& respond) {
  if (auto kept = unjournaled_.find(id); kept != unjournaled_.end()) {
    return respond(
        problemResponse(version, 409,
                        apiProblem(409, "already_finished",
                                   "job " + std::to_string(id) + " already ended as " +
                                       std::string(core::outcomeName(kept->second.outcome)))));
  }
  std::optional<journal::JobRow> row;
  if (!readRow(id, row)) return respond(journalUnavailable(version));
  if (!row) {
    return respond(problemResponse(version, 404,
                                   apiProblem(404, "unknown_job", "no job " + std::to_string(id))));
  }
  if (row->finished) {
    return respond(problemResponse(
        version, 409,
        apiProblem(409, "already_finished",
                   "job " + std::to_string(id) + " already ended as " + row->outcome)));
  }
  supervisor_.cancel(id);
  respond(jsonResponse(version, 202, {{"job", std::to_string(id)}, {"state", "cancelling"}}));
}

void AsyncJobs::finished(std::uint64_t id, const core::JobReport& report) {
  std::optional<journal::JobRow> row;
  auto stored = journal_->finish(id, jobs::finishedJobFrom(report));
  if (stored) {
    // For X-Bulkhead-Runs, as a later GET would answer.
    auto found = journal_->find(id);
    if (found)
      row = std::move(*found);
    else
      stored = found.error();
  }
  if (!stored) {
    journalFailed("store an outcome", stored.error());
    // Its caller still gets it (now, or from a later GET of this process); it runs again after
    // a restart, as any job without a stored outcome does.
    unjournaled_.insert_or_assign(id, report);
    if (unjournaled_.size() > kUnjournaledKept) unjournaled_.erase(unjournaled_.begin());
  }
  auto it = waiters_.find(id);
  if (it == waiters_.end()) return;
  auto waiters = std::move(it->second);
  waiters_.erase(it);
  for (auto& w : waiters) {
    w.timer->cancel();
    Response res = responseFor(w.version, report);
    if (row) res.set("X-Bulkhead-Runs", std::to_string(row->runs));
    w.respond(std::move(res));
  }
}

void AsyncJobs::recordSync(const core::JobReport& report) {
  if (report.outcome == core::Outcome::kOk) return;
  if (auto recorded = journal_->record(report.jobId, report.pool, jobs::finishedJobFrom(report));
      !recorded) {
    journalFailed("record a failed sync job", recorded.error());  // the caller's answer stands
  }
}

bool AsyncJobs::readRow(std::uint64_t id, std::optional<journal::JobRow>& row) {
  auto found = journal_->find(id);
  if (!found) {
    journalFailed("read a job", found.error());
    return false;
  }
  row = std::move(*found);
  return true;
}

void AsyncJobs::journalFailed(const char* doing, const journal::JournalError& error) {
  journalErrors_++;
  // A full disk fails every write: one line now, then one every 10 s with the count.
  const auto t = std::chrono::steady_clock::now();
  if (lastJournalLog_ && t - *lastJournalLog_ < std::chrono::seconds(10)) return;
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

Response AsyncJobs::journalUnavailable(unsigned version) const {
  Response res = problemResponse(
      version, 503,
      apiProblem(503, "journal_unavailable",
                 "the job journal cannot be written (see the daemon's log); async jobs are "
                 "refused until it can, sync jobs still run"));
  res.set(http::field::retry_after, "5");
  return res;
}

}  // namespace bulkhead::api
