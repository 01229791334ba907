// The job and outcome entries as Redis Streams keep them: round trips, and refusal of anything
// another process could have written wrong.
#include "cluster/job_entry.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace bulkhead::cluster {
namespace {

JobEntry sampleJob() {
  JobEntry j;
  j.origin = "gpu-a";
  j.originId = 18446744073709551615ull;
  j.pool = "faces";
  j.payload = std::string("\0\xff binary", 9);
  j.timeoutMs = 1500;
  j.deadlineUnixMs = 1796600000000;
  j.allowPoison = true;
  return j;
}

Fields without(Fields f, const std::string& name) {
  std::erase_if(f, [&](const auto& p) { return p.first == name; });
  return f;
}

Fields with(Fields f, const std::string& name, const std::string& value) {
  for (auto& [n, v] : f) {
    if (n == name) v = value;
  }
  return f;
}

TEST(JobEntry, RoundTripsEveryField) {
  const JobEntry j = sampleJob();
  auto back = decodeJob(encodeJob(j));
  ASSERT_TRUE(std::holds_alternative<JobEntry>(back)) << std::get<std::string>(back);
  const JobEntry& b = std::get<JobEntry>(back);
  EXPECT_EQ(b.origin, j.origin);
  EXPECT_EQ(b.originId, j.originId);
  EXPECT_EQ(b.pool, j.pool);
  EXPECT_EQ(b.payload, j.payload);
  EXPECT_EQ(b.timeoutMs, j.timeoutMs);
  EXPECT_EQ(b.deadlineUnixMs, j.deadlineUnixMs);
  EXPECT_TRUE(b.allowPoison);
}

TEST(JobEntry, OptionalLimitsStayUnset) {
  JobEntry j = sampleJob();
  j.timeoutMs.reset();
  j.deadlineUnixMs.reset();
  auto back = std::get<JobEntry>(decodeJob(encodeJob(j)));
  EXPECT_FALSE(back.timeoutMs);
  EXPECT_FALSE(back.deadlineUnixMs);
}

TEST(JobEntry, MalformedEntriesAreRefusedWithTheReason) {
  const Fields good = encodeJob(sampleJob());
  auto reason = [](const Fields& f) {
    auto r = decodeJob(f);
    return std::holds_alternative<std::string>(r) ? std::get<std::string>(r) : std::string();
  };
  EXPECT_EQ(reason(without(good, "payload")), "missing field 'payload'");
  EXPECT_EQ(reason(without(good, "v")), "missing field 'v'");
  EXPECT_EQ(reason(with(good, "v", "2")), "unknown entry version '2'");
  EXPECT_EQ(reason(with(good, "job", "12x")), "field 'job' is not an integer");
  EXPECT_EQ(reason(with(good, "job", "-1")), "field 'job' is not an integer");
  EXPECT_EQ(reason(with(good, "timeout_ms", "0")), "field 'timeout_ms' is not > 0");
  EXPECT_EQ(reason(with(good, "allow_poison", "yes")), "field 'allow_poison' is not 0 or 1");
  EXPECT_EQ(reason(with(good, "pool", "")), "empty origin or pool");
  Fields twice = good;
  twice.emplace_back("pool", "other");
  EXPECT_EQ(reason(twice), "a field appears twice");
  EXPECT_EQ(reason({}), "missing field 'v'");
}

TEST(JobEntry, APayloadInAKeyTravelsAsItsKey) {
  JobEntry j = sampleJob();
  j.payload.clear();
  j.payloadKey = "bulkhead:payload:gpu-a:1:7";
  const Fields f = encodeJob(j);
  EXPECT_TRUE(std::none_of(f.begin(), f.end(), [](const auto& p) { return p.first == "payload"; }));
  auto back = std::get<JobEntry>(decodeJob(f));
  EXPECT_EQ(back.payloadKey, j.payloadKey);
  EXPECT_TRUE(back.payload.empty());
  Fields both = encodeJob(sampleJob());
  both.emplace_back("payload_key", "k");
  EXPECT_EQ(std::get<std::string>(decodeJob(both)), "both 'payload' and 'payload_key'");
  EXPECT_EQ(std::get<std::string>(decodeJob(with(f, "payload_key", ""))), "empty payload_key");
}

TEST(OutcomeEntry, RoundTripsAndRefusesZeroRuns) {
  OutcomeEntry o{42, "gpu-b", 3, R"({"outcome":"ok"})", std::string("\0r", 2)};
  auto back = decodeOutcome(encodeOutcome(o));
  ASSERT_TRUE(std::holds_alternative<OutcomeEntry>(back)) << std::get<std::string>(back);
  const OutcomeEntry& b = std::get<OutcomeEntry>(back);
  EXPECT_EQ(b.originId, 42u);
  EXPECT_EQ(b.node, "gpu-b");
  EXPECT_EQ(b.runs, 3u);
  EXPECT_EQ(b.reportJson, o.reportJson);
  EXPECT_EQ(b.result, o.result);
  EXPECT_EQ(std::get<std::string>(decodeOutcome(with(encodeOutcome(o), "runs", "0"))),
            "field 'runs' is 0");
  EXPECT_EQ(std::get<std::string>(decodeOutcome(without(encodeOutcome(o), "report"))),
            "missing field 'report'");
}

TEST(CancelEntry, SharesTheOutcomeStreamAndIsToldApart) {
  const CancelEntry c{(std::uint64_t{2} << 40) + 9, "gpu-b"};
  auto back = decodeOutcomeStream(encodeCancel(c));
  ASSERT_TRUE(std::holds_alternative<CancelEntry>(back));
  EXPECT_EQ(std::get<CancelEntry>(back).originId, c.originId);
  EXPECT_EQ(std::get<CancelEntry>(back).from, "gpu-b");
  OutcomeEntry o{42, "gpu-b", 1, R"({"outcome":"ok"})", "r"};
  EXPECT_TRUE(std::holds_alternative<OutcomeEntry>(decodeOutcomeStream(encodeOutcome(o))));
  EXPECT_EQ(std::get<std::string>(decodeOutcomeStream(with(encodeCancel(c), "cancel", "x"))),
            "field 'cancel' is not an integer");
  EXPECT_EQ(std::get<std::string>(decodeOutcomeStream(without(encodeCancel(c), "from"))),
            "missing field 'from'");
}

TEST(RecordEntry, QueuedAndFinishedRoundTrip) {
  RecordEntry queued{"gpu-a", "faces", false, std::nullopt, "", ""};
  auto q = decodeRecord(encodeRecord(queued));
  ASSERT_TRUE(std::holds_alternative<RecordEntry>(q)) << std::get<std::string>(q);
  EXPECT_FALSE(std::get<RecordEntry>(q).finished);
  EXPECT_EQ(std::get<RecordEntry>(q).node, "gpu-a");
  RecordEntry done{"gpu-a", "faces", true, 3, R"({"outcome":"crashed"})", std::string("\0x", 2)};
  auto f = decodeRecord(encodeRecord(done));
  ASSERT_TRUE(std::holds_alternative<RecordEntry>(f)) << std::get<std::string>(f);
  const RecordEntry& b = std::get<RecordEntry>(f);
  EXPECT_TRUE(b.finished);
  EXPECT_EQ(b.runs, 3);
  EXPECT_EQ(b.reportJson, done.reportJson);
  EXPECT_EQ(b.result, done.result);
  EXPECT_EQ(std::get<std::string>(decodeRecord(with(encodeRecord(done), "state", "lost"))),
            "unknown state 'lost'");
  EXPECT_EQ(std::get<std::string>(decodeRecord(without(encodeRecord(done), "report"))),
            "missing field 'report'");
}

TEST(StreamKeys, NameThePoolAndTheNode) {
  EXPECT_EQ(poolStreamKey("faces"), "bulkhead:pool:faces:jobs");
  EXPECT_EQ(outcomeStreamKey("gpu-a"), "bulkhead:outcomes:gpu-a");
  EXPECT_EQ(jobRecordKey(17), "bulkhead:job:17");
  EXPECT_EQ(idempotencyRedisKey("order-9"), "bulkhead:idempotency:order-9");
}

}  // namespace
}  // namespace bulkhead::cluster
