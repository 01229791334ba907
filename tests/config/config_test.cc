#include "config/config.h"

#include <gtest/gtest.h>

#include "config/to_policy.h"
#include "config/units.h"

namespace bulkhead::config {
namespace {

using namespace std::chrono_literals;

LoadResult load(const std::string& text) { return loadConfigText(text, "/etc/bulkhead/test.toml"); }

// Every error names the file, the line and the key.
void expectError(const std::string& text, int line, const std::string& key,
                 const std::string& fragment) {
  auto r = load(text);
  EXPECT_FALSE(r.config);
  ASSERT_FALSE(r.errors.empty()) << text;
  const auto& e = r.errors.front();
  EXPECT_EQ(e.file, "/etc/bulkhead/test.toml");
  EXPECT_EQ(e.line, line) << e.describe();
  EXPECT_EQ(e.key, key) << e.describe();
  EXPECT_NE(e.describe().find(fragment), std::string::npos) << e.describe();
  EXPECT_EQ(e.describe().rfind("/etc/bulkhead/test.toml:" + std::to_string(line) + ": ", 0), 0u)
      << e.describe();
}

TEST(Config, FullPoolLoads) {
  auto r = load(R"(
[server]
listen = "unix:/run/bulkhead.sock"
[pool.faces]
handler = "faces:embed"
preload = "faces:load"
python = "/usr/bin/python3"
python_path = ["handlers", "/opt/lib"]
workers = 3
queue_limit = 10
job_timeout = "5s"
startup_timeout = "2m"
retries = 1
max_jobs = 100
max_jobs_strict = true
env = { OMP_NUM_THREADS = "1" }
)");
  ASSERT_TRUE(r.config) << r.errors.front().describe();
  const auto& p = r.config->pools.at(0);
  EXPECT_EQ(r.config->server.listen, "unix:/run/bulkhead.sock");
  EXPECT_EQ(p.name, "faces");
  EXPECT_EQ(p.workers, 3);
  EXPECT_EQ(p.jobTimeout, std::chrono::nanoseconds(5s));
  EXPECT_EQ(p.startupTimeout, std::chrono::nanoseconds(2min));
  EXPECT_EQ(p.pythonPath.at(0), "/etc/bulkhead/handlers") << "relative to the config file";
  EXPECT_EQ(p.pythonPath.at(1), "/opt/lib");
  EXPECT_EQ(p.env.at("OMP_NUM_THREADS"), "1");
  EXPECT_EQ(p.maxJobs, 100u);
  EXPECT_TRUE(p.maxJobsStrict);
}

TEST(Config, DefaultsApply) {
  auto r = load("[pool.a]\nhandler = \"m:f\"\n");
  ASSERT_TRUE(r.config);
  EXPECT_EQ(r.config->server.listen, "127.0.0.1:8787");
  EXPECT_EQ(r.config->pools[0].workers, 2);
  EXPECT_EQ(r.config->pools[0].retries, 2);
  EXPECT_EQ(r.config->pools[0].python, "/usr/bin/python3");
}

// Results have their own memfd threshold (a result memfd is fresh pages on both sides), copied,
// like the requests' one, into every pool for its workers.
TEST(Config, MemfdThresholdsForRequestsAndResultsAreApartAndReachEveryPool) {
  auto defaults = load("[pool.a]\nhandler = \"m:f\"\n");
  ASSERT_TRUE(defaults.config);
  EXPECT_EQ(defaults.config->server.memfdThreshold, 256u * 1024);
  EXPECT_EQ(defaults.config->server.memfdResultThreshold, 16ull << 20);
  auto r = load(
      "[server]\nmemfd_threshold = \"1MiB\"\nmemfd_result_threshold = \"2MiB\"\n"
      "[pool.a]\nhandler = \"m:f\"\n[pool.b]\nhandler = \"m:g\"\n");
  ASSERT_TRUE(r.config) << r.errors.front().describe();
  for (const auto& p : r.config->pools) {
    EXPECT_EQ(p.memfdThreshold, 1u << 20) << p.name;
    EXPECT_EQ(p.memfdResultThreshold, 2u << 20) << p.name;
  }
  expectError("[server]\nmemfd_result_threshold = \"big\"\n[pool.a]\nhandler = \"m:f\"\n", 2,
              "server.memfd_result_threshold", "expected a size");
}

TEST(Config, PayloadFileCacheIsASizeAndZeroTurnsReuseOff) {
  auto defaults = load("[pool.a]\nhandler = \"m:f\"\n");
  ASSERT_TRUE(defaults.config);
  EXPECT_EQ(defaults.config->server.payloadFileCache, 512ull << 20);
  auto off = load("[server]\npayload_file_cache = \"0\"\n[pool.a]\nhandler = \"m:f\"\n");
  ASSERT_TRUE(off.config) << off.errors.front().describe();
  EXPECT_EQ(off.config->server.payloadFileCache, 0u);
  expectError("[server]\npayload_file_cache = \"lots\"\n[pool.a]\nhandler = \"m:f\"\n", 2,
              "server.payload_file_cache", "expected a size");
}

TEST(Config, PrefetchBelowIsADurationOnByDefaultAndZeroTurnsItOff) {
  auto defaults = load("[pool.a]\nhandler = \"m:f\"\n");
  ASSERT_TRUE(defaults.config);
  EXPECT_EQ(defaults.config->pools[0].prefetchBelow, std::chrono::milliseconds(1));
  auto off = load("[pool.a]\nhandler = \"m:f\"\nprefetch_below = \"0s\"\n");
  ASSERT_TRUE(off.config) << off.errors.front().describe();
  EXPECT_EQ(off.config->pools[0].prefetchBelow.count(), 0);
  auto wide = load("[pool.a]\nhandler = \"m:f\"\nprefetch_below = \"20ms\"\n");
  ASSERT_TRUE(wide.config);
  EXPECT_EQ(toPolicy(wide.config->pools[0], wide.config->server, 1).prefetchBelow,
            std::chrono::milliseconds(20));
  expectError("[pool.a]\nhandler = \"m:f\"\nprefetch_below = 5\n", 3, "pool.a.prefetch_below",
              "duration");
}

TEST(Config, SyntaxErrorNamesTheLine) {
  auto r = load("[pool.a]\nhandler = \"m:f\"\nworkers = = 2\n");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].line, 3);
  EXPECT_NE(r.errors[0].describe().find("invalid TOML"), std::string::npos);
}

