#include "jobs/report_json.h"

#include <gtest/gtest.h>

namespace bulkhead::jobs {
namespace {

core::AttemptRecord fullAttempt(int number) {
  core::AttemptRecord a;
  a.number = number;
  a.worker = "p-" + std::to_string(number);
  a.pid = 4000 + number;
  a.outcome = core::Outcome::kOomKilled;
  a.cause = "memory";
  a.runMs = 12.345678;
  a.limit = "memory";
  a.limitValue = 1 << 20;
  a.exit.signal = 9;
  a.exit.exitCode = std::nullopt;
  a.exit.coreDumped = true;
  a.exit.stderrTail = "err";
  a.exit.stderrDroppedBytes = 17;
  a.exit.stdoutTail = "out";
  a.exit.stacks = "Fatal Python error";
  a.exit.oomKilled = true;
  a.exit.memoryPeakBytes = 0;
  a.exit.pidsMaxEvents = 3;
  a.error = core::ErrorInfo{"ValueError", "bad", "Traceback"};
  core::ResourceSample s;
  s.rssBytes = 123456789;
  s.threads = 4;
  s.maps = -1;
  s.fds = 9;
  s.cpuSeconds = 0.25;
  s.pidsMaxEvents = 2;
  a.lastSample = s;
  return a;
}

core::JobReport fullReport() {
  core::JobReport r;
  r.jobId = 18446744073709551615ull;
  r.pool = "gpu";
  r.outcome = core::Outcome::kUnavailable;
  r.detail = "no worker can start";
  r.attempts = {fullAttempt(1), fullAttempt(2)};
  r.resultKind = core::ResultKind::kText;
  r.worker = "gpu-3";
  r.queueMs = 1.5;
  r.runMs = 2.25;
  r.totalMs = 3.125;
  r.retryAfterSeconds = 7.5;
  r.queueFull = true;
  r.breakerOpen = true;
  r.fingerprint = "sha256:abc";
  r.quarantined = true;
  r.stage = "queued";
  r.fallbackFrom = {"a", "b"};
  r.lastStartFailure = fullAttempt(0);
  return r;
}

TEST(ReportJson, EveryFieldSurvivesTheRoundTrip) {
  const core::JobReport original = fullReport();
  const journal::FinishedJob stored = finishedJobFrom(original);
  EXPECT_EQ(stored.outcome, "unavailable");
  auto back = reportFromJson(stored.report, stored.result);
  ASSERT_TRUE(back);
  EXPECT_EQ(reportToJson(*back), reportToJson(original));
  EXPECT_EQ(back->jobId, original.jobId) << "ids use all 64 bits";
  EXPECT_EQ(back->attempts.at(1).exit.signal, 9);
  EXPECT_FALSE(back->attempts.at(1).exit.exitCode);
  EXPECT_TRUE(back->attempts.at(1).exit.oomKilled);
  EXPECT_EQ(back->attempts.at(1).lastSample->maps, -1);
  EXPECT_EQ(back->retryAfterSeconds, 7.5);
  EXPECT_TRUE(back->breakerOpen);
  ASSERT_TRUE(back->lastStartFailure);
  EXPECT_EQ(back->lastStartFailure->pid, 4000);
}

TEST(ReportJson, AnOkResultIsKeptAsBytesBesideTheReport) {
  core::JobReport r;
  r.jobId = 3;
  r.outcome = core::Outcome::kOk;
  r.resultKind = core::ResultKind::kJson;
  r.result = core::makePayload(std::string("\0\xff{}", 4));
  const journal::FinishedJob stored = finishedJobFrom(r);
  EXPECT_EQ(stored.result, std::string("\0\xff{}", 4));
  EXPECT_EQ(stored.report.find('\xff'), std::string::npos) << "the bytes stay out of the JSON";
  auto back = reportFromJson(stored.report, stored.result);
  ASSERT_TRUE(back && back->result);
  EXPECT_EQ(back->result->bytes(), std::string("\0\xff{}", 4));
  EXPECT_EQ(back->resultKind, core::ResultKind::kJson);
}

TEST(ReportJson, WorkerBytesThatAreNotUtf8AreReplacedNotRefused) {
  core::JobReport r = fullReport();
  r.attempts[0].exit.stderrTail = "bad \xc3 byte";
  auto back = reportFromJson(finishedJobFrom(r).report);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->attempts[0].exit.stderrTail, "bad \xef\xbf\xbd byte");
}

TEST(ReportJson, WhatIsNotAReportIsNullNotAnException) {
  EXPECT_FALSE(reportFromJson("not json"));
  EXPECT_FALSE(reportFromJson("[]"));
  EXPECT_FALSE(reportFromJson(R"({"outcome":"exploded"})"));
  EXPECT_FALSE(reportFromJson(R"({"outcome":"ok","pool":5})"));
}

journal::JobRow legacyRow(int status, std::string contentType, std::string body,
                          std::string headers) {
  journal::JobRow row;
  row.finished = true;
  row.legacy =
      journal::LegacyAnswer{status, std::move(contentType), std::move(body), std::move(headers)};
  return row;
}

TEST(ReportJson, ASchemaOneOkAnswerReadsBackAsItsReport) {
  auto r = reportFromRow(legacyRow(
      200, "text/plain; charset=utf-8", "hello",
      R"({"X-Bulkhead-Attempts":"2","X-Bulkhead-Fallback-From":"a","X-Bulkhead-Job":"42",)"
      R"("X-Bulkhead-Outcome":"ok","X-Bulkhead-Pool":"b","X-Bulkhead-Queue-Ms":"1.250",)"
      R"("X-Bulkhead-Run-Ms":"2.000","X-Bulkhead-Total-Ms":"3.500","X-Bulkhead-Worker":"b-1"})"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, core::Outcome::kOk);
  EXPECT_EQ(r->jobId, 42u);
  EXPECT_EQ(r->pool, "b");
  EXPECT_EQ(r->worker, "b-1");
  EXPECT_EQ(r->attempts.size(), 2u);
  EXPECT_EQ(r->fallbackFrom, std::vector<std::string>{"a"});
  EXPECT_EQ(r->queueMs, 1.25);
  EXPECT_EQ(r->totalMs, 3.5);
  EXPECT_EQ(r->resultKind, core::ResultKind::kText);
  ASSERT_TRUE(r->result);
  EXPECT_EQ(r->result->bytes(), "hello");
}

TEST(ReportJson, ASchemaOneProblemAnswerReadsBackAsItsReport) {
  auto r = reportFromRow(legacyRow(
      429, "application/problem+json",
      R"({"type":"https://bulkhead.dev/problems/overloaded","title":"pool overloaded",)"
      R"("status":429,"detail":"queue full","outcome":"overloaded","job":"9","pool":"p",)"
      R"("attempts":[{"attempt":1,"worker":"p-1","pid":77,"outcome":"crashed","run_ms":1.5,)"
      R"("signal":"SIGSEGV","signal_number":11,"exit_code":null,"core_dumped":false,)"
      R"("stderr_tail":"boom","stderr_dropped_bytes":0,"stdout_tail":"","stacks":"",)"
      R"("memory_peak_bytes":0}],)"
      R"("timings":{"queue_ms":1,"run_ms":2,"total_ms":3},"retry_after_s":2,)"
      R"("quarantined":false})",
      R"({"X-Bulkhead-Outcome":"overloaded","X-Bulkhead-Quarantined":"1","Retry-After":"2"})"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, core::Outcome::kOverloaded);
  EXPECT_TRUE(r->queueFull) << "429 is the full-queue flavour of overloaded";
  EXPECT_TRUE(r->quarantined);
  EXPECT_EQ(r->jobId, 9u);
  EXPECT_EQ(r->retryAfterSeconds, 2.0);
  ASSERT_EQ(r->attempts.size(), 1u);
  EXPECT_EQ(r->attempts[0].exit.signal, 11);
  EXPECT_TRUE(r->attempts[0].exit.oomKilled) << "a shown peak of 0 meant an OOM kill";
  EXPECT_EQ(r->attempts[0].exit.stderrTail, "boom");
  EXPECT_FALSE(reportFromRow(legacyRow(502, "application/problem+json", "{", "{}")));
}

}  // namespace
}  // namespace bulkhead::jobs
