// The table of known configuration keys (see known_keys.h).

#include "config/known_keys.h"

namespace bulkhead::config {

const std::vector<KnownKey>& knownKeys() {
  static const std::vector<KnownKey> kKeys = {
      {"server", "listen"},
      {"server", "shutdown_timeout"},
      {"server", "max_request_body"},
      {"server", "memfd_threshold"},
      {"server", "memfd_result_threshold"},
      {"server", "payload_file_cache"},
      {"server", "max_connections"},
      {"server", "request_timeout"},
      {"server", "idle_timeout"},
      {"server", "journal"},
      {"server", "journal_keep"},
      {"server", "nvml_library"},
      // Several nodes through Redis.
      {"cluster", "redis"},
      {"cluster", "node"},
      {"cluster", "password_env"},
      {"cluster", "claim_after"},
      {"cluster", "heartbeat"},
      // What runs, and how it starts.
      {"pool", "handler"},
      {"pool", "preload"},
      {"pool", "init"},
      {"pool", "mode"},
      {"pool", "zygote_fallback"},
      {"pool", "python"},
      {"pool", "python_path"},
      {"pool", "workers"},
      {"pool", "standby"},
      // Jobs: queue, deadlines, retries, recycling by count.
      {"pool", "queue_limit"},
      {"pool", "job_timeout"},
      {"pool", "queue_timeout"},
      {"pool", "async_queue_timeout"},
      {"pool", "startup_timeout"},
      {"pool", "kill_grace"},
      {"pool", "retries"},
      {"pool", "max_jobs"},
      {"pool", "max_jobs_strict"},
      {"pool", "max_payload"},
      {"pool", "prefetch_below"},
      // Environment.
      {"pool", "env"},
      {"pool", "profile"},
      {"pool", "threads"},
      {"pool", "gpus"},
      {"pool", "gpus_per_worker"},
      {"pool", "inherit_env"},
      // Resource guard.
      {"pool", "memory_limit"},
      {"pool", "pids_limit"},
      {"pool", "max_rss"},
      {"pool", "max_threads"},
      {"pool", "max_maps"},
      {"pool", "max_fds"},
      {"pool", "max_gpu_memory"},
      {"pool", "gpu_memory_limit"},
      {"pool", "max_age"},
      {"pool", "trend"},
      {"pool", "hang_after"},
      {"pool", "sample_interval"},
      // Failure policy.
      {"pool", "poison_after"},
      {"pool", "breaker"},
      {"pool", "fallback"},
      {"pool.breaker", "failures"},
      {"pool.breaker", "window"},
      {"pool.breaker", "cooldown"},
  };
  return kKeys;
}

std::set<std::string> knownKeysOf(std::string_view section) {
  std::set<std::string> keys;
  for (const auto& k : knownKeys()) {
    if (k.section == section) keys.emplace(k.key);
  }
  return keys;
}

}  // namespace bulkhead::config
