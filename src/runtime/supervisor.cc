// The event-loop shell (see supervisor.h): owns the loop, the pools, the job ids and replies,
// the core's timer and the child exits its Host reports, and carries out the actions the core
// returns. The rooms around it:
// worker_channel.cc (one worker's socket and pipes), zygote_driver.cc, sampler_driver.cc,
// containment.cc, event_feed.h; shell_state.h holds the records they share. May not touch: policy
// (src/core decides) or JSON views (src/api/pool_views.cc renders its typed snapshots).
#include "runtime/supervisor.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <utility>

#include "config/to_policy.h"
#include "core/payload_path.h"
#include "core/signal_names.h"
#include "core/zygote_lifecycle.h"
#include "os/cgroups.h"
#include "os/proc.h"
#include "os/process.h"
#include "proto/frame.h"
#include "runtime/linux_host.h"
#include "runtime/operator_log.h"
#include "runtime/shell_state.h"
#include "runtime/worker_spec.h"
#include "util/byte_ring.h"

namespace bulkhead::runtime {

using nlohmann::json;

Supervisor::Supervisor(asio::io_context& io, const config::Config& config,
                       SupervisorOptions options)
    : io_(io),
      host_(options.host ? std::move(options.host) : makeLinuxHost(io)),
      options_(std::move(options)),
      timer_(host_->makeTimer()),
      sampler_(host_->makeTimer()),
      // Its own clock: a session filling a file may outlive the host (shutdown).
      payloadFiles_(os::PayloadFiles::make(
          {.maxIdleBytes = config.server.payloadFileCache},
          [] { return core::fromSteady(std::chrono::steady_clock::now()); })),
      payloadTrim_(host_->makeTimer()),
      startedAt_(now()) {
  lineageTimer_ = host_->makeTimer();
  bool limited = false;
  for (const auto& pool : config.pools) {
    pools_.push_back(std::make_unique<PoolRuntime>(
        pool, config::toPolicy(pool, config.server, config.pools.size()), startedAt_));
    limited = limited || wantsLimits(pool);
  }
  startGpuReadings(config);
  std::string whyNone;
  if (options_.cgroups) {
    cgroups_ = std::move(options_.cgroups);
    whyNone = cgroups_->describe();
  } else {
    cgroups_ = host_->detectCgroups(&whyNone);
  }
  if (cgroups_->mode() == os::CgroupMode::kNone) {
    logLine("no usable cgroup (" + whyNone +
            "): what workers leave running is found through /proc and killed with them" +
            (limited ? "; memory_limit falls back to RLIMIT_AS, pids_limit is not enforced by the "
                       "kernel; sampling and recycle rules still apply"
                     : ""));
    return;
  }
  logLine(cgroups_->describe());
  std::string error;
  int stale = cgroups_->cleanupStale(&error);
  if (stale > 0) logLine("removed " + std::to_string(stale) + " stale cgroup(s) of earlier runs");
  if (!error.empty()) logLine("stale cgroup cleanup: " + error);
}

Supervisor::~Supervisor() {
  // Whatever is still alive dies with us (PDEATHSIG would do it too, but be explicit).
  for (auto& [pid, worker] : byPid_) host_->signalGroup(pid, SIGKILL);
}

void Supervisor::start() {
  host_->onChildExits([this](const std::vector<os::ExitStatus>& exits) {
    for (const auto& exit : exits) onChildExit(exit.pid, exit.rawStatus);
    drain();
  });
  armSampler();
  for (auto& pool : pools_) post(*pool, core::TimePassed{});
  drain();
}

bool Supervisor::hasPool(std::string_view pool) const { return findPool(pool) != nullptr; }

std::uint64_t Supervisor::maxPayload(std::string_view pool) const {
  const PoolRuntime* p = findPool(pool);
  return p ? p->config.maxPayload : 0;
}

std::optional<std::uint64_t> Supervisor::payloadMemfdFrom(std::string_view pool) const {
  const PoolRuntime* p = findPool(pool);
  if (!p) return std::nullopt;
  return core::payloadMemfdFrom(p->config.memfdThreshold, p->config.memfdResultThreshold,
                                p->payloadView);
}

const Supervisor::PoolRuntime* Supervisor::findPool(std::string_view name) const {
  for (const auto& p : pools_) {
    if (p->config.name == name) return p.get();
  }
  return nullptr;
}

Supervisor::PoolRuntime* Supervisor::findPool(std::string_view name) {
  return const_cast<PoolRuntime*>(std::as_const(*this).findPool(name));
}

namespace {

core::JobSubmitted submission(core::JobId id, core::Payload payload, const JobOptions& o,
                              int hops) {
  return core::JobSubmitted{id,      std::move(payload), o.timeout, o.allowPoison,
                            o.async, o.deadline,         hops};
}

}  // namespace

std::variant<core::JobId, Supervisor::SubmitError> Supervisor::submit(std::string_view poolName,
                                                                      core::Payload payload,
                                                                      JobOptions options,
                                                                      Reply reply) {
  const core::JobId id = nextJobId_;
  if (auto error = submitWithId(id, poolName, std::move(payload), options, std::move(reply))) {
    return *error;
  }
  return id;
}

std::optional<Supervisor::SubmitError> Supervisor::submitWithId(core::JobId id,
                                                                std::string_view poolName,
                                                                core::Payload payload,
                                                                JobOptions options, Reply reply) {
  PoolRuntime* pool = findPool(poolName);
  if (!pool) return SubmitError::kUnknownPool;
  if (payload->size() > pool->config.maxPayload) return SubmitError::kPayloadTooLarge;
  if (pending_.count(id)) return SubmitError::kDuplicateId;
  startJobIdsAfter(id);
  pending_.emplace(id, PendingJob{std::move(reply), pool, payload, options, 0, {}});
  post(*pool, submission(id, std::move(payload), options, 0));
  drain();
  return std::nullopt;
}

std::optional<std::string> Supervisor::jobState(core::JobId job) const {
  auto it = pending_.find(job);
  if (it == pending_.end()) return std::nullopt;
  return it->second.pool->pool.jobStateName(job);
}

void Supervisor::cancel(core::JobId job) {
  auto it = pending_.find(job);
  if (it == pending_.end()) return;
  post(*it->second.pool, core::JobCancelled{job});
  drain();
}

void Supervisor::shutdown(std::function<void()> onStopped) {
  if (shuttingDown_) return;
  shuttingDown_ = true;
  onStopped_ = std::move(onStopped);
  for (auto& pool : pools_) post(*pool, core::ShutdownRequested{});
  drain();
}

// ---------------------------------------------------------------- core plumbing

void Supervisor::post(PoolRuntime& pool, core::Event event) {
  events_.emplace_back(&pool, std::move(event));
}

void Supervisor::drain() {
  if (draining_) return;  // the outer drain picks up what was posted
  draining_ = true;
  while (!events_.empty()) {
    auto [pool, event] = std::move(events_.front());
    events_.pop_front();
    auto actions = pool->pool.handle(event, now());
    for (auto& action : actions) execute(*pool, action);
  }
  draining_ = false;
  collectEvents();
  armTimer();
  checkStopped();
}

void Supervisor::checkStopped() {
  if (!shuttingDown_ || !onStopped_) return;
  for (const auto& pool : pools_) {
    if (!pool->pool.stopped()) return;
  }
  for (auto& pool : pools_) {
    if (pool->zygote && pool->zygote->io) killZygote(*pool, "the supervisor shut down");
  }
  killOrphansAtShutdown();  // a pool with no live worker left never swept from closeWorkerIo
  auto done = std::move(onStopped_);
  onStopped_ = nullptr;
  done();
}

void Supervisor::armTimer() {
  std::optional<core::Time> next;
  for (const auto& pool : pools_) {
    auto d = pool->pool.nextDeadline();
    if (d && (!next || *d < *next)) next = d;
    if (pool->zygote && !shuttingDown_) {
      d = pool->zygote->life.nextDeadline();
      if (d && (!next || *d < *next)) next = d;
    }
  }
  if (next == armedFor_) return;
  armedFor_ = next;
  if (!next) {
    timer_->cancel();
    return;
  }
  timer_->expiresAt(*next, [this, armed = *next] {
    if (armedFor_ != armed) return;
    armedFor_.reset();
    for (auto& pool : pools_) {
      if (pool->zygote) tendZygote(*pool);
      post(*pool, core::TimePassed{});
    }
    drain();
  });
}

void Supervisor::execute(PoolRuntime& pool, core::Action& action) {
  std::visit(
      [&](auto& a) {
        using A = std::decay_t<decltype(a)>;
        if constexpr (std::is_same_v<A, core::SpawnWorker>) {
          spawn(pool, a);
        } else if constexpr (std::is_same_v<A, core::SendJob>) {
          auto it = pool.workers.find(a.worker);
          if (it == pool.workers.end()) return;
          it->second->tails[kStacks].clear();  // stacks in a report belong to this job
          if (a.payload->inFile()) {           // JOB_FD: the size, and the memfd as SCM_RIGHTS
            sendFrame(*it->second,
                      proto::encodeFrame(proto::FrameType::kJobFd, a.job,
                                         proto::encodeFileSize(a.payload->size())),
                      a.payload);
          } else {
            sendFrame(*it->second,
                      proto::encodeHeader(proto::FrameType::kJob, a.job,
                                          static_cast<std::uint32_t>(a.payload->size())),
                      a.payload);
          }
        } else if constexpr (std::is_same_v<A, core::SendShutdown>) {
          auto it = pool.workers.find(a.worker);
          if (it == pool.workers.end()) return;
          sendFrame(*it->second, proto::encodeHeader(proto::FrameType::kShutdown, 0, 0), nullptr);
        } else if constexpr (std::is_same_v<A, core::DumpStacks>) {
          auto it = pool.workers.find(a.worker);
          if (it == pool.workers.end() || it->second->pid <= 0) return;
          host_->signalProcess(it->second->pid, it->second->pidfd.get(), kDumpSignal);
        } else if constexpr (std::is_same_v<A, core::SignalWorkerGroup>) {
          auto it = pool.workers.find(a.worker);
          if (it == pool.workers.end()) return;
          host_->signalGroup(it->second->pid,
                             a.signal == core::GroupSignal::kKill ? SIGKILL : SIGTERM);
        } else if constexpr (std::is_same_v<A, core::ReleaseWorker>) {
          auto it = pool.workers.find(a.worker);
          if (it == pool.workers.end()) return;
          auto worker = it->second;
          pool.workers.erase(it);
          if (pool.zygote) pool.zygote->forks.erase(a.worker);  // a FORKED for it is killed
          if (!worker->closed) {
            // The core gave up on a process that has not exited (SIGKILL ignored in D state):
            // keep reaping it through byPid_, but stop listening to it.
            host_->signalGroup(worker->pid, SIGKILL);
            closeWorkerIo(*worker);
          }
        } else if constexpr (std::is_same_v<A, core::Resubmit>) {
          auto it = pending_.find(a.job);
          if (it == pending_.end()) return;
          PendingJob& job = it->second;
          // The route and its bound are the core's (core/fallback_route.h); the shell submits.
          if (PoolRuntime* fallback = findPool(a.pool)) {
            job.pool = fallback;
            job.hops++;
            job.via.push_back(pool.config.name);
            post(*fallback, submission(a.job, job.payload, job.options, job.hops));
            return;
          }
          auto reply = std::move(job.reply);
          auto via = std::move(job.via);
          pending_.erase(it);
          a.report.fallbackFrom = std::move(via);
          reply(a.report);
        } else if constexpr (std::is_same_v<A, core::FinishJob>) {
          auto it = pending_.find(a.report.jobId);
          if (it == pending_.end()) return;
          PendingJob& job = it->second;
          auto reply = std::move(job.reply);
          auto via = std::move(job.via);
          pending_.erase(it);
          a.report.fallbackFrom = std::move(via);
          reply(a.report);
        }
      },
      action);
}

// ---------------------------------------------------------------- workers

void Supervisor::spawn(PoolRuntime& pool, const core::SpawnWorker& action) {
  const std::string name = pool.pool.workerName(action.worker);
  WorkerLimits limits;
  if (!prepareLimits(pool, action, name, limits)) return;
  if (!limits.cgroup) armLineage();  // what it leaves behind is found through /proc
  if (pool.zygote && !pool.zygote->spawnInstead) {
    forkFromZygote(pool, action, name, std::move(limits));
    return;
  }
  auto spec = buildWorkerSpec(pool.config, name, action.slot, options_.baseEnvironment,
                              options_.sdkDirectory);
  if (limits.cgroup) spec.joinCgroupFds = limits.cgroup->procsFds();
  spec.addressSpaceLimit = limits.addressSpaceLimit;
  auto result = host_->spawn(spec);
  if (limits.cgroup) limits.cgroup->closeProcsFds();
  if (auto* error = std::get_if<os::SpawnError>(&result)) {
    logLine("pool " + pool.config.name + ": cannot start " + name + ": " + error->describe());
    if (limits.cgroup) removeCgroup(*limits.cgroup);
    post(pool, core::WorkerSpawnFailed{action.worker, error->describe()});
    return;
  }
  auto& process = std::get<os::WorkerProcess>(result);
  auto worker = makeWorkerIo(pool, action.worker, name, process, /*zygote=*/false);
  worker->cgroup = std::move(limits.cgroup);
  pool.workers[action.worker] = worker;
  workerStarted(*worker, process.pid, std::move(process.pidfd));
}

bool Supervisor::prepareLimits(PoolRuntime& pool, const core::SpawnWorker& action,
                               const std::string& name, WorkerLimits& limits) {
  if (cgroups_->mode() == os::CgroupMode::kNone) {
    limits.addressSpaceLimit = pool.config.memoryLimit;  // the documented fallback (0: none)
    return true;
  }
  os::CgroupLimits wanted;
  if (pool.config.memoryLimit) wanted.memoryBytes = pool.config.memoryLimit;
  if (pool.config.pidsLimit) wanted.pids = pool.config.pidsLimit;
  std::string error;
  limits.cgroup = cgroups_->create(name, wanted, &error);
  if (limits.cgroup) return true;
  logLine("pool " + pool.config.name + ": cannot create a cgroup for " + name + ": " + error);
  if (!wantsLimits(pool.config)) {
    // Without limits the cgroup only contains what the worker starts; /proc does that too.
    return true;
  }
  post(pool, core::WorkerSpawnFailed{action.worker, "cgroup: " + error});
  return false;
}

// ---------------------------------------------------------------- views

core::Time Supervisor::now() const { return host_->now(); }

std::optional<Supervisor::ZygoteStats> Supervisor::zygoteStatsOf(const PoolRuntime& p) const {
  if (!p.zygote) return std::nullopt;
  const auto& z = *p.zygote;
  ZygoteStats stats;
  stats.state = z.life.state();
  stats.ready = stats.state == core::ZygoteLifecycle::State::kReady;
  stats.refused = stats.state == core::ZygoteLifecycle::State::kRefused;
  stats.starts = z.life.starts();
  stats.deaths = z.life.deaths();
  stats.forked = z.forked;
  if (z.io) stats.pid = z.io->pid;
  stats.forksPending = z.forks.size();
  stats.spawningInstead = z.spawnInstead;
  stats.refusal = z.life.refusal();
  return stats;
}

Supervisor::PoolView Supervisor::viewOf(const PoolRuntime& p) const {
  static const std::deque<TimedSample> kNoHistory;
  return PoolView{p.pool,
                  p.config.handler,
                  p.config.zygote,
                  p.config.fallback,
                  zygoteStatsOf(p),
                  [&p](core::WorkerId id) -> const std::deque<TimedSample>& {
                    auto io = p.workers.find(id);
                    return io == p.workers.end() ? kNoHistory : io->second->samples;
                  }};
}

void Supervisor::forEachPool(const std::function<void(const PoolView&)>& visit) const {
  for (const auto& p : pools_) visit(viewOf(*p));
}

bool Supervisor::visitPool(std::string_view name,
                           const std::function<void(const PoolView&)>& visit) const {
  const PoolRuntime* p = findPool(name);
  if (!p) return false;
  visit(viewOf(*p));
  return true;
}

std::optional<Supervisor::ZygoteStats> Supervisor::zygoteStats(std::string_view name) const {
  const PoolRuntime* p = findPool(name);
  return p ? std::optional<ZygoteStats>(zygoteStatsOf(*p)) : std::nullopt;
}

void Supervisor::collectEvents() {
  for (auto& pool : pools_) {
    if (pool->pool.eventsNoted() == pool->eventsSeen) continue;
    for (const auto& e : pool->pool.recentEvents()) {
      if (e.seq <= pool->eventsSeen) continue;
      // Wall-clock time for people reading the stream; the core only knows steady time.
      auto wall = host_->wallNow() - (now() - e.at);
      json event = {{"pool", pool->config.name},
                    {"kind", e.kind},
                    {"worker", e.worker},
                    {"detail", e.detail},
                    {"time", std::chrono::duration<double>(wall.time_since_epoch()).count()}};
      if (e.pid > 0) event["pid"] = e.pid;
      if (e.job > 0) event["job"] = std::to_string(e.job);
      if (!options_.nodeName.empty()) event["node"] = options_.nodeName;
      EventLine line = eventLine(pool->config.name, e);
      logAt(line.level, line.message, line.fields);
      feed_.publish(std::move(event));
    }
    pool->eventsSeen = pool->pool.eventsNoted();
  }
}

}  // namespace bulkhead::runtime