TEST(Config, UnknownKey) {
  expectError("[pool.a]\nhandler = \"m:f\"\nworkerz = 2\n", 3, "pool.a.workerz", "unknown key");
}

TEST(Config, WrongType) {
  expectError("[pool.a]\nhandler = \"m:f\"\nworkers = \"two\"\n", 3, "pool.a.workers",
              "expected an integer between 1 and 4096, got string \"two\"");
}

TEST(Config, OutOfRange) {
  expectError("[pool.a]\nhandler = \"m:f\"\nworkers = 0\n", 3, "pool.a.workers", "got 0");
}

TEST(Config, BadDuration) {
  expectError("[pool.a]\nhandler = \"m:f\"\n\njob_timeout = \"30 parsecs\"\n", 4,
              "pool.a.job_timeout", "expected a duration");
}

TEST(Config, BadSize) {
  expectError("[pool.a]\nhandler = \"m:f\"\nmax_payload = \"lots\"\n", 3, "pool.a.max_payload",
              "expected a size");
}

TEST(Config, HandlerWithoutColon) {
  expectError("[pool.a]\nhandler = \"module.function\"\n", 2, "pool.a.handler",
              "expected \"module:function\"");
}

TEST(Config, ZygoteModeWithInitAndFallback) {
  auto r = load(
      "[pool.a]\nhandler = \"m:f\"\npreload = \"m:load\"\ninit = \"m:init\"\nmode = "
      "\"zygote\"\nzygote_fallback = \"spawn\"\n");
  ASSERT_TRUE(r.config) << r.errors.front().describe();
  const auto& pool = r.config->pools.front();
  EXPECT_TRUE(pool.zygote);
  EXPECT_TRUE(pool.zygoteFallbackToSpawn);
  EXPECT_EQ(pool.init, "m:init");
  auto plain = load("[pool.a]\nhandler = \"m:f\"\n");
  ASSERT_TRUE(plain.config);
  EXPECT_FALSE(plain.config->pools.front().zygote);
  EXPECT_FALSE(plain.config->pools.front().zygoteFallbackToSpawn);
}

