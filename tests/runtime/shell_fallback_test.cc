// The shell on simulated time, fallback routing: a job refused by a pool whose breaker is open
// is resubmitted to the pool's fallback (the route and its bound are core/fallback_route.h; the
// shell carries the job over, with its payload and options).

#include <csignal>

#include "testlib/shell_fixture.h"

namespace bulkhead::testlib {
namespace {

using proto::FrameType;

std::string pool(const std::string& name, const std::string& fallback) {
  return "[pool." + name +
         "]\nhandler = \"h:handle\"\npython = \"/usr/bin/python3\"\nworkers = 1\nretries = 0\n"
         "fallback = \"" +
         fallback + "\"\nbreaker = { failures = 1, window = \"60s\", cooldown = \"60s\" }\n";
}

class FallbackTest : public ShellTest {
 protected:
  // A job crashes the pool's only worker: with failures = 1 its breaker opens.
  void openBreaker(const std::string& name) {
    const pid_t pid = pidOf(name + "-1");
    const core::JobId job = submit(name, "crash");
    ASSERT_EQ(framesOf(pid, FrameType::kJob).size(), 1u);
    host_->exit(pid, killedBy(SIGSEGV));
    ASSERT_NE(report(job), nullptr);
    ASSERT_EQ(report(job)->outcome, core::Outcome::kCrashed);
  }
};

TEST_F(FallbackTest, AJobRefusedByAnOpenBreakerRunsOnTheFallbackPool) {
  startShell(pool("a", "b") + "[pool.b]\nhandler = \"h:handle\"\npython = \"/usr/bin/python3\"\n");
  host_->ready(pidOf("a-1"));
  host_->ready(pidOf("b-1"));
  openBreaker("a");

  const core::JobId job = submit("a", "payload");
  auto frames = framesOf(pidOf("b-1"), FrameType::kJob);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].jobId, job);
  EXPECT_EQ(frames[0].body, "payload");
  EXPECT_EQ(shell_->jobState(job), "running");
  host_->send(pidOf("b-1"), FrameType::kResultBytes, job, "from b");

  const core::JobReport* r = report(job);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->outcome, core::Outcome::kOk);
  EXPECT_EQ(r->result->bytes(), "from b");
  EXPECT_EQ(r->fallbackFrom, std::vector<std::string>{"a"});
}

TEST_F(FallbackTest, FallbacksThatPointAtEachOtherStopAfterOneHopPerPool) {
  startShell(pool("a", "b") + pool("b", "a"));
  host_->ready(pidOf("a-1"));
  host_->ready(pidOf("b-1"));
  openBreaker("a");
  openBreaker("b");

  const core::JobId job = submit("a", "payload");
  const core::JobReport* r = report(job);
  ASSERT_NE(r, nullptr);  // answered at once, not bounced forever
  EXPECT_EQ(r->outcome, core::Outcome::kUnavailable);
  EXPECT_TRUE(r->breakerOpen);
  EXPECT_EQ(r->fallbackFrom, (std::vector<std::string>{"a", "b"}));
}

TEST_F(FallbackTest, WithoutAFallbackAnOpenBreakerAnswersUnavailable) {
  startShell(pool("a", ""));
  host_->ready(pidOf("a-1"));
  openBreaker("a");
  const core::JobId job = submit("a", "payload");
  ASSERT_NE(report(job), nullptr);
  EXPECT_EQ(report(job)->outcome, core::Outcome::kUnavailable);
  EXPECT_TRUE(report(job)->fallbackFrom.empty());
}

}  // namespace
}  // namespace bulkhead::testlib
