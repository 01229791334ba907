#include "api/metrics.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <tuple>

namespace bulkhead::api {

namespace {

// Label values are escaped as the exposition format requires: backslash, quote, newline.
std::string escape(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

// Counts and byte sizes exactly (an 80 GiB GPU's bytes need 11 digits; "%.9g" rounded them), other
// values as the shortest text that reads back as the same double.
std::string number(double v) {
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {  // an integer a double holds
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    // The shortest of 15 or 17 digits that reads back as v: 0.005 stays "0.005" (a bucket's le).
    std::snprintf(buf, sizeof buf, "%.15g", v);
    if (std::strtod(buf, nullptr) != v) std::snprintf(buf, sizeof buf, "%.17g", v);
  }
  return buf;
}

class Writer {
 public:
  void family(const char* name, const char* type, const char* help) {
    out_ << "# HELP " << name << ' ' << help << '\n' << "# TYPE " << name << ' ' << type << '\n';
  }
  void sample(const std::string& name, const std::map<std::string, std::string>& labels,
              double value) {
    out_ << name;
    if (!labels.empty()) {
      out_ << '{';
      bool first = true;
      for (const auto& [k, v] : labels) {
        out_ << (first ? "" : ",") << k << "=\"" << escape(v) << '"';
        first = false;
      }
      out_ << '}';
    }
    out_ << ' ' << number(value) << '\n';
  }
  void histogram(const std::string& name, std::map<std::string, std::string> labels,
                 const core::LatencyHistogram& h) {
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < core::LatencyHistogram::kBuckets; ++i) {
      cumulative += h.counts[i];
      labels["le"] = number(core::LatencyHistogram::kBounds[i]);
      sample(name + "_bucket", labels, static_cast<double>(cumulative));
    }
    labels["le"] = "+Inf";
    sample(name + "_bucket", labels, static_cast<double>(h.count));
    labels.erase("le");
    sample(name + "_sum", labels, h.sum);
    sample(name + "_count", labels, static_cast<double>(h.count));
  }
  std::string str() const { return out_.str(); }

 private:
  std::ostringstream out_;
};

void clusterJobMetrics(Writer& w, const std::string& name, const cluster::ClusterRunner& jobs) {
  const cluster::ClusterRunner::Counters& c = jobs.counters();
  const std::pair<const char*, std::uint64_t> counters[] = {
      {"sent", c.sent}, {"taken", c.taken}, {"taken_over", c.takenOver}, {"poisoned", c.poisoned}};
  w.family("bulkhead_cluster_jobs_total", "counter",
           "Cluster jobs by what this node did with them: sent (to a pool's stream), taken (from "
           "one, and run or ended here), taken_over (of those, from a node that stopped "
           "refreshing them), poisoned (ended for having been handed out too often).");
  for (const auto& [what, n] : counters) {
    w.sample("bulkhead_cluster_jobs_total", {{"node", name}, {"what", what}},
             static_cast<double>(n));
  }
  w.family("bulkhead_cluster_jobs_waiting", "gauge",
           "Jobs this node sent to the cluster whose outcome has not come back yet.");
  w.sample("bulkhead_cluster_jobs_waiting", {{"node", name}},
           static_cast<double>(jobs.sentWaiting()));
  w.family("bulkhead_cluster_outcomes_unwritten", "gauge",
           "Outcomes of jobs run here not yet stored in Redis (kept while it is away).");
  w.sample("bulkhead_cluster_outcomes_unwritten", {{"node", name}},
           static_cast<double>(jobs.outcomesUnwritten()));
}

}  // namespace

std::string renderMetrics(const runtime::Supervisor& supervisor, const jobs::JobsService& jobs,
                          cluster::NodeParts node) {
  Writer w;
  struct PoolData {
    std::string name;
    const core::Pool* pool;
  };
  std::vector<PoolData> pools;
  supervisor.forEachPool([&](const runtime::Supervisor::PoolView& p) {
    pools.push_back({p.pool.policy().name, &p.pool});
  });

  w.family("bulkhead_jobs_total", "counter", "Jobs that ended, by pool and outcome.");
  for (const auto& p : pools) {
    for (core::Outcome o : core::kAllOutcomes) {
      auto it = p.pool->counters().outcomes.find(o);
      w.sample("bulkhead_jobs_total",
               {{"pool", p.name}, {"outcome", std::string(core::outcomeName(o))}},
               it == p.pool->counters().outcomes.end() ? 0 : static_cast<double>(it->second));
    }
  }
  w.family("bulkhead_jobs_submitted_total", "counter", "Jobs accepted for a pool.");
  for (const auto& p : pools) {
    w.sample("bulkhead_jobs_submitted_total", {{"pool", p.name}},
             static_cast<double>(p.pool->counters().submitted));
  }
  w.family("bulkhead_job_retries_total", "counter", "Attempts re-run on a fresh worker.");
  for (const auto& p : pools) {
    w.sample("bulkhead_job_retries_total", {{"pool", p.name}},
             static_cast<double>(p.pool->counters().retries));
  }
  struct Phase {
    const char* metric;
    const char* help;
    const core::LatencyHistogram core::PoolCounters::*histogram;
  };
  for (const Phase& phase :
       {Phase{"bulkhead_job_queue_seconds", "Time jobs waited for a worker.",
              &core::PoolCounters::queueSeconds},
        Phase{"bulkhead_job_run_seconds", "Time jobs ran on workers (all attempts).",
              &core::PoolCounters::runSeconds},
        Phase{"bulkhead_job_total_seconds", "Time from submission to outcome.",
              &core::PoolCounters::totalSeconds}}) {
    w.family(phase.metric, "histogram", phase.help);
    for (const auto& p : pools) {
      w.histogram(phase.metric, {{"pool", p.name}}, p.pool->counters().*phase.histogram);
    }
  }
  // Each family's samples must be contiguous: one loop over the pools per family.
  auto perPool = [&](const char* name, const char* type, const char* help, auto emit) {
    w.family(name, type, help);
    for (const auto& p : pools) emit(p);
  };
  perPool("bulkhead_queue_length", "gauge", "Jobs waiting for a worker.", [&](const PoolData& p) {
    w.sample("bulkhead_queue_length", {{"pool", p.name}},
             static_cast<double>(p.pool->queueLength()));
  });
  perPool("bulkhead_workers", "gauge", "Worker processes by state.", [&](const PoolData& p) {
    std::map<std::string, int> byState;
    for (const char* s : {"spawning", "starting", "idle", "busy", "stopping", "killing"}) {
      byState[s] = 0;
    }
    if (p.pool->policy().standby > 0) byState["standby"] = 0;
    for (const auto& wv : p.pool->workers()) {
      // A ready standby is not capacity: counted apart from the idle workers.
      const bool standing = wv.standby && !wv.retiring && wv.state == core::WorkerState::kIdle;
      byState[standing ? "standby" : std::string(core::workerStateName(wv.state))]++;
    }
    for (const auto& [state, n] : byState) {
      w.sample("bulkhead_workers", {{"pool", p.name}, {"state", state}}, n);
    }
  });
  perPool("bulkhead_breaker_open", "gauge",
          "Circuit breaker state: 0 closed, 1 open, 0.5 half-open (probing).",
          [&](const PoolData& p) {
            double breaker = 0;
            switch (p.pool->breakerState()) {
              case core::BreakerState::kClosed:
                breaker = 0;
                break;
              case core::BreakerState::kOpen:
                breaker = 1;
                break;
              case core::BreakerState::kHalfOpen:
                breaker = 0.5;
                break;
            }
            w.sample("bulkhead_breaker_open", {{"pool", p.name}}, breaker);
          });
  perPool("bulkhead_quarantined_payloads", "gauge", "Payloads refused as poison.",
          [&](const PoolData& p) {
            w.sample("bulkhead_quarantined_payloads", {{"pool", p.name}},
                     static_cast<double>(p.pool->quarantine().size()));
          });
  using Counter = std::uint64_t core::PoolCounters::*;
  for (auto [name, help, field] :
       {std::tuple<const char*, const char*, Counter>{"bulkhead_worker_starts_total",
                                                      "Worker processes started.",
                                                      &core::PoolCounters::workerStarts},
        std::tuple<const char*, const char*, Counter>{
            "bulkhead_worker_start_failures_total", "Workers that died or timed out before ready.",
            &core::PoolCounters::startFailures},
        std::tuple<const char*, const char*, Counter>{"bulkhead_worker_deaths_total",
                                                      "Workers that died unexpectedly.",
                                                      &core::PoolCounters::workerDeaths},
        std::tuple<const char*, const char*, Counter>{
            "bulkhead_standby_promotions_total",
            "Standby workers that took the place of a worker that died, was killed or retired.",
            &core::PoolCounters::standbyPromotions},
        std::tuple<const char*, const char*, Counter>{
            "bulkhead_prefetched_jobs_total",
            "Jobs sent to a busy worker ahead of time (prefetch_below).",
            &core::PoolCounters::prefetched},
        std::tuple<const char*, const char*, Counter>{
            "bulkhead_prefetch_returns_total",
            "Prefetched jobs sent back to the queue unstarted: their worker ended first.",
            &core::PoolCounters::prefetchReturns}}) {
    perPool(name, "counter", help, [&, name = name, field = field](const PoolData& p) {
      w.sample(name, {{"pool", p.name}}, static_cast<double>(p.pool->counters().*field));
    });
  }
  perPool("bulkhead_worker_recycles_total", "counter", "Workers replaced by a rule, by cause.",
          [&](const PoolData& p) {
            for (const auto& [cause, n] : p.pool->counters().recyclesByCause) {
              w.sample("bulkhead_worker_recycles_total", {{"pool", p.name}, {"cause", cause}},
                       static_cast<double>(n));
            }
          });
  using Measure = double (*)(const core::ResourceSample&);
  struct WorkerGauge {
    const char* name;
    const char* type;
    const char* help;
    Measure measure;
  };
  for (const WorkerGauge& g : {
           WorkerGauge{"bulkhead_worker_rss_bytes", "gauge", "Resident memory (last sample).",
                       [](const core::ResourceSample& s) { return double(s.rssBytes); }},
           WorkerGauge{"bulkhead_worker_threads", "gauge", "Threads (last sample).",
                       [](const core::ResourceSample& s) { return double(s.threads); }},
           WorkerGauge{"bulkhead_worker_maps", "gauge", "Memory maps (last count).",
                       [](const core::ResourceSample& s) { return double(s.maps); }},
           WorkerGauge{"bulkhead_worker_fds", "gauge", "Open file descriptors (last sample).",
                       [](const core::ResourceSample& s) { return double(s.fds); }},
           WorkerGauge{"bulkhead_worker_cpu_seconds_total", "counter", "CPU time (last sample).",
                       [](const core::ResourceSample& s) { return s.cpuSeconds; }},
           WorkerGauge{"bulkhead_worker_gpu_memory_bytes", "gauge",
                       "GPU memory held by the worker's processes, every device (pools with gpus).",
                       [](const core::ResourceSample& s) { return double(s.gpuMemoryBytes); }},
       }) {
    perPool(g.name, g.type, g.help, [&](const PoolData& p) {
      for (const auto& wv : p.pool->workers()) {
        if (!wv.latestSample) continue;
        double value = g.measure(*wv.latestSample);
        if (value < 0) continue;  // maps not counted yet, no GPU reading
        w.sample(g.name, {{"pool", p.name}, {"worker", wv.name}}, value);
      }
    });
  }
  perPool("bulkhead_worker_jobs_total", "counter", "Jobs served by each worker.",
          [&](const PoolData& p) {
            for (const auto& wv : p.pool->workers()) {
              w.sample("bulkhead_worker_jobs_total", {{"pool", p.name}, {"worker", wv.name}},
                       static_cast<double>(wv.jobsServed));
            }
          });
  using Stat = double (*)(const runtime::Supervisor::ZygoteStats&);
  for (auto [name, type, help, stat] : {
           std::tuple<const char*, const char*, const char*, Stat>{
               "bulkhead_zygote_up", "gauge",
               "Zygote-mode pools: 1 when the zygote is ready to fork, else 0.",
               [](const auto& z) { return z.ready ? 1.0 : 0.0; }},
           std::tuple<const char*, const char*, const char*, Stat>{
               "bulkhead_zygote_refused", "gauge",
               "1 when the zygote refused to fork (threads or CUDA in preload).",
               [](const auto& z) { return z.refused ? 1.0 : 0.0; }},
           std::tuple<const char*, const char*, const char*, Stat>{
               "bulkhead_zygote_starts_total", "counter", "Zygote processes started.",
               [](const auto& z) { return double(z.starts); }},
           std::tuple<const char*, const char*, const char*, Stat>{
               "bulkhead_zygote_deaths_total", "counter",
               "Zygote processes that died or were killed.",
               [](const auto& z) { return double(z.deaths); }},
           std::tuple<const char*, const char*, const char*, Stat>{
               "bulkhead_zygote_forks_total", "counter", "Workers forked by the zygote.",
               [](const auto& z) { return double(z.forked); }},
       }) {
    perPool(name, type, help, [&, name = name, stat = stat](const PoolData& p) {
      if (auto z = supervisor.zygoteStats(p.name)) w.sample(name, {{"pool", p.name}}, stat(*z));
    });
  }
  w.family("bulkhead_orphans_reaped_total", "counter",
           "Grandchildren of workers reaped by the supervisor (child subreaper).");
  w.sample("bulkhead_orphans_reaped_total", {}, static_cast<double>(supervisor.orphansReaped()));
  const auto& files = *supervisor.payloadFiles();
  w.family("bulkhead_payload_files_idle_bytes", "gauge",
           "Memory held by payload memfds kept for their pool's next large job (dropped after 2 s "
           "unused).");
  w.sample("bulkhead_payload_files_idle_bytes", {}, static_cast<double>(files.idleBytes()));
  w.family("bulkhead_payload_files_idle", "gauge", "Payload memfds kept for reuse.");
  w.sample("bulkhead_payload_files_idle", {}, static_cast<double>(files.idleFiles()));
  w.family("bulkhead_payload_file_reuses_total", "counter",
           "Large job bodies read into a payload memfd their pool used before.");
  w.sample("bulkhead_payload_file_reuses_total", {}, static_cast<double>(files.reuses()));
  if (jobs.journaled()) {
    w.family("bulkhead_journal_errors_total", "counter",
             "Journal reads and writes that failed (disk full, I/O error); the daemon degraded.");
    w.sample("bulkhead_journal_errors_total", {}, static_cast<double>(jobs.journalErrors()));
  }
  if (node) {  // [cluster]: this node's view of the others, and its jobs (docs/cluster.md)
    const cluster::Membership* cluster = node.membership;
    const auto snapshot = cluster->view();
    const cluster::MembershipView& view = *snapshot;
    w.family("bulkhead_cluster_redis_connected", "gauge",
             "1 while this node's membership connection to Redis works.");
    w.sample("bulkhead_cluster_redis_connected", {{"node", cluster->nodeName()}},
             view.connected ? 1 : 0);
    w.family("bulkhead_cluster_nodes", "gauge",
             "Nodes alive in the cluster as this node's last heartbeat read them (itself too).");
    w.sample("bulkhead_cluster_nodes", {{"node", cluster->nodeName()}},
             static_cast<double>(view.nodes.size()));
    if (node.jobs) clusterJobMetrics(w, cluster->nodeName(), *node.jobs);
  }
  return w.str();
}

}  // namespace bulkhead::api