TEST(Config, BadModeAndZygoteKeys) {
  expectError("[pool.a]\nhandler = \"m:f\"\nmode = \"fork\"\n", 3, "pool.a.mode",
              "expected \"spawn\" or \"zygote\", got \"fork\"");
  expectError("[pool.a]\nhandler = \"m:f\"\nmode = \"zygote\"\nzygote_fallback = \"maybe\"\n", 4,
              "pool.a.zygote_fallback", "expected \"fail\" or \"spawn\"");
  expectError("[pool.a]\nhandler = \"m:f\"\nzygote_fallback = \"spawn\"\n", 3,
              "pool.a.zygote_fallback", "only means something with mode = \"zygote\"");
  expectError("[pool.a]\nhandler = \"m:f\"\ninit = \"setup\"\n", 3, "pool.a.init",
              "expected \"module:function\"");
}

TEST(Config, StandbyWorkers) {
  auto r = load("[pool.a]\nhandler = \"m:f\"\nstandby = 2\n");
  ASSERT_TRUE(r.config) << r.errors.front().describe();
  EXPECT_EQ(r.config->pools.front().standby, 2);
  auto plain = load("[pool.a]\nhandler = \"m:f\"\n");
  ASSERT_TRUE(plain.config);
  EXPECT_EQ(plain.config->pools.front().standby, 0);
  expectError("[pool.a]\nhandler = \"m:f\"\nstandby = 65\n", 3, "pool.a.standby", "0");
  expectError("[pool.a]\nhandler = \"m:f\"\ngpus = [0, 1]\nstandby = 1\n", 4, "pool.a.standby",
              "cannot be combined with gpus");
}

TEST(Config, QueueTimeoutsHaveOneMeaningEach) {
  auto r = load("[pool.a]\nhandler = \"m:f\"\n");
  ASSERT_TRUE(r.config);
  EXPECT_EQ(r.config->pools[0].queueTimeout, 30s);
  EXPECT_FALSE(r.config->pools[0].asyncQueueTimeout) << "async jobs wait without a limit";
  r = load("[pool.a]\nhandler = \"m:f\"\nqueue_timeout = \"2s\"\nasync_queue_timeout = \"1h\"\n");
  ASSERT_TRUE(r.config);
  EXPECT_EQ(r.config->pools[0].queueTimeout, 2s);
  EXPECT_EQ(r.config->pools[0].asyncQueueTimeout, std::chrono::nanoseconds(1h));
  expectError("[pool.a]\nhandler = \"m:f\"\nqueue_timeout = 5\n", 3, "pool.a.queue_timeout",
              "expected a duration");
  expectError("[pool.a]\nhandler = \"m:f\"\nasync_queue_timeout = \"soon\"\n", 3,
              "pool.a.async_queue_timeout", "expected a duration");
}

TEST(Config, JobAndQueueTimeoutsCanBeTurnedOff) {
  auto r = load("[pool.a]\nhandler = \"m:f\"\njob_timeout = \"off\"\nqueue_timeout = \"off\"\n");
  ASSERT_TRUE(r.config);
  EXPECT_EQ(r.config->pools[0].jobTimeout, kTimeoutOff);
  EXPECT_EQ(r.config->pools[0].queueTimeout, kTimeoutOff);
  expectError("[pool.a]\nhandler = \"m:f\"\nstartup_timeout = \"off\"\n", 3,
              "pool.a.startup_timeout", "expected a duration");
}

