// The zygote driver (docs/protocol.md, "Zygote"): starts and kills a pool's zygote as its
// core::ZygoteLifecycle says, sends it FORK frames with the new worker's fds, and turns its answers
// (READY, FORKED, FORK_REFUSED, its death) into worker records and core events. May not touch:
// when to start or kill it (core/zygote_lifecycle.h decides) or worker I/O (worker_channel.cc).

#include "runtime/shell_state.h"

namespace bulkhead::runtime {

using nlohmann::json;

// ---------------------------------------------------------------- zygote

void Supervisor::noteEvent(PoolRuntime& pool, std::string kind, std::string worker,
                           std::string detail) {
  post(pool, core::ShellNoted{std::move(kind), std::move(worker), std::move(detail)});
}

void Supervisor::forkFromZygote(PoolRuntime& pool, const core::SpawnWorker& action,
                                const std::string& name, WorkerLimits limits) {
  auto made = os::makeWorkerChannels();
  if (auto* error = std::get_if<os::SpawnError>(&made)) {
    if (limits.cgroup) removeCgroup(*limits.cgroup);
    post(pool, core::WorkerSpawnFailed{action.worker, error->describe()});
    return;
  }
  auto& channels = std::get<os::WorkerChannels>(made);
  ZygoteRuntime::Fork fork;
  fork.action = action;
  fork.fds.push_back(std::move(channels.controlTheirs));
  fork.fds.push_back(std::move(channels.stdoutWrite));
  fork.fds.push_back(std::move(channels.stderrWrite));
  fork.fds.push_back(std::move(channels.stacksWrite));
  if (limits.cgroup) {
    for (auto& fd : limits.cgroup->takeProcsFds()) fork.fds.push_back(std::move(fd));
  }
  json env = json::object();
  for (const auto& [key, value] : buildWorkerEnvironment(
           pool.config, name, action.slot, options_.baseEnvironment, options_.sdkDirectory)) {
    env[key] = value.value;
  }
  json body = {{"worker", name},
               {"env", std::move(env)},
               {"fds", fork.fds.size()},
               {"rlimit_as", limits.addressSpaceLimit}};
  // Environment values are bytes to the OS; the rare one that is not UTF-8 is sent replaced.
  const std::string text = body.dump(-1, ' ', false, json::error_handler_t::replace);
  fork.frame = proto::encodeHeader(proto::FrameType::kFork, action.worker,
                                   static_cast<std::uint32_t>(text.size())) +
               text;
  auto worker = makeWorkerIo(pool, action.worker, name, channels.ours, /*zygote=*/false);
  worker->cgroup = std::move(limits.cgroup);
  pool.workers[action.worker] = worker;
  pool.zygote->forks.emplace(action.worker, std::move(fork));
  tendZygote(pool);
}

void Supervisor::tendZygote(PoolRuntime& pool) {
  ZygoteRuntime& z = *pool.zygote;
  const core::Time t = now();
  if (z.io && z.life.overdue(t)) {
    killZygote(pool, z.life.state() == core::ZygoteLifecycle::State::kStarting
                         ? "preload not done after startup_timeout"
                         : "a FORK went unanswered: the zygote hangs");
  }
  if (z.life.state() == core::ZygoteLifecycle::State::kRefused) {
    zygoteRefused(pool, z.life.refusal());
    return;
  }
  if (!z.io && !shuttingDown_ && z.life.shouldStart(t)) startZygote(pool);
  if (z.io && z.life.acceptsForks()) sendForks(pool);
}

void Supervisor::startZygote(PoolRuntime& pool) {
  ZygoteRuntime& z = *pool.zygote;
  const std::string name = pool.config.name + "-zygote";
  auto spec =
      buildWorkerSpec(pool.config, name, 0, options_.baseEnvironment, options_.sdkDirectory);
  spec.argv = pythonModuleArgv(pool.config.python, "bulkhead.zygote");
  z.life.started(now());
  z.startError.reset();
  auto result = host_->spawn(spec);
  if (auto* error = std::get_if<os::SpawnError>(&result)) {
    zygoteGone(pool, "cannot start it: " + error->describe());
    return;
  }
  auto& process = std::get<os::WorkerProcess>(result);
  auto zygote = makeWorkerIo(pool, 0, name, process, /*zygote=*/true);
  z.io = zygote;
  workerStarted(*zygote, process.pid, std::move(process.pidfd));
}

void Supervisor::sendForks(PoolRuntime& pool) {
  ZygoteRuntime& z = *pool.zygote;
  for (auto& [id, fork] : z.forks) {
    if (fork.sent) continue;
    // The rest of a partly sent FORK is still queued: nothing may overtake it.
    if (z.io->writing || !z.io->writes.empty()) return;
    std::vector<int> fds;
    for (const auto& fd : fork.fds) fds.push_back(fd.get());
    const long sent = os::sendWithFds(z.io->control.native_handle(), fork.frame, fds);
    if (sent <= 0) return;  // full or gone: the fork deadline or the exit decides
    if (static_cast<std::size_t>(sent) < fork.frame.size()) {
      // The fds went with the first byte; the rest of the frame follows in order.
      sendFrame(*z.io, fork.frame.substr(static_cast<std::size_t>(sent)), nullptr);
    }
    fork.sent = true;
    fork.fds.clear();  // the zygote holds them now
    fork.frame.clear();
    z.life.forkSent(now());
  }
}

void Supervisor::handleZygoteEvent(WorkerIo& zygote, proto::ConnectionEvent event) {
  PoolRuntime& pool = zygote.pool;
  ZygoteRuntime& z = *pool.zygote;
  if (std::holds_alternative<proto::Ready>(event)) {
    z.life.ready();
    noteEvent(pool, "zygote_ready", zygote.name, "pid " + std::to_string(zygote.pid));
    tendZygote(pool);
  } else if (auto* failed = std::get_if<proto::StartFailed>(&event)) {
    z.startError = toCore(std::move(failed->error));
  } else if (auto* forked = std::get_if<proto::Forked>(&event)) {
    z.life.forkAnswered(now());
    z.forked++;
    zygoteForked(pool, forked->requestId, static_cast<pid_t>(forked->pid));
  } else if (auto* refused = std::get_if<proto::ForkRefused>(&event)) {
    z.life.forkAnswered(now());
    if (refused->permanent) {
      z.life.refused(refused->message);
      noteEvent(pool, "zygote_refused", zygote.name, refused->message);  // logged once, a warning
      zygoteRefused(pool, refused->message);
      return;
    }
    z.forks.erase(refused->requestId);
    post(pool, core::WorkerSpawnFailed{refused->requestId, "zygote: " + refused->message});
  }
  // Hello needs nothing; the connection refuses a worker's frames from a zygote.
}

void Supervisor::zygoteForked(PoolRuntime& pool, core::WorkerId id, pid_t pid) {
  pool.zygote->forks.erase(id);
  auto it = pool.workers.find(id);
  if (it == pool.workers.end() || it->second->closed || it->second->pid > 0) {
    host_->signalGroup(pid, SIGKILL);  // the core let go of this worker meanwhile
    return;
  }
  auto pidfd = host_->openPidfd(pid);
  std::optional<int> exitStatus;
  if (auto early = unclaimedExits_.claim(pid)) {
    // Reaped before this frame was read; a live process with that pid would be a reuse.
    if (!pidfd.valid()) exitStatus = *early;
  }
  if (pidfd.valid()) {
    // The zygote runs the pool's code: believe its pid only for our own child, in its own group
    // (or a signal to "its" group could hit anything, the supervisor included).
    auto ids = host_->ids(pid);
    if (ids && (ids->parent != host_->selfPid() || ids->group != pid)) {
      const std::string why = "FORKED names pid " + std::to_string(pid) +
                              ", which is not a child of the supervisor in its own process group";
      post(pool, core::WorkerSpawnFailed{id, "zygote: " + why});
      if (pool.zygote->io) misbehaved(*pool.zygote->io, why);
      return;
    }
  }
  if (!pidfd.valid() && !exitStatus) {
    post(pool, core::WorkerSpawnFailed{id, "the forked worker (pid " + std::to_string(pid) +
                                               ") vanished before it was seen"});
    return;
  }
  workerStarted(*it->second, pid, std::move(pidfd));
  if (exitStatus) {
    orphansReaped_--;  // counted as an orphan when reaped
    onChildExit(pid, *exitStatus);
  }
}

// A zygote that refused to fork (extra threads, CUDA) would refuse again after a restart: its
// preload does the same thing every time. Fail the pool's spawns with its message, or spawn.
void Supervisor::zygoteRefused(PoolRuntime& pool, const std::string& message) {
  ZygoteRuntime& z = *pool.zygote;
  if (z.io) killZygote(pool, "it refused to fork");
  auto forks = std::move(z.forks);
  z.forks.clear();
  if (pool.config.zygoteFallbackToSpawn && !z.spawnInstead) {
    z.spawnInstead = true;
    logLine("pool " + pool.config.name + ": zygote_fallback = \"spawn\": starting workers by exec");
    noteEvent(pool, "zygote_fallback", "", "spawning workers instead: " + message);
  }
  for (auto& [id, fork] : forks) {
    if (!z.spawnInstead) {
      post(pool, core::WorkerSpawnFailed{id, message});
      continue;
    }
    if (auto it = pool.workers.find(id); it != pool.workers.end()) {
      closeWorkerIo(*it->second);
      pool.workers.erase(it);
    }
    spawn(pool, fork.action);
  }
}

void Supervisor::killZygote(PoolRuntime& pool, const std::string& reason) {
  ZygoteRuntime& z = *pool.zygote;
  if (!z.io) return;
  host_->signalGroup(z.io->pid, SIGKILL);
  closeWorkerIo(*z.io);  // its exit, when reaped, is not news any more
  zygoteGone(pool, "killed: " + reason);
}

void Supervisor::zygoteGone(PoolRuntime& pool, const std::string& reason) {
  ZygoteRuntime& z = *pool.zygote;
  const std::string name = z.io ? z.io->name : pool.config.name + "-zygote";
  z.io.reset();
  const bool refused = z.life.state() == core::ZygoteLifecycle::State::kRefused;
  z.life.exited(now());
  if (refused) return;
  if (!shuttingDown_) logLine("pool " + pool.config.name + ": zygote " + reason);
  noteEvent(pool, "zygote_died", name, reason);
  // Forks it was asked for are lost; the core retries them (with its crash-loop backoff).
  for (auto& [id, fork] : z.forks) post(pool, core::WorkerSpawnFailed{id, "zygote " + reason});
  z.forks.clear();
}

}  // namespace bulkhead::runtime
