#include "journal/journal.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
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

  // Runs SQL on the file beside the journal, as another program (or an older bulkhead) would.
  void sql(const std::string& text) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
    char* error = nullptr;
    int rc = sqlite3_exec(db, text.c_str(), nullptr, nullptr, &error);
    std::string why = error ? error : "";
    sqlite3_free(error);
    sqlite3_close(db);
    ASSERT_EQ(rc, SQLITE_OK) << why;
  }

  std::filesystem::path dir_;
  std::string path_;
};

TEST_F(JournalTest, UnfinishedJobsSurviveReopeningWithTheirPayload) {
  {
    Journal j(path_);
    ASSERT_TRUE(j.insert(row(1)));
    ASSERT_TRUE(j.insert(row(2)));
    ASSERT_TRUE(j.markStarted(1));
    ASSERT_TRUE(j.finish(2, {"ok", R"({"outcome":"ok"})", std::string("res\0ult", 7)}));
  }
  Journal j(path_);
  auto unfinished = j.unfinished();
  ASSERT_TRUE(unfinished);
  ASSERT_EQ(unfinished->size(), 1u);
  const JobRow& first = unfinished->front();
  EXPECT_EQ(first.id, 1u);
  EXPECT_EQ(first.payload, std::string("pay\0load", 8)) << "binary-safe";
  EXPECT_EQ(first.timeoutMs, 1500);
  EXPECT_EQ(first.runs, 1);
  auto done = j.find(2);
  ASSERT_TRUE(done && *done);
  const JobRow& second = **done;
  EXPECT_TRUE(second.finished);
  EXPECT_EQ(second.outcome, "ok");
  EXPECT_EQ(second.report, R"({"outcome":"ok"})");
  EXPECT_EQ(second.result, std::string("res\0ult", 7)) << "binary-safe";
  EXPECT_FALSE(second.legacy);
  EXPECT_TRUE(second.payload.empty()) << "payloads are dropped once the outcome is kept";
  EXPECT_EQ(*j.maxId(), 2u);
}

TEST_F(JournalTest, IdempotencyKeysAreUnique) {
  Journal j(path_);
  ASSERT_TRUE(j.insert(row(1, "k")));
  EXPECT_EQ(*j.findByIdempotencyKey("k"), 1u);
  EXPECT_FALSE(*j.findByIdempotencyKey("other"));
  auto again = j.insert(row(2, "k"));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().kind, JournalError::Kind::kDuplicateIdempotencyKey);
  EXPECT_TRUE(j.insert(row(3)));  // no key: no constraint
  EXPECT_TRUE(j.insert(row(4)));
}

TEST_F(JournalTest, RetentionKeepsTheNewestFinishedJobs) {
  Journal j(path_, 10);
  for (std::uint64_t id = 1; id <= 1000; ++id) {
    ASSERT_TRUE(j.record(id, "p", {"crashed", "{}", ""}));
  }
  EXPECT_FALSE(*j.find(1));
  EXPECT_TRUE(*j.find(1000));
}

// A journal written before schema 2 (by the daemon as it was): the file is upgraded in place,
// its unfinished jobs still run again, and its finished ones still answer with what they kept.
TEST_F(JournalTest, SchemaOneFileIsMigratedInPlace) {
  sql("PRAGMA journal_mode=WAL;"
      "CREATE TABLE jobs ("
      " id INTEGER PRIMARY KEY, pool TEXT NOT NULL, payload BLOB, timeout_ms INTEGER DEFAULT 0,"
      " allow_poison INTEGER DEFAULT 0, idempotency_key TEXT, finished INTEGER DEFAULT 0,"
      " outcome TEXT, http_status INTEGER DEFAULT 0, content_type TEXT, body BLOB,"
      " headers TEXT, runs INTEGER DEFAULT 0, created REAL DEFAULT (julianday('now')),"
      " ended REAL);"
      "CREATE UNIQUE INDEX jobs_idempotency ON jobs(idempotency_key)"
      " WHERE idempotency_key IS NOT NULL AND idempotency_key != '';"
      "CREATE INDEX jobs_unfinished ON jobs(finished);"
      "INSERT INTO jobs (id, pool, payload, timeout_ms, allow_poison, idempotency_key, runs)"
      " VALUES (7, 'p', X'00ff', 250, 1, 'key-7', 2);"
      "INSERT INTO jobs (id, pool, finished, outcome, http_status, content_type, body, headers,"
      " runs) VALUES (8, 'p', 1, 'crashed', 502, 'application/problem+json',"
      " '{\"outcome\":\"crashed\"}', '{\"X-Bulkhead-Outcome\":\"crashed\"}', 1);");
  {
    Journal j(path_);
    auto unfinished = j.unfinished();
    ASSERT_TRUE(unfinished);
    ASSERT_EQ(unfinished->size(), 1u);
    const JobRow& waiting = unfinished->front();
    EXPECT_EQ(waiting.id, 7u);
    EXPECT_EQ(waiting.payload, std::string("\0\xff", 2));
    EXPECT_EQ(waiting.timeoutMs, 250);
    EXPECT_TRUE(waiting.allowPoison);
    EXPECT_EQ(waiting.runs, 2);
    EXPECT_EQ(*j.findByIdempotencyKey("key-7"), 7u);
    auto old = j.find(8);
    ASSERT_TRUE(old && *old);
    ASSERT_TRUE((*old)->legacy) << "a schema-1 outcome is its recorded answer";
    EXPECT_EQ((*old)->legacy->httpStatus, 502);
    EXPECT_EQ((*old)->legacy->contentType, "application/problem+json");
    EXPECT_EQ((*old)->legacy->body, R"({"outcome":"crashed"})");
    EXPECT_EQ((*old)->legacy->headers, R"({"X-Bulkhead-Outcome":"crashed"})");
    // The migrated file takes schema-2 outcomes.
    ASSERT_TRUE(j.finish(7, {"ok", R"({"outcome":"ok"})", "done"}));
    auto now = j.find(7);
    ASSERT_TRUE(now && *now);
    EXPECT_FALSE((*now)->legacy);
    EXPECT_EQ((*now)->result, "done");
  }
  Journal reopened(path_);  // already schema 2: opens without migrating again
  EXPECT_EQ(*reopened.maxId(), 8u);
}

TEST_F(JournalTest, AJournalFromANewerBulkheadIsRefusedAtStartUp) {
  sql("PRAGMA user_version = 3");
  try {
    Journal j(path_);
    FAIL() << "opened a schema it does not know";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("newer bulkhead"), std::string::npos) << e.what();
  }
}

// After start-up nothing throws: a database that fails under the daemon is a typed error.
TEST_F(JournalTest, FailuresAfterOpeningAreResultsNotExceptions) {
  Journal j(path_);
  ASSERT_TRUE(j.insert(row(1)));
  sql("DROP TABLE jobs");
  auto inserted = j.insert(row(2));
  ASSERT_FALSE(inserted);
  EXPECT_EQ(inserted.error().kind, JournalError::Kind::kIo);
  EXPECT_NE(inserted.error().message.find(path_), std::string::npos) << inserted.error().message;
  EXPECT_FALSE(j.find(1));
  EXPECT_FALSE(j.unfinished());
  EXPECT_FALSE(j.maxId());
  EXPECT_FALSE(j.finish(1, {"ok", "{}", ""}));
  EXPECT_FALSE(j.findByIdempotencyKey("k"));
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
