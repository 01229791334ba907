// StepState: rows survive a reopen, --fresh clears them, a second run is locked out.

#include "run/step_state.h"

#include <gtest/gtest.h>
#include <stdlib.h>

namespace bulkhead::run {
namespace {

std::string tempDir() {
  char pattern[] = "/tmp/bulkhead-state-test-XXXXXX";
  return ::mkdtemp(pattern);
}

TEST(StepState, ARowSurvivesAReopen) {
  const std::string dir = tempDir() + "/runs/cv";
  std::string error;
  {
    auto s = StepState::open(dir, &error);
    ASSERT_TRUE(s) << error;
    StepRecord r;
    r.name = "1";
    r.outcome = "ok";
    r.attempts = 2;
    r.peaks.maps = 1850;
    r.resultJson = R"({"acc": 0.9})";
    ASSERT_TRUE(s->put(r, &error)) << error;
  }
  auto s = StepState::open(dir, &error);
  ASSERT_TRUE(s) << error;
  auto r = s->get("1", &error);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->outcome, "ok");
  EXPECT_EQ(r->attempts, 2);
  EXPECT_EQ(r->peaks.maps, 1850);
  EXPECT_EQ(r->resultJson, R"({"acc": 0.9})");
  EXPECT_FALSE(s->get("2", &error));
  ASSERT_TRUE(s->clear(&error));
  EXPECT_FALSE(s->get("1", &error));
}

TEST(StepState, ASecondRunOnTheSameStateIsRefused) {
  const std::string dir = tempDir();
  std::string error;
  auto first = StepState::open(dir, &error);
  ASSERT_TRUE(first) << error;
  auto second = StepState::open(dir, &error);
  EXPECT_FALSE(second);
  EXPECT_NE(error.find("in use"), std::string::npos) << error;
}

}  // namespace
}  // namespace bulkhead::run
