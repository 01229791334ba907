// The recent outcomes log: bounded, ordered by seq, filtered by pool, never holding result bytes.
#include "jobs/recent_outcomes.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>

#include "core/events.h"

namespace bulkhead::jobs {
namespace {

core::JobReport report(core::JobId id, std::string pool, core::Outcome outcome) {
  core::JobReport r;
  r.jobId = id;
  r.pool = std::move(pool);
  r.outcome = outcome;
  return r;
}

std::vector<core::JobId> ids(const std::vector<const RecentOutcomes::Entry*>& entries) {
  std::vector<core::JobId> out;
  for (const auto* e : entries) out.push_back(e->report.jobId);
  return out;
}

TEST(RecentOutcomes, KeepsTheNewestInOrderAndPagesBySeq) {
  RecentOutcomes recent;
  EXPECT_EQ(recent.lastSeq(), 0u);
  EXPECT_TRUE(recent.since(0, "", 10).empty());
  const core::Time t{};
  for (core::JobId id = 1; id <= RecentOutcomes::kKept + 5; ++id) {
    recent.add(report(id, id % 2 ? "odd" : "even", core::Outcome::kOk),
               t + std::chrono::seconds(id), false);
  }
  EXPECT_EQ(recent.lastSeq(), RecentOutcomes::kKept + 5);
  auto all = recent.since(0, "", 1000);
  ASSERT_EQ(all.size(), RecentOutcomes::kKept) << "bounded";
  EXPECT_EQ(all.front()->report.jobId, 6u) << "the oldest went first";
  EXPECT_EQ(all.back()->report.jobId, RecentOutcomes::kKept + 5);
  EXPECT_EQ(ids(recent.since(RecentOutcomes::kKept + 2, "", 1000)),
            (std::vector<core::JobId>{RecentOutcomes::kKept + 3, RecentOutcomes::kKept + 4,
                                      RecentOutcomes::kKept + 5}));
  EXPECT_EQ(ids(recent.since(0, "", 2)),
            (std::vector<core::JobId>{RecentOutcomes::kKept + 4, RecentOutcomes::kKept + 5}))
      << "a limit keeps the newest, oldest first";
  EXPECT_EQ(ids(recent.since(RecentOutcomes::kKept, "even", 1000)),
            (std::vector<core::JobId>{RecentOutcomes::kKept + 2, RecentOutcomes::kKept + 4}));
  EXPECT_TRUE(recent.since(recent.lastSeq(), "", 1000).empty());
}

TEST(RecentOutcomes, DropsTheResultButKeepsItsSizeAndTheEvidence) {
  RecentOutcomes recent;
  auto ok = report(1, "p", core::Outcome::kOk);
  ok.result = core::makePayload(std::string(1 << 20, 'x'));
  std::weak_ptr<const core::Blob> result = ok.result;
  recent.add(ok, core::Time{}, true);
  ok.result.reset();
  EXPECT_TRUE(result.expired()) << "the log does not pin a result";
  auto crashed = report(2, "p", core::Outcome::kCrashed);
  crashed.attempts.resize(2);
  crashed.attempts[1].exit.signal = 11;
  crashed.attempts[1].exit.stderrTail = "free(): double free detected in tcache 2";
  recent.add(crashed, core::Time{}, false);
  auto entries = recent.since(0, "", 10);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0]->resultBytes, 1u << 20);
  EXPECT_TRUE(entries[0]->async);
  EXPECT_FALSE(entries[0]->report.result);
  EXPECT_EQ(entries[1]->report.attempts.at(1).exit.stderrTail,
            "free(): double free detected in tcache 2");
}

}  // namespace
}  // namespace bulkhead::jobs
