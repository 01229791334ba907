#include "config/to_policy.h"

#include <gtest/gtest.h>

#include "config/config.h"

namespace bulkhead::config {
namespace {

using namespace std::chrono_literals;

// Every limit a pool is configured with reaches the core's policy, where the views read it.
TEST(ToPolicy, CarriesEveryConfiguredField) {
  auto r = loadConfigText(R"(
[server]
shutdown_timeout = "7s"
[pool.a]
handler = "m:f"
workers = 3
standby = 2
queue_limit = 11
job_timeout = "5s"
queue_timeout = "6s"
async_queue_timeout = "8s"
startup_timeout = "9s"
kill_grace = "2s"
retries = 4
max_jobs = 12
max_jobs_strict = true
memory_limit = "1GiB"
pids_limit = 13
max_rss = "512MiB"
max_threads = 14
max_maps = 15
max_fds = 16
trend = false
max_age = "1h"
hang_after = "3s"
poison_after = 5
breaker = { failures = 6, window = "10s", cooldown = "20s" }
)",
                          "/t.toml");
  ASSERT_TRUE(r.config) << (r.errors.empty() ? "" : r.errors.front().describe());
  const core::PoolPolicy p = toPolicy(r.config->pools.at(0), r.config->server);
  EXPECT_EQ(p.name, "a");
  EXPECT_EQ(p.workers, 3);
  EXPECT_EQ(p.standby, 2);
  EXPECT_EQ(p.queueLimit, 11u);
  EXPECT_EQ(p.jobTimeout, 5s);
  EXPECT_EQ(p.queueTimeout, 6s);
  EXPECT_EQ(p.asyncQueueTimeout, std::optional<core::Duration>(8s));
  EXPECT_EQ(p.startupTimeout, 9s);
  EXPECT_EQ(p.killGrace, 2s);
  EXPECT_EQ(p.shutdownTimeout, 7s);
  EXPECT_EQ(p.retries, 4);
  EXPECT_EQ(p.maxJobs, 12u);
  EXPECT_TRUE(p.maxJobsStrict);
  EXPECT_EQ(p.memoryLimitBytes, 1ull << 30);
  EXPECT_EQ(p.pidsLimit, 13u);
  EXPECT_EQ(p.bounds.maxRssBytes, 512ull << 20);
  EXPECT_EQ(p.bounds.maxThreads, 14);
  EXPECT_EQ(p.bounds.maxMaps, 15);
  EXPECT_EQ(p.bounds.maxFds, 16);
  EXPECT_FALSE(p.bounds.trend);
  EXPECT_EQ(p.maxAge, 1h);
  EXPECT_EQ(p.hangAfter, 3s);
  EXPECT_EQ(p.poisonAfter, 5);
  EXPECT_EQ(p.breaker.failures, 6u);
  EXPECT_EQ(p.breaker.window, 10s);
  EXPECT_EQ(p.breaker.cooldown, 20s);
}

}  // namespace
}  // namespace bulkhead::config