TEST(Config, MissingHandlerNamesThePoolTable) {
  expectError("\n[pool.a]\nworkers = 1\n", 2, "pool.a.handler", "missing");
}

TEST(Config, BadListen) {
  expectError("[server]\nlisten = \"localhost\"\n[pool.a]\nhandler = \"m:f\"\n", 2, "server.listen",
              "HOST:PORT");
}

TEST(Config, HugePortIsAnErrorNotACrash) {
  // Found by the config fuzzer: std::stol threw out_of_range on a 150-digit port.
  expectError(
      "[server]\nlisten = \"128.1:" + std::string(150, '2') + "\"\n[pool.a]\nhandler = \"m:f\"\n",
      2, "server.listen", "HOST:PORT");
}

TEST(Config, HugeNumbersInDurationsAreRefused) {
  expectError("[pool.a]\nhandler = \"m:f\"\njob_timeout = \"" + std::string(400, '9') + "s\"\n", 3,
              "pool.a.job_timeout", "expected a duration");
}

TEST(Config, EnvValuesMustBeStrings) {
  expectError("[pool.a]\nhandler = \"m:f\"\nenv = { OMP_NUM_THREADS = 1 }\n", 3,
              "pool.a.env.OMP_NUM_THREADS", "expected a string");
}

TEST(Config, RelativePythonIsRefused) {
  expectError("[pool.a]\nhandler = \"m:f\"\npython = \"python3\"\n", 3, "pool.a.python",
              "absolute path");
}

TEST(Config, NoPools) {
  auto r = load("[server]\nlisten = \"127.0.0.1:1\"\n");
  ASSERT_FALSE(r.errors.empty());
  EXPECT_EQ(r.errors[0].key, "pool");
}

TEST(Config, AllErrorsAreReportedNotJustTheFirst) {
  auto r = load("[pool.a]\nhandler = \"m\"\nworkers = -1\nretries = \"x\"\n");
  EXPECT_EQ(r.errors.size(), 3u);
}

TEST(Config, UnreadableFile) {
  auto r = loadConfigFile("/nonexistent/bulkhead.toml");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.errors[0].describe().find("cannot read"), std::string::npos);
}

TEST(Config, ConnectionKeysDefault) {
  auto r = load("[pool.a]\nhandler = \"m:f\"\n");
  ASSERT_TRUE(r.config) << r.errors.front().describe();
  EXPECT_EQ(r.config->server.maxConnections, 1024u);
  EXPECT_EQ(r.config->server.requestTimeout, 30s);
  EXPECT_EQ(r.config->server.idleTimeout, 60s);
}

TEST(Config, ConnectionKeysLoad) {
  auto r = load(
      "[server]\nmax_connections = 20\nrequest_timeout = \"1500ms\"\nidle_timeout = \"2m\"\n"
      "[pool.a]\nhandler = \"m:f\"\n");
  ASSERT_TRUE(r.config) << r.errors.front().describe();
  EXPECT_EQ(r.config->server.maxConnections, 20u);
  EXPECT_EQ(r.config->server.requestTimeout, 1500ms);
  EXPECT_EQ(r.config->server.idleTimeout, 120s);
}

TEST(Config, MaxConnectionsMustBePositive) {
  expectError("[server]\nmax_connections = 0\n[pool.a]\nhandler = \"m:f\"\n", 2,
              "server.max_connections", "expected an integer between 1 and");
  expectError("[server]\nmax_connections = \"many\"\n[pool.a]\nhandler = \"m:f\"\n", 2,
              "server.max_connections", "expected an integer");
}

TEST(Config, ConnectionTimeoutsMustBeDurations) {
  expectError("[server]\nrequest_timeout = 30\n[pool.a]\nhandler = \"m:f\"\n", 2,
              "server.request_timeout", "expected a duration");
  expectError("[server]\n\nidle_timeout = \"0s\"\n[pool.a]\nhandler = \"m:f\"\n", 3,
              "server.idle_timeout", "at least 1ms");
}

}  // namespace
}  // namespace bulkhead::config
