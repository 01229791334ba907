// The shell on simulated time, the sampler driver: /proc is read on the pool's sample_interval,
// /proc/PID/maps only when jobs ran since its last read, and a fresh sample follows a job when the
// pool bounds something (docs/design.md, "Resource guard").

#include "testlib/shell_fixture.h"

namespace bulkhead::testlib {
namespace {

using namespace std::chrono_literals;
using proto::FrameType;

// max_maps = 0: no bound at all, so no sample after a job; only the cadence reads /proc.
constexpr const char* kUnbounded = R"(
[pool.p]
handler = "h:handle"
python = "/usr/bin/python3"
workers = 1
sample_interval = "500ms"
max_maps = 0
)";

// One worker, bounded in RSS: a sample after each job, the periodic one far apart.
constexpr const char* kRssBounded = R"(
[pool.p]
handler = "h:handle"
python = "/usr/bin/python3"
workers = 1
sample_interval = "10s"
max_rss = "100MiB"
)";

std::vector<FakeHost::SampleTaken> samplesOf(const FakeHost& host, pid_t pid) {
  std::vector<FakeHost::SampleTaken> out;
  for (const auto& s : host.samples) {
    if (s.pid == pid) out.push_back(s);
  }
  return out;
}

TEST_F(ShellTest, WorkersAreSampledOnTheIntervalAndMapsOnlyAfterJobs) {
  startShell(kUnbounded);
  const pid_t pid = pidOf("p-1");
  host_->ready(pid);
  EXPECT_TRUE(samplesOf(*host_, pid).empty());

  host_->advanceTo(start_ + 500ms - 1ms);
  EXPECT_TRUE(samplesOf(*host_, pid).empty());
  host_->advanceTo(start_ + 500ms);
  auto samples = samplesOf(*host_, pid);
  ASSERT_EQ(samples.size(), 1u);
  EXPECT_TRUE(samples[0].withMaps);  // never read yet

  host_->advanceTo(start_ + 1500ms);  // idle: its maps cannot have grown
  samples = samplesOf(*host_, pid);
  ASSERT_EQ(samples.size(), 3u);
  EXPECT_EQ(samples[1].at, start_ + 1000ms);
  EXPECT_EQ(samples[2].at, start_ + 1500ms);
  EXPECT_FALSE(samples[1].withMaps);
  EXPECT_FALSE(samples[2].withMaps);

  const core::JobId job = submit("p", "x");
  host_->send(pid, FrameType::kResultBytes, job, "y");
  ASSERT_NE(report(job), nullptr);
  EXPECT_EQ(samplesOf(*host_, pid).size(), 3u);  // nothing is bounded: no sample after the job

  host_->advanceTo(start_ + 2500ms);
  samples = samplesOf(*host_, pid);
  ASSERT_EQ(samples.size(), 5u);
  EXPECT_TRUE(samples[3].withMaps);  // a job ran since the last read
  EXPECT_FALSE(samples[4].withMaps);
}

TEST_F(ShellTest, ABoundedPoolSamplesAfterEachJobAndRecyclesOnWhatTheJobLeft) {
  startShell(kRssBounded);
  const pid_t pid = pidOf("p-1");
  host_->ready(pid);
  // The job left the worker over its bound: the rule judges the state the job left.
  host_->sampler = [](pid_t, bool withMaps) -> std::optional<os::ProcSample> {
    os::ProcSample s;
    s.rssBytes = 200ull << 20;
    s.threads = 2;
    s.maps = withMaps ? 100 : -1;
    s.fds = 8;
    return s;
  };
  const core::JobId job = submit("p", "leak");
  host_->send(pid, FrameType::kResultBytes, job, "ok");
  auto samples = samplesOf(*host_, pid);
  ASSERT_EQ(samples.size(), 1u);
  EXPECT_EQ(samples[0].at, host_->now());
  ASSERT_NE(report(job), nullptr);
  EXPECT_EQ(report(job)->outcome, core::Outcome::kOk);
  // Recycled: a replacement is started at once, and the old worker is told to stop once it is
  // ready.
  const pid_t next = pidOf("p-2");
  ASSERT_GT(next, 0);
  EXPECT_TRUE(framesOf(pid, FrameType::kShutdown).empty());
  host_->ready(next);
  EXPECT_EQ(framesOf(pid, FrameType::kShutdown).size(), 1u);
}

// The /proc reads after a job need not delay its answer: with nothing queued the answer is out
// before they start. With a job queued behind, they come first, so that the next job goes to
// the worker only once the core has judged what the last one left.
TEST_F(ShellTest, WithNothingQueuedTheAnswerGoesOutBeforeTheSampleElseAfter) {
  startShell(kRssBounded);
  const pid_t pid = pidOf("p-1");
  host_->ready(pid);
  std::vector<bool> answeredWhenSampled;
  core::JobId current = 0;
  host_->sampler = [&](pid_t, bool) -> std::optional<os::ProcSample> {
    answeredWhenSampled.push_back(report(current) != nullptr);
    os::ProcSample s;
    s.rssBytes = 20ull << 20;
    s.threads = 2;
    s.maps = 100;
    s.fds = 8;
    return s;
  };
  current = submit("p", "alone");
  host_->send(pid, FrameType::kResultBytes, current, "ok");
  ASSERT_EQ(answeredWhenSampled, std::vector<bool>{true});
  framesOf(pid, FrameType::kJob);  // read: from here on, only new frames count

  current = submit("p", "first");
  const core::JobId queued = submit("p", "second");
  EXPECT_EQ(framesOf(pid, FrameType::kJob).size(), 1u) << "the second waits in the queue";
  host_->send(pid, FrameType::kResultBytes, current, "ok");
  ASSERT_EQ(answeredWhenSampled, (std::vector<bool>{true, false}));
  ASSERT_NE(report(current), nullptr);
  EXPECT_EQ(framesOf(pid, FrameType::kJob).size(), 1u) << "the queued job went to the worker";
  current = queued;
  host_->send(pid, FrameType::kResultBytes, queued, "ok");
  EXPECT_EQ(answeredWhenSampled, (std::vector<bool>{true, false, true}));
  EXPECT_EQ(report(queued)->outcome, core::Outcome::kOk);
}

}  // namespace
}  // namespace bulkhead::testlib
