// Typed answers to HTTP: the one status table, and a stored job answered exactly as it was.
#include "api/job_answers.h"

#include <gtest/gtest.h>

#include "jobs/report_json.h"

namespace bulkhead::api {
namespace {

namespace http = boost::beast::http;
using nlohmann::json;

TEST(StatusTable, EveryOutcomeHasItsRowUnderItsOwnName) {
  for (core::Outcome o : core::kAllOutcomes) {
    EXPECT_EQ(statusRow(o).name, core::outcomeName(o));
  }
  core::JobReport r;
  r.outcome = core::Outcome::kOverloaded;
  EXPECT_EQ(httpStatusFor(r), 503);
  r.queueFull = true;
  EXPECT_EQ(httpStatusFor(r), 429) << "a full queue asks the caller to slow down";
}

TEST(StatusTable, ApiErrorsAnswerWithTheirRow) {
  Response res = errorAnswer(11, ApiError::kJournalUnavailable, "disk full");
  EXPECT_EQ(res.result_int(), 503u);
  EXPECT_EQ(res[http::field::retry_after], "5");
  const json body = json::parse(res.body());
  EXPECT_EQ(body["error"], "journal_unavailable");
  EXPECT_EQ(body["title"], "journal_unavailable");
  EXPECT_EQ(body["type"], "https://bulkhead.dev/problems/journal_unavailable");
  EXPECT_EQ(body["detail"], "disk full");
  EXPECT_EQ(errorAnswer(11, ApiError::kHeadersTooLarge, "x").result_int(), 431u);
  EXPECT_EQ(json::parse(errorAnswer(11, ApiError::kHeadersTooLarge, "x").body())["error"],
            "bad_request");
}

TEST(SubmitRefusal, ADuplicateIdIsA500ProblemNotASilence) {
  jobs::SubmitError e;
  e.kind = jobs::SubmitError::Kind::kDuplicateId;
  Response res = submitRefusal(11, e);
  EXPECT_EQ(res.result_int(), 500u);
  EXPECT_EQ(json::parse(res.body())["error"], "duplicate_id");
}

// What schema 1 stored for an answer: its status, content type, body and X-Bulkhead-* headers.
journal::JobRow storedBySchemaOne(const Response& answer) {
  journal::LegacyAnswer legacy;
  legacy.httpStatus = static_cast<int>(answer.result_int());
  legacy.contentType = std::string(answer[http::field::content_type]);
  legacy.body = answer.body();
  json headers = json::object();
  for (const auto& field : answer) {
    std::string name(field.name_string());
    if (name.rfind("X-Bulkhead-", 0) == 0 || name == "Retry-After") {
      headers[name] = std::string(field.value());
    }
  }
  legacy.headers = headers.dump();
  journal::JobRow row;
  row.finished = true;
  row.legacy = legacy;
  return row;
}

void expectSameAnswer(const Response& a, const Response& b) {
  EXPECT_EQ(a.result_int(), b.result_int());
  EXPECT_EQ(a.body(), b.body());
  std::map<std::string, std::string> ha, hb;
  for (const auto& f : a) ha[std::string(f.name_string())] = std::string(f.value());
  for (const auto& f : b) hb[std::string(f.name_string())] = std::string(f.value());
  EXPECT_EQ(ha, hb);
}

core::JobReport crashed() {
  core::JobReport r;
  r.jobId = 12;
  r.pool = "p";
  r.outcome = core::Outcome::kCrashed;
  r.detail = "worker died";
  core::AttemptRecord a;
  a.number = 1;
  a.worker = "p-1";
  a.pid = 99;
  a.outcome = core::Outcome::kCrashed;
  a.runMs = 3.25;
  a.exit.signal = 11;
  a.exit.stderrTail = "Segmentation fault \xc3";  // not UTF-8
  a.exit.oomKilled = true;
  core::ResourceSample s;
  s.rssBytes = 1000;
  s.maps = -1;
  a.lastSample = s;
  r.attempts = {a};
  r.queueMs = 1;
  r.runMs = 3.25;
  r.totalMs = 4.5;
  r.retryAfterSeconds = 2;
  r.quarantined = true;
  r.fingerprint = "f";
  r.lastStartFailure = a;
  return r;
}

TEST(StoredAnswers, AReportReadBackFromTheJournalAnswersTheSame) {
  const core::JobReport r = crashed();
  const journal::FinishedJob stored = jobs::finishedJobFrom(r);
  journal::JobRow row;
  row.finished = true;
  row.report = stored.report;
  row.result = stored.result;
  auto back = jobs::reportFromRow(row);
  ASSERT_TRUE(back);
  expectSameAnswer(reportAnswer(11, *back).response, reportAnswer(11, r).response);
}

TEST(StoredAnswers, ASchemaOneRowAnswersAsItDidWhenItWasWritten) {
  core::JobReport ok;
  ok.jobId = 5;
  ok.pool = "b";
  ok.worker = "b-2";
  ok.resultKind = core::ResultKind::kJson;
  ok.result = core::makePayload("{\"x\":1}");
  ok.attempts.resize(2);
  ok.fallbackFrom = {"a"};
  ok.queueMs = 0.1234;
  ok.runMs = 5;
  ok.totalMs = 5.1234;
  core::JobReport overloaded;
  overloaded.jobId = 6;
  overloaded.pool = "p";
  overloaded.outcome = core::Outcome::kOverloaded;
  overloaded.queueFull = true;
  overloaded.retryAfterSeconds = 1.5;
  overloaded.stage = "queued";
  overloaded.fallbackFrom = {"a", "b"};
  overloaded.breakerOpen = true;
  for (const core::JobReport& r : {ok, overloaded, crashed()}) {
    const Response then = reportAnswer(11, r).response;
    auto back = jobs::reportFromRow(storedBySchemaOne(then));
    ASSERT_TRUE(back) << core::outcomeName(r.outcome);
    expectSameAnswer(reportAnswer(11, *back).response, then);
  }
}

}  // namespace
}  // namespace bulkhead::api
