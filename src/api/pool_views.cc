#include "api/pool_views.h"

#include <chrono>
#include <string>

#include "core/outcome.h"
#include "core/signal_names.h"
#include "core/zygote_lifecycle.h"

namespace bulkhead::api {

using nlohmann::json;

namespace {

double secondsBetween(core::Time from, core::Time to) {
  return std::chrono::duration<double>(to - from).count();
}

json countersJson(const core::PoolCounters& c) {
  json counters = {{"submitted", c.submitted},
                   {"retries", c.retries},
                   {"worker_starts", c.workerStarts},
                   {"start_failures", c.startFailures},
                   {"worker_deaths", c.workerDeaths},
                   {"recycles", c.recycles},
                   {"standby_promotions", c.standbyPromotions},
                   {"prefetched", c.prefetched},
                   {"prefetch_returns", c.prefetchReturns}};
  for (core::Outcome o : core::kAllOutcomes) {
    auto it = c.outcomes.find(o);
    counters[std::string(core::outcomeName(o))] = it == c.outcomes.end() ? 0 : it->second;
  }
  return counters;
}

json workersJson(const runtime::Supervisor::PoolView& p, core::Time t, bool withHistory) {
  json workers = json::array();
  for (const auto& w : p.pool.workers()) {
    std::string state(core::workerStateName(w.state));
    if (w.retiring && w.state == core::WorkerState::kIdle) state = "retiring";
    if (w.standby && !w.retiring && w.state == core::WorkerState::kIdle) state = "standby";
    json entry = {{"id", w.name},
                  {"pid", w.pid},
                  {"slot", w.slot},
                  {"state", state},
                  {"jobs_served", w.jobsServed},
                  {"age_s", secondsBetween(w.startedAt, t)}};
    if (w.job) entry["job"] = std::to_string(*w.job);
    if (w.nextJob) entry["next_job"] = std::to_string(*w.nextJob);
    if (w.standby) entry["standby"] = true;
    if (!w.recycleCause.empty()) entry["recycle_cause"] = w.recycleCause;
    if (w.latestSample) entry["sample"] = sampleJson(*w.latestSample);
    if (withHistory) {
      json history = json::array();
      for (const auto& [at, sample] : p.history(w.id)) {
        json point = sampleJson(sample);
        point["age_s"] = secondsBetween(at, t);
        history.push_back(std::move(point));
      }
      entry["history"] = std::move(history);
    }
    workers.push_back(std::move(entry));
  }
  return workers;
}

// The limits as the core enforces them: read from the policy config::toPolicy built.
json limitsJson(const core::PoolPolicy& policy) {
  return {{"memory_limit_bytes", policy.memoryLimitBytes},
          {"pids_limit", policy.pidsLimit},
          {"max_rss_bytes", policy.bounds.maxRssBytes},
          {"max_threads", policy.bounds.maxThreads},
          {"max_maps", policy.bounds.maxMaps},
          {"max_fds", policy.bounds.maxFds},
          {"max_jobs", policy.maxJobs},
          {"hang_after_s", std::chrono::duration<double>(policy.hangAfter).count()}};
}

json zygoteJson(const std::optional<runtime::Supervisor::ZygoteStats>& stats) {
  if (!stats) return nullptr;
  const auto& z = *stats;
  json zygote = {{"state", core::ZygoteLifecycle::stateName(z.state)},
                 {"pid", z.pid ? json(*z.pid) : json(nullptr)},
                 {"starts", z.starts},
                 {"deaths", z.deaths},
                 {"forked", z.forked},
                 {"forks_pending", z.forksPending},
                 {"spawning_instead", z.spawningInstead}};
  if (!z.refusal.empty()) zygote["refusal"] = z.refusal;
  return zygote;
}

json poolViewJson(const runtime::Supervisor::PoolView& p, core::Time t, bool withHistory) {
  const core::Pool& pool = p.pool;
  const core::PoolPolicy& policy = pool.policy();
  json recycles = json::object();
  for (const auto& [cause, n] : pool.counters().recyclesByCause) recycles[cause] = n;
  json events = json::array();
  for (const auto& e : pool.recentEvents()) {
    events.push_back({{"kind", e.kind},
                      {"worker", e.worker},
                      {"detail", e.detail},
                      {"age_s", secondsBetween(e.at, t)}});
  }
  return {{"name", policy.name},
          {"handler", p.handler},
          {"mode", p.zygoteMode ? "zygote" : "spawn"},
          {"zygote", zygoteJson(p.zygote)},
          {"workers_target", policy.workers},
          {"standby_target", policy.standby},
          {"ready_workers", pool.readyWorkers()},
          {"last_start_failure",
           pool.lastStartFailure() ? json(pool.lastStartFailure()->cause) : json(nullptr)},
          {"breaker", std::string(core::breakerStateName(pool.breakerState()))},
          {"fallback", p.fallback.empty() ? json(nullptr) : json(p.fallback)},
          {"quarantined", pool.quarantine().size()},
          {"queue_length", pool.queueLength()},
          {"queue_limit", policy.queueLimit},
          {"in_flight", pool.inFlight()},
          {"unavailable", pool.unavailable()},
          {"counters", countersJson(pool.counters())},
          {"recycles_by_cause", std::move(recycles)},
          {"limits", limitsJson(policy)},
          {"workers", workersJson(p, t, withHistory)},
          {"events", std::move(events)}};
}

}  // namespace

json sampleJson(const core::ResourceSample& s) {
  json j = {{"rss_bytes", s.rssBytes},
            {"threads", s.threads},
            {"fds", s.fds},
            {"cpu_seconds", s.cpuSeconds}};
  j["maps"] = s.maps >= 0 ? json(s.maps) : json(nullptr);
  if (s.gpuMemoryBytes >= 0) j["gpu_memory_bytes"] = s.gpuMemoryBytes;
  return j;
}

json poolsJson(const runtime::Supervisor& supervisor) {
  const core::Time t = supervisor.now();
  json pools = json::array();
  supervisor.forEachPool(
      [&](const runtime::Supervisor::PoolView& p) { pools.push_back(poolViewJson(p, t, false)); });
  return {{"pools", std::move(pools)},
          {"uptime_s", secondsBetween(supervisor.startedAt(), t)},
          {"shutting_down", supervisor.shuttingDown()},
          {"orphans_reaped", supervisor.orphansReaped()}};
}

std::optional<json> poolJson(const runtime::Supervisor& supervisor, std::string_view name) {
  std::optional<json> out;
  const core::Time t = supervisor.now();
  supervisor.visitPool(
      name, [&](const runtime::Supervisor::PoolView& p) { out = poolViewJson(p, t, true); });
  return out;
}

json quarantineJson(const runtime::Supervisor& supervisor) {
  json entries = json::array();
  const core::Time t = supervisor.now();
  supervisor.forEachPool([&](const runtime::Supervisor::PoolView& p) {
    for (const auto* e : p.pool.quarantine().entries()) {
      json attempts = json::array();
      for (const auto& a : e->attempts) {
        json j = {{"worker", a.worker},
                  {"outcome", std::string(core::outcomeName(a.outcome))},
                  {"cause", a.cause}};
        if (a.exit.signal) j["signal"] = core::signalName(*a.exit.signal);
        attempts.push_back(std::move(j));
      }
      entries.push_back({{"pool", e->pool},
                         {"fingerprint", e->fingerprint},
                         {"job", std::to_string(e->jobId)},
                         {"age_s", secondsBetween(e->at, t)},
                         {"detail", e->detail},
                         {"attempts", std::move(attempts)}});
    }
  });
  return {{"quarantine", std::move(entries)}};
}

}  // namespace bulkhead::api
