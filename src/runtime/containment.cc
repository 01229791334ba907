// Containment without a cgroup (src/os/orphans.h): what a worker leaves running is found through
// /proc and killed with it, and nothing we started outlives a shutdown. May not touch: workers'
// I/O or policy; a worker with a cgroup is contained by removing the cgroup (worker_channel.cc).

#include "runtime/shell_state.h"

namespace bulkhead::runtime {

using nlohmann::json;

// ---------------------------------------------------------------- containment without a cgroup

// What a worker leaves running after it died or was given up, when it has no cgroup to empty:
// os::killOrphans finds it through its lineage and its BULKHEAD_WORKER_ID tag (src/os/orphans.h).
// A zygote's spare and the workers it is forking are never among them.

namespace {

constexpr std::string_view kWorkerTagVariable = "BULKHEAD_WORKER_ID";  // runtime/worker_spec.cc

std::string pidList(const std::vector<os::ProcessKey>& keys) {
  std::string out;
  for (std::size_t i = 0; i < keys.size() && i < 16; ++i) {
    out += (out.empty() ? "" : ",") + std::to_string(keys[i].pid);
  }
  return keys.size() > 16 ? out + ",..." : out;
}

}  // namespace

os::OrphanQuery Supervisor::orphanQuery() const {
  os::OrphanQuery q;
  q.self = host_->selfPid();
  q.tagName = std::string(kWorkerTagVariable);
  for (const auto& [pid, worker] : byPid_) q.known.insert(pid);
  return q;
}

void Supervisor::reportSweep(const std::string& whose, const os::SweepResult& result) {
  // A zygote's spare killed at shutdown is expected (it would end with its zygote): not news.
  std::set<std::string> zygotes;
  for (const auto& pool : pools_) {
    if (pool->zygote) zygotes.insert(pool->config.name + "-zygote");
  }
  std::vector<os::ProcessKey> left;
  for (const auto& key : result.killed) {
    auto tag = result.tagOf.find(key.pid);
    if (tag == result.tagOf.end() || !zygotes.count(tag->second)) left.push_back(key);
  }
  if (!left.empty()) {
    logLine(whose + " left " + std::to_string(left.size()) +
            " process(es) running; killed pid(s) " + pidList(left));
  }
  if (!result.settled) {
    logLine(whose + ": its processes were still forking after " + std::to_string(result.rounds) +
            " rounds; killed what was found");
  }
}

void Supervisor::killLeftovers(const WorkerIo& worker) {
  os::OrphanQuery q = orphanQuery();
  q.tags = {worker.name};
  if (auto it = lineage_.find(worker.pid); it != lineage_.end()) {
    q.lineage = std::move(it->second);
    lineage_.erase(it);
  }
  // Given up but not reaped: its pid is still its own, so its children can be found by it.
  if (byPid_.count(worker.pid)) q.releasedWorkers = {worker.pid};
  reportSweep("worker " + worker.name, os::killOrphans(host_->processTable(), q));
}

void Supervisor::killOrphansAtShutdown() {
  if (!shuttingDown_ || orphansSwept_) return;
  for (const auto& [pid, worker] : byPid_) {
    if (!worker->isZygote && !worker->closed) return;  // the last worker's end comes later
  }
  orphansSwept_ = true;
  os::OrphanQuery q = orphanQuery();
  q.everything = true;  // nothing we started may outlive us
  reportSweep("shutdown: the workers", os::killOrphans(host_->processTable(), q));
}

void Supervisor::armLineage() {
  if (lineageArmed_) return;
  lineageArmed_ = true;
  // The pools' shortest sample interval, but not below a second: the walk reads every process.
  core::Duration interval = std::chrono::hours(1);
  for (const auto& pool : pools_) {
    interval = std::min(interval, core::Duration(pool->config.sampleInterval));
  }
  lineageTimer_->expiresAt(now() + std::max(interval, core::Duration(std::chrono::seconds(1))),
                           [this] {
                             lineageArmed_ = false;
                             if (recordLineage()) armLineage();
                           });
}

bool Supervisor::recordLineage() {
  bool pending = false;  // a worker without a cgroup whose pid is not known yet (zygote fork)
  std::vector<pid_t> tracked;
  for (const auto& pool : pools_) {
    for (const auto& [id, worker] : pool->workers) {
      if (worker->closed || worker->cgroup) continue;
      if (worker->pid > 0) {
        tracked.push_back(worker->pid);
      } else {
        pending = true;
      }
    }
  }
  std::erase_if(lineage_, [&](const auto& entry) {
    return std::find(tracked.begin(), tracked.end(), entry.first) == tracked.end();
  });
  if (tracked.empty()) return pending;
  // One walk of the process table for all of them, only while some worker has no cgroup: the
  // kernel formats /proc/PID/stat for every process, measured at 20-30 us per process on this
  // project's 2-vCPU VMs under load (about 3 ms for 100 processes).
  const os::ProcTable table = host_->processTable().readTable();
  for (pid_t pid : tracked) lineage_[pid] = os::updateLineage(table, pid, lineage_[pid]);
  return true;
}

}  // namespace bulkhead::runtime
