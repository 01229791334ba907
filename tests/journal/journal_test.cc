#include "journal/journal.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace bulkhead::journal {
namespace {

class JournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("bulkhead-journal-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / "j.db").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  JobRow row(std::uint64_t id, std::string key = "") {
    JobRow r;
    r.id = id;
    r.pool = "p";
    r.payload = std::string("pay\0load", 8);
    r.timeoutMs = 1500;
    r.idempotencyKey = std::move(key);
    return r;
  }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(JournalTest, UnfinishedJobsSurviveReopeningWithTheirPayload) {
  {
    Journal j(path_);
    j.insert(row(1));
    j.insert(row(2));
    j.markStarted(1);
    j.finish(2, {"ok", 200, "application/octet-stream", "result", "{}"});
  }
  Journal j(path_);
  auto unfinished = j.unfinished();
  ASSERT_EQ(unfinished.size(), 1u);
  EXPECT_EQ(unfinished[0].id, 1u);
  EXPECT_EQ(unfinished[0].payload, std::string("pay\0load", 8)) << "binary-safe";
  EXPECT_EQ(unfinished[0].timeoutMs, 1500);
  EXPECT_EQ(unfinished[0].runs, 1);
  auto done = j.find(2);
  ASSERT_TRUE(done);
  EXPECT_TRUE(done->finished);
  EXPECT_EQ(done->body, "result");
  EXPECT_TRUE(done->payload.empty()) << "payloads are dropped once the outcome is kept";
  EXPECT_EQ(j.maxId(), 2u);
}

TEST_F(JournalTest, IdempotencyKeysAreUnique) {
  Journal j(path_);
  j.insert(row(1, "k"));
  EXPECT_EQ(j.findByIdempotencyKey("k"), 1u);
  EXPECT_FALSE(j.findByIdempotencyKey("other"));
  EXPECT_THROW(j.insert(row(2, "k")), std::runtime_error);
  j.insert(row(3));  // no key: no constraint
  j.insert(row(4));
}

TEST_F(JournalTest, RetentionKeepsTheNewestFinishedJobs) {
  Journal j(path_, 10);
  for (std::uint64_t id = 1; id <= 1000; ++id) {
    j.record(id, "p", {"crashed", 502, "application/problem+json", "{}", "{}"});
  }
  EXPECT_FALSE(j.find(1));
  EXPECT_TRUE(j.find(1000));
}

TEST_F(JournalTest, UnwritablePathIsAClearError) {
  try {
    Journal j("/nonexistent-dir/j.db");
    FAIL() << "opened an impossible path";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/j.db"), std::string::npos);
  }
}

}  // namespace
}  // namespace bulkhead::journal
