#pragma once
// The daemon's configuration, loaded from TOML. Every error names the file, the line, the key
// and what was expected; the daemon refuses to start on any of them.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bulkhead::config {

struct ServerConfig {
  std::string listen = "127.0.0.1:8787";
  std::chrono::nanoseconds shutdownTimeout = std::chrono::seconds(30);
  std::uint64_t maxRequestBody = 64ull << 20;
  // Request bodies from this size on travel as sealed memfds, outside the daemon's heap
  // (docs/protocol.md, "Large payloads by memfd"); 0: never, results included.
  std::uint64_t memfdThreshold = 256 * 1024;
  // Bytes results from this size on come back in sealed memfds; 0: never. Higher than requests'
  // because a result memfd is fresh pages the worker fills and the daemon frees: measured slower
  // than the socket up to ~16 MiB (BENCHMARKS.md, "Large payloads").
  std::uint64_t memfdResultThreshold = 16ull << 20;
  // Payload memfds kept for their pool's next large body, at most this many bytes of them
  // (docs/protocol.md, "Reused payload files"); 0: none kept, each body gets a new memfd.
  std::uint64_t payloadFileCache = 512ull << 20;
  // Connections (docs/operations.md, "Connections"): beyond max_connections a client gets 503;
  // a request must arrive whole within request_timeout; an idle keep-alive connection is closed
  // after idle_timeout.
  std::uint64_t maxConnections = 1024;
  std::chrono::nanoseconds requestTimeout = std::chrono::seconds(30);
  std::chrono::nanoseconds idleTimeout = std::chrono::seconds(60);
  // SQLite journal of async jobs and failed sync jobs. Default: bulkhead-journal.db next to the
  // config file; "" turns it (and async jobs) off.
  std::string journal;
  std::uint64_t journalKeep = 100000;  // finished jobs kept
  // Where GPU readings come from (dlopen'd when a pool has `gpus`): a library name or a path.
  std::string nvmlLibrary = "libnvidia-ml.so.1";

  bool operator==(const ServerConfig&) const = default;
};

struct PoolConfig {
  std::string name;
  int line = 0;
  std::string handler;
  std::string preload;  // runs once per worker (spawn) or once in the zygote (zygote mode)
  std::string init;     // runs in every worker after preload: threads, GPU, warm-up
  bool zygote = false;  // mode = "zygote": workers are forked from a preloaded template process
  bool zygoteFallbackToSpawn = false;  // a zygote that refuses to fork: spawn instead of failing
  std::string python = "/usr/bin/python3";
  std::vector<std::string> pythonPath;  // absolute: relative entries resolved against the file
  int workers = 2;
  int standby = 0;  // workers kept READY outside dispatch, to take a failed worker's place
  std::uint64_t queueLimit = 1000;
  std::chrono::nanoseconds jobTimeout = std::chrono::seconds(30);    // one attempt's run time
  std::chrono::nanoseconds queueTimeout = std::chrono::seconds(30);  // a sync job's wait
  std::optional<std::chrono::nanoseconds> asyncQueueTimeout;         // unset: async jobs wait
  std::chrono::nanoseconds startupTimeout = std::chrono::seconds(60);
  std::chrono::nanoseconds killGrace = std::chrono::seconds(1);
  int retries = 2;
  std::uint64_t maxJobs = 0;
  // max_jobs_strict: a worker that served max_jobs takes no further job, even while its
  // replacement starts (one job per process with max_jobs = 1: bulkhead.Executor's folds).
  bool maxJobsStrict = false;
  std::uint64_t maxPayload = 64ull << 20;
  std::uint64_t memfdThreshold = 256 * 1024;  // [server] memfd_threshold, copied for the workers
  std::uint64_t memfdResultThreshold = 16ull << 20;  // [server] memfd_result_threshold, the same
  std::map<std::string, std::string> env;

  // Resource guard: sampling, hard limits (cgroup), soft recycle rules, hang detection.
  std::chrono::nanoseconds sampleInterval = std::chrono::seconds(1);
  std::uint64_t memoryLimit = 0;  // 0: none
  std::uint64_t pidsLimit = 0;    // 0: none
  std::uint64_t maxRss = 0;       // 0: no bound
  int maxThreads = 0;
  int maxMaps = 32768;  // well below vm.max_map_count (65530), where every mmap starts failing
  int maxFds = 0;
  std::uint64_t maxGpuMemory = 0;    // 0: no bound (soft, per worker, needs NVML)
  std::uint64_t gpuMemoryLimit = 0;  // 0: none (hard while a job runs, per sample)
  std::chrono::nanoseconds maxAge{0};
  bool trend = true;
  std::chrono::nanoseconds hangAfter{0};  // 0: off (only job_timeout applies)
  // Prefetch while the pool's jobs run shorter than this (core::PoolPolicy::prefetchBelow).
  std::chrono::nanoseconds prefetchBelow = std::chrono::milliseconds(1);

  // Failure policy.
  int poisonAfter = 2;      // crashed/hung/OOM on this many different workers: poison; 0: off
  int breakerFailures = 0;  // 0: no breaker
  std::chrono::nanoseconds breakerWindow = std::chrono::seconds(30);
  std::chrono::nanoseconds breakerCooldown = std::chrono::seconds(10);
  std::string fallback;  // pool that takes jobs while this one's breaker is open

  // Environment (see runtime/worker_spec.h for the layering).
  std::vector<std::string> profiles;  // "torch", "tensorflow", "onnxruntime", "cpu-only"
  int threads = 0;                    // 0: leave thread counts to the libraries
  std::vector<int> gpus;              // device ids shared out by worker slot
  int gpusPerWorker = 1;
  std::vector<std::string> inheritEnv;  // more names (or PREFIX*) to keep from the supervisor

  // Field by field: tests check that a documented default equals the parser's.
  bool operator==(const PoolConfig&) const = default;
};

// [cluster]: nodes that share pools through Redis (docs/cluster.md). Absent: one node alone.
struct ClusterConfig {
  int line = 0;
  std::string redis;        // "redis://HOST:PORT[/DB]" or "unix:/path/to/redis.sock[?db=N]"
  std::string node;         // this node's name; default: the host name
  std::string passwordEnv;  // the environment variable holding Redis's password; "" = none
  std::chrono::nanoseconds claimAfter = std::chrono::seconds(30);
  std::chrono::nanoseconds heartbeat = std::chrono::seconds(1);

  bool operator==(const ClusterConfig&) const = default;
};

struct Config {
  std::string path;
  ServerConfig server;
  std::vector<PoolConfig> pools;
  std::optional<ClusterConfig> cluster;
};

struct ConfigError {
  std::string file;
  int line = 0;  // 0: no line (e.g. the file is unreadable)
  std::string key;
  std::string message;
  std::string describe() const;  // "file:line: key: message"
};

struct LoadResult {
  std::optional<Config> config;
  std::vector<ConfigError> errors;
};

LoadResult loadConfigFile(const std::string& path);
LoadResult loadConfigText(const std::string& text, const std::string& pathForMessages);

}  // namespace bulkhead::config
