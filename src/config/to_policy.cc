#include "config/to_policy.h"

namespace bulkhead::config {

core::PoolPolicy toPolicy(const PoolConfig& c, const ServerConfig& server, std::size_t pools) {
  core::PoolPolicy p;
  p.name = c.name;
  p.workers = c.workers;
  p.standby = c.standby;
  p.queueLimit = c.queueLimit;
  p.jobTimeout = c.jobTimeout;
  p.queueTimeout = c.queueTimeout;
  p.asyncQueueTimeout = c.asyncQueueTimeout;
  p.startupTimeout = c.startupTimeout;
  p.retries = c.retries;
  p.maxJobs = c.maxJobs;
  p.maxJobsStrict = c.maxJobsStrict;
  p.killGrace = c.killGrace;
  p.shutdownTimeout = server.shutdownTimeout;
  p.bounds.maxRssBytes = c.maxRss;
  p.bounds.maxGpuMemoryBytes = c.maxGpuMemory;
  p.gpuMemoryLimitBytes = c.gpuMemoryLimit;
  p.bounds.maxThreads = c.maxThreads;
  p.bounds.maxMaps = c.maxMaps;
  p.bounds.maxFds = c.maxFds;
  p.bounds.trend = c.trend;
  p.maxAge = c.maxAge;
  p.hangAfter = c.hangAfter;
  p.prefetchBelow = c.prefetchBelow;
  p.memoryLimitBytes = c.memoryLimit;
  p.pidsLimit = c.pidsLimit;
  p.poisonAfter = c.poisonAfter;
  p.breaker.failures = static_cast<std::size_t>(c.breakerFailures);
  p.breaker.window = c.breakerWindow;
  p.breaker.cooldown = c.breakerCooldown;
  p.fallback = c.fallback;
  p.poolsInDaemon = pools;
  return p;
}

}  // namespace bulkhead::config
