#include "api/async_jobs.h"

#include <nlohmann/json.hpp>

#include "api/problem.h"
#include "runtime/operator_log.h"

namespace bulkhead::api {

namespace http = boost::beast::http;
using nlohmann::json;

namespace {
constexpr std::size_t kUnjournaledKept = 10000;
}  // namespace

journal::FinishedJob finishedJobFrom(const Response& answer, const core::JobReport& report) {
  journal::FinishedJob f;
  f.outcome = std::string(core::outcomeName(report.outcome));
  f.httpStatus = static_cast<int>(answer.result_int());
  f.contentType = std::string(answer[http::field::content_type]);
  f.body = answer.body();
  json headers = json::object();
  for (const auto& field : answer) {
    std::string name(field.name_string());
    if (name.rfind("X-Bulkhead-", 0) == 0 || name == "Retry-After") {
      headers[name] = std::string(field.value());
    }
  }
  f.headers = headers.dump();
  return f;
}

Response responseFromJournal(unsigned version, const journal::FinishedJob& job) {
  Response res{static_cast<http::status>(job.httpStatus), version};
  res.set(http::field::content_type, job.contentType);
  json headers = json::parse(job.headers, nullptr, false);
  if (headers.is_object()) {
    for (const auto& [name, value] : headers.items()) {
      if (value.is_string()) res.set(name, value.get<std::string>());
    }
  }
  res.body() = job.body;
  res.prepare_payload();
  return res;
}

AsyncJobs::AsyncJobs(boost::asio::io_context& io, runtime::Supervisor& supervisor,
                     std::unique_ptr<journal::Journal> journal)
    : io_(io), supervisor_(supervisor), journal_(std::move(journal)) {
  supervisor_.startJobIdsAfter(journal_->maxId());
}

std::size_t AsyncJobs::recover() {
  auto rows = journal_->unfinished();
  for (auto& row : rows) {
    runtime::JobOptions options;
    options.async = true;
    if (row.timeoutMs > 0) options.timeout = std::chrono::milliseconds(row.timeoutMs);
    options.allowPoison = row.allowPoison;
    journal_->markStarted(row.id);  // one more submission: the job outlived a supervisor
    start(row.id, row.pool, std::make_shared<const std::string>(std::move(row.payload)), options);
  }
  return rows.size();
}

void AsyncJobs::start(std::uint64_t id, const std::string& pool, core::Payload payload,
                      runtime::JobOptions options) {
  auto error = supervisor_.submitWithId(
      id, pool, std::move(payload), options, [this, id](const core::JobReport& report) {
        finished(id, finishedJobFrom(responseFor(11, report), report));
      });
  if (error) {
    // The pool disappeared from the config since the job was accepted: end it for good.
    core::JobReport report;
    report.jobId = id;
    report.pool = pool;
    report.outcome = core::Outcome::kUnavailable;
    report.detail = "pool '" + pool + "' no longer exists";
    finished(id, finishedJobFrom(responseFor(11, report), report));
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
  try {
    if (!idempotencyKey.empty()) {
      if (auto existing = journal_->findByIdempotencyKey(idempotencyKey)) {
        return accepted(*existing, true);
      }
    }
  } catch (const std::exception& e) {
    journalFailed("look up an idempotency key", e);
    return respond(journalUnavailable(version));
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
  try {
    journal_->insert(row);  // durable before the caller hears 202, in one commit
  } catch (const std::exception& e) {
    journalFailed("accept an async job", e);
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
    return respond(responseFromJournal(version, kept->second));
  }
  std::optional<journal::JobRow> row;
  if (!readRow(id, row)) return respond(journalUnavailable(version));
  if (!row) {
    return respond(problemResponse(version, 404,
                                   apiProblem(404, "unknown_job", "no job " + std::to_string(id))));
  }
  if (row->finished) {
    Response res = responseFromJournal(
        version, {row->outcome, row->httpStatus, row->contentType, row->body, row->headers});
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
    return respond(problemResponse(
        version, 409,
        apiProblem(409, "already_finished",
                   "job " + std::to_string(id) + " already ended as " + kept->second.outcome)));
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

void AsyncJobs::finished(std::uint64_t id, const journal::FinishedJob& result) {
  std::optional<journal::JobRow> row;
  try {
    journal_->finish(id, result);
    row = journal_->find(id);  // for X-Bulkhead-Runs, as a later GET would answer
  } catch (const std::exception& e) {
    journalFailed("store an outcome", e);
    // Its caller still gets it (now, or from a later GET of this process); it runs again after
    // a restart, as any job without a stored outcome does.
    unjournaled_[id] = result;
    if (unjournaled_.size() > kUnjournaledKept) unjournaled_.erase(unjournaled_.begin());
  }
  auto it = waiters_.find(id);
  if (it == waiters_.end()) return;
  auto waiters = std::move(it->second);
  waiters_.erase(it);
  for (auto& w : waiters) {
    w.timer->cancel();
    Response res = responseFromJournal(w.version, result);
    if (row) res.set("X-Bulkhead-Runs", std::to_string(row->runs));
    w.respond(std::move(res));
  }
}

void AsyncJobs::recordSync(const core::JobReport& report, const Response& answer) {
  if (report.outcome == core::Outcome::kOk) return;
  try {
    journal_->record(report.jobId, report.pool, finishedJobFrom(answer, report));
  } catch (const std::exception& e) {
    journalFailed("record a failed sync job", e);  // the caller's answer is not affected
  }
}

bool AsyncJobs::readRow(std::uint64_t id, std::optional<journal::JobRow>& row) {
  try {
    row = journal_->find(id);
    return true;
  } catch (const std::exception& e) {
    journalFailed("read a job", e);
    return false;
  }
}

void AsyncJobs::journalFailed(const char* doing, const std::exception& error) {
  journalErrors_++;
  // A full disk fails every write: one line now, then one every 10 s with the count.
  const auto t = std::chrono::steady_clock::now();
  if (lastJournalLog_ && t - *lastJournalLog_ < std::chrono::seconds(10)) return;
  lastJournalLog_ = t;
  const std::uint64_t since = journalErrors_ - journalErrorsLogged_;
  journalErrorsLogged_ = journalErrors_;
  runtime::logAt(runtime::LogLevel::kError,
                 std::string("journal trouble: cannot ") + doing + ": " + error.what() + " (" +
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
