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

#include "config/to_policy.h"
#include "core/signal_names.h"
#include "core/zygote_lifecycle.h"
#include "os/cgroups.h"
#include "os/proc.h"
#include "os/process.h"
#include "proto/frame.h"
#include "runtime/operator_log.h"
#include "runtime/worker_spec.h"
#include "util/byte_ring.h"

namespace bulkhead::runtime {

namespace asio = boost::asio;
using nlohmann::json;

namespace {

constexpr std::size_t kTailBytes = 16 * 1024;
constexpr std::size_t kStacksBytes = 64 * 1024;
constexpr std::size_t kFinalDrainLimit = 1 << 20;  // bytes read from a pipe after the worker died
constexpr std::size_t kSamplesKept = 120;
constexpr std::size_t kEventsLogged = 1024;
constexpr std::size_t kReadPerWakeup = 1 << 20;  // then yield to other workers and callers
enum PipeIndex { kStdout = 0, kStderr = 1, kStacks = 2 };

core::Time now() { return core::fromSteady(std::chrono::steady_clock::now()); }

void logLine(const std::string& line) { logAt(LogLevel::kWarning, line); }

std::optional<core::ErrorInfo> parseErrorInfo(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  core::ErrorInfo e;
  auto field = [&](const char* key, std::string& out) {
    auto it = j.find(key);
    if (it == j.end()) return true;
    if (!it->is_string()) return false;
    out = it->get<std::string>();
    return true;
  };
  if (!field("type", e.type) || !field("message", e.message) || !field("traceback", e.traceback)) {
    return std::nullopt;
  }
  if (e.type.empty()) return std::nullopt;
  return e;
}

}  // namespace

struct Supervisor::WorkerIo : std::enable_shared_from_this<Supervisor::WorkerIo> {
  WorkerIo(asio::io_context& io, PoolRuntime& owner, core::WorkerId workerId,
           std::string workerName, std::uint32_t maxPayload)
      : pool(owner),
        id(workerId),
        name(std::move(workerName)),
        control(io),
        pipes{asio::posix::stream_descriptor(io), asio::posix::stream_descriptor(io),
              asio::posix::stream_descriptor(io)},
        decoder(proto::Sender::kWorker, maxPayload),
        tails{util::ByteRing(kTailBytes), util::ByteRing(kTailBytes),
              util::ByteRing(kStacksBytes)} {}

  PoolRuntime& pool;
  core::WorkerId id;
  std::string name;
  pid_t pid = -1;
  os::UniqueFd pidfd;
  asio::local::stream_protocol::socket control;
  std::array<asio::posix::stream_descriptor, 3> pipes;
  proto::FrameDecoder decoder;
  std::array<util::ByteRing, 3> tails;
  std::array<char, 16384> pipeBuffer;
  std::array<char, 65536> controlBuffer;
  bool isZygote = false;  // the pool's template process, not a worker the core knows
  bool helloSeen = false;
  bool misbehaving = false;
  bool closed = false;
  std::deque<std::pair<std::string, core::Payload>> writes;
  bool writing = false;
  std::optional<core::Time> lastJobEndSampleAt;
  bool mapsStale = true;  // jobs ran since /proc/PID/maps was last counted
  core::Duration mapsReadCost = std::chrono::milliseconds(5);  // cheapest sample with maps
  int lastMaps = 0;
  std::optional<os::WorkerCgroup> cgroup;
  std::deque<TimedSample> samples;  // for the API, bounded
};

struct Supervisor::ZygoteRuntime {
  explicit ZygoteRuntime(core::ZygotePolicy policy) : life(policy) {}
  core::ZygoteLifecycle life;
  std::shared_ptr<WorkerIo> io;  // the running zygote; null while down
  struct Fork {
    core::SpawnWorker action;
    std::vector<os::UniqueFd> fds;  // the worker's ends: control, stdout, stderr, stacks, cgroups
    std::string frame;              // FORK header + JSON body
    bool sent = false;
  };
  std::map<core::WorkerId, Fork> forks;  // asked for by the core, not yet FORKED
  std::optional<core::ErrorInfo> startError;
  bool spawnInstead = false;  // it refused and the pool says zygote_fallback = "spawn"
  std::uint64_t forked = 0;
};

struct Supervisor::PoolRuntime {
  PoolRuntime(config::PoolConfig c, core::PoolPolicy policy)
      : config(std::move(c)), pool(std::move(policy), runtime::now()) {
    if (config.zygote) {
      core::ZygotePolicy z;
      z.startupTimeout = config.startupTimeout;
      zygote = std::make_unique<ZygoteRuntime>(z);
    }
  }
  config::PoolConfig config;
  core::Pool pool;
  std::map<core::WorkerId, std::shared_ptr<WorkerIo>> workers;
  std::unique_ptr<ZygoteRuntime> zygote;  // mode = "zygote" only
  core::Time nextSampleAt{};
  std::uint64_t eventsSeen = 0;
};

namespace {

bool wantsLimits(const config::PoolConfig& c) { return c.memoryLimit > 0 || c.pidsLimit > 0; }

}  // namespace

Supervisor::Supervisor(asio::io_context& io, const config::Config& config,
                       SupervisorOptions options)
    : io_(io),
      options_(std::move(options)),
      timer_(io),
      sampler_(io),
      sigchld_(io, SIGCHLD),
      startedAt_(now()) {
  bool limited = false;
  for (const auto& pool : config.pools) {
    pools_.push_back(std::make_unique<PoolRuntime>(pool, config::toPolicy(pool, config.server)));
    limited = limited || wantsLimits(pool);
  }
  // Every worker gets a cgroup when one can be had, limits or not: it is how everything a worker
  // started is found and killed with it. BULKHEAD_CGROUPS=off is the operator's way to keep the
  // supervisor out of a cgroup tree it must not write to (docs/operations.md).
  std::string whyNone;
  const char* cgroupSwitch = std::getenv("BULKHEAD_CGROUPS");
  const std::string_view wanted = cgroupSwitch ? cgroupSwitch : "";
  if (options_.cgroups) {
    cgroups_ = std::move(options_.cgroups);
    whyNone = cgroups_->describe();
  } else if (wanted == "off") {
    whyNone = "BULKHEAD_CGROUPS=off";
    cgroups_ = os::makeNoCgroups(whyNone);
  } else {
    if (!wanted.empty() && wanted != "auto") {
      logLine("BULKHEAD_CGROUPS=" + std::string(wanted) + " is neither auto nor off: using auto");
    }
    cgroups_ = os::detectCgroups("/proc/self/cgroup", "/proc/self/mountinfo", &whyNone);
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
  for (auto& [pid, worker] : byPid_) os::signalProcessGroup(pid, SIGKILL);
}

void Supervisor::start() {
  waitForSigchld();
  armSampler();
  for (auto& pool : pools_) post(*pool, core::TimePassed{});
  drain();
}

bool Supervisor::hasPool(std::string_view pool) const {
  for (const auto& p : pools_) {
    if (p->config.name == pool) return true;
  }
  return false;
}

std::uint64_t Supervisor::maxPayload(std::string_view pool) const {
  for (const auto& p : pools_) {
    if (p->config.name == pool) return p->config.maxPayload;
  }
  return 0;
}

Supervisor::PoolRuntime* Supervisor::findPool(std::string_view name) {
  for (auto& p : pools_) {
    if (p->config.name == name) return p.get();
  }
  return nullptr;
}

namespace {

core::JobSubmitted submission(core::JobId id, core::Payload payload, const JobOptions& o) {
  return core::JobSubmitted{id, std::move(payload), o.timeout, o.allowPoison, o.async, o.deadline};
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
  post(*pool, submission(id, std::move(payload), options));
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
    timer_.cancel();
    return;
  }
  timer_.expires_at(core::toSteady(*next));
  timer_.async_wait([this, armed = *next](const boost::system::error_code& ec) {
    if (ec == asio::error::operation_aborted || armedFor_ != armed) return;
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
          sendFrame(*it->second,
                    proto::encodeHeader(proto::FrameType::kJob, a.job,
                                        static_cast<std::uint32_t>(a.payload->size())),
                    a.payload);
        } else if constexpr (std::is_same_v<A, core::SendShutdown>) {
          auto it = pool.workers.find(a.worker);
          if (it == pool.workers.end()) return;
          sendFrame(*it->second, proto::encodeHeader(proto::FrameType::kShutdown, 0, 0), nullptr);
        } else if constexpr (std::is_same_v<A, core::DumpStacks>) {
          auto it = pool.workers.find(a.worker);
          if (it == pool.workers.end() || it->second->pid <= 0) return;
          os::signalProcess(it->second->pid, it->second->pidfd.get(), kDumpSignal);
        } else if constexpr (std::is_same_v<A, core::SignalWorkerGroup>) {
          auto it = pool.workers.find(a.worker);
          if (it == pool.workers.end()) return;
          os::signalProcessGroup(it->second->pid,
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
            os::signalProcessGroup(worker->pid, SIGKILL);
            closeWorkerIo(*worker);
          }
        } else if constexpr (std::is_same_v<A, core::FinishJob>) {
          auto it = pending_.find(a.report.jobId);
          if (it == pending_.end()) return;
          PendingJob& job = it->second;
          // An open breaker sends the job to the pool's fallback (a simpler model behind a
          // fragile one), at most once per pool so fallbacks can't loop.
          if (a.report.breakerOpen && !pool.config.fallback.empty() &&
              job.hops < static_cast<int>(pools_.size())) {
            if (PoolRuntime* fallback = findPool(pool.config.fallback)) {
              job.pool = fallback;
              job.hops++;
              job.via.push_back(pool.config.name);
              post(*fallback, submission(a.report.jobId, job.payload, job.options));
              return;
            }
          }
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
  auto result = os::spawnWorker(spec);
  if (limits.cgroup) limits.cgroup->closeProcsFds();
  if (auto* error = std::get_if<os::SpawnError>(&result)) {
    logLine("pool " + pool.config.name + ": cannot start " + name + ": " + error->describe());
    if (limits.cgroup) removeCgroup(*limits.cgroup);
    post(pool, core::WorkerSpawnFailed{action.worker, error->describe()});
    return;
  }
  auto& process = std::get<os::WorkerProcess>(result);
  auto worker = makeWorkerIo(pool, action.worker, name, process);
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

std::shared_ptr<Supervisor::WorkerIo> Supervisor::makeWorkerIo(PoolRuntime& pool, core::WorkerId id,
                                                               std::string name,
                                                               os::WorkerProcess& process) {
  auto worker = std::make_shared<WorkerIo>(io_, pool, id, std::move(name),
                                           static_cast<std::uint32_t>(pool.config.maxPayload));
  worker->control.assign(asio::local::stream_protocol(), process.control.release());
  worker->pipes[kStdout].assign(process.stdoutRead.release());
  worker->pipes[kStderr].assign(process.stderrRead.release());
  worker->pipes[kStacks].assign(process.stacksRead.release());
  for (int i = 0; i < 3; ++i) readPipe(worker, i);
  return worker;
}

// The pid is known: from here on the worker is reaped, signalled and read like any other.
void Supervisor::workerStarted(WorkerIo& worker, pid_t pid, os::UniqueFd pidfd) {
  worker.pid = pid;
  worker.pidfd = std::move(pidfd);
  auto shared = worker.shared_from_this();
  byPid_[pid] = shared;
  readControl(shared);
  post(worker.pool, core::WorkerSpawned{worker.id, pid});
}

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
  auto worker = makeWorkerIo(pool, action.worker, name, channels.ours);
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
  auto result = os::spawnWorker(spec);
  if (auto* error = std::get_if<os::SpawnError>(&result)) {
    zygoteGone(pool, "cannot start it: " + error->describe());
    return;
  }
  auto& process = std::get<os::WorkerProcess>(result);
  auto zygote = makeWorkerIo(pool, 0, name, process);
  zygote->isZygote = true;
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

void Supervisor::handleZygoteFrame(WorkerIo& zygote, proto::Frame f) {
  using proto::FrameType;
  PoolRuntime& pool = zygote.pool;
  ZygoteRuntime& z = *pool.zygote;
  json body = json::parse(f.body, nullptr, false);
  switch (f.type) {
    case FrameType::kReady:
      z.life.ready();
      noteEvent(pool, "zygote_ready", zygote.name, "pid " + std::to_string(zygote.pid));
      tendZygote(pool);
      return;
    case FrameType::kStartFailed:
      if (auto e = parseErrorInfo(f.body)) z.startError = std::move(*e);
      return;
    case FrameType::kForked: {
      const bool valid = body.is_object() && body.contains("pid") &&
                         body["pid"].is_number_integer() && body["pid"].get<long long>() > 1 &&
                         body["pid"].get<long long>() <= std::numeric_limits<pid_t>::max();
      if (!valid) return misbehaved(zygote, "FORKED body is not {\"pid\": int}");
      z.life.forkAnswered(now());
      z.forked++;
      zygoteForked(pool, f.jobId, static_cast<pid_t>(body["pid"].get<long long>()));
      return;
    }
    case FrameType::kForkRefused: {
      if (!body.is_object() || !body.contains("message") || !body["message"].is_string()) {
        return misbehaved(zygote, "FORK_REFUSED body is not {type, message, permanent}");
      }
      z.life.forkAnswered(now());
      const std::string message = body["message"].get<std::string>();
      if (body.value("permanent", true)) {
        z.life.refused(message);
        noteEvent(pool, "zygote_refused", zygote.name, message);  // logged once, as a warning
        zygoteRefused(pool, message);
        return;
      }
      z.forks.erase(f.jobId);
      post(pool, core::WorkerSpawnFailed{f.jobId, "zygote: " + message});
      return;
    }
    case FrameType::kHello:
    case FrameType::kResultBytes:
    case FrameType::kResultJson:
    case FrameType::kResultText:
    case FrameType::kHandlerError:
    case FrameType::kHeartbeat:
    case FrameType::kJob:
    case FrameType::kShutdown:
    case FrameType::kFork:
      misbehaved(zygote, "the zygote sent " + std::string(proto::frameTypeName(f.type)));
      return;
  }
}

void Supervisor::zygoteForked(PoolRuntime& pool, core::WorkerId id, pid_t pid) {
  pool.zygote->forks.erase(id);
  auto it = pool.workers.find(id);
  if (it == pool.workers.end() || it->second->closed || it->second->pid > 0) {
    os::signalProcessGroup(pid, SIGKILL);  // the core let go of this worker meanwhile
    return;
  }
  auto pidfd = os::openPidfd(pid);
  auto early = unclaimedExits_.find(pid);
  std::optional<int> exitStatus;
  if (early != unclaimedExits_.end()) {
    // Reaped before this frame was read; a live process with that pid would be a reuse.
    if (!pidfd.valid()) exitStatus = early->second.first;
    unclaimedExits_.erase(early);
  }
  if (pidfd.valid()) {
    // The zygote runs the pool's code: believe its pid only for our own child, in its own group
    // (or a signal to "its" group could hit anything, the supervisor included).
    auto ids = procReader_.ids(pid);
    if (ids && (ids->parent != ::getpid() || ids->group != pid)) {
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
  os::signalProcessGroup(z.io->pid, SIGKILL);
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

// Readers wait for readiness and then read themselves, instead of letting the reactor read into a
// buffer: bytes stay in the kernel until we take them, so the exit path, which drains everything
// synchronously, can never miss output that a queued completion handler was holding.
Supervisor::ReadResult Supervisor::readPipeNow(WorkerIo& worker, int which, std::size_t limit) {
  std::size_t taken = 0;
  auto& buffer = worker.pipeBuffer;
  while (taken < limit) {
    ssize_t n = ::read(worker.pipes[which].native_handle(), buffer.data(), buffer.size());
    if (n > 0) {
      worker.tails[which].append({buffer.data(), static_cast<std::size_t>(n)});
      taken += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return ReadResult::kDrained;
    return ReadResult::kClosed;  // EOF or a hard error
  }
  return ReadResult::kMore;
}

Supervisor::ReadResult Supervisor::readControlNow(WorkerIo& worker, std::size_t limit) {
  std::size_t taken = 0;
  auto& buffer = worker.controlBuffer;
  while (taken < limit && !worker.misbehaving && !worker.closed) {
    ssize_t n = ::recv(worker.control.native_handle(), buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n > 0) {
      consumeControlBytes(worker, {buffer.data(), static_cast<std::size_t>(n)});
      taken += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return ReadResult::kDrained;
    if (n == 0 && !worker.misbehaving) {
      if (auto err = worker.decoder.finish()) misbehaved(worker, err->reason);
    }
    return ReadResult::kClosed;
  }
  return ReadResult::kMore;
}

void Supervisor::readPipe(const std::shared_ptr<WorkerIo>& worker, int which) {
  worker->pipes[which].async_wait(
      asio::posix::stream_descriptor::wait_read,
      [this, worker, which](const boost::system::error_code& ec) {
        if (ec || worker->closed) return;
        if (readPipeNow(*worker, which, kReadPerWakeup) == ReadResult::kClosed) return;
        readPipe(worker, which);  // EOF: stop; a grandchild may hold the pipe, never wait on it
      });
}

void Supervisor::readControl(const std::shared_ptr<WorkerIo>& worker) {
  worker->control.async_wait(
      asio::local::stream_protocol::socket::wait_read,
      [this, worker](const boost::system::error_code& ec) {
        if (ec || worker->closed) return;
        auto result = readControlNow(*worker, kReadPerWakeup);
        drain();
        if (result != ReadResult::kClosed && !worker->misbehaving && !worker->closed) {
          readControl(worker);
        }
      });
}

void Supervisor::consumeControlBytes(WorkerIo& worker, std::string_view bytes) {
  if (worker.misbehaving) return;
  worker.decoder.feed(bytes);
  for (;;) {
    auto result = worker.decoder.next();
    if (std::holds_alternative<proto::NeedMore>(result)) return;
    if (auto* err = std::get_if<proto::DecodeError>(&result)) {
      misbehaved(worker, err->reason);
      return;
    }
    handleFrame(worker, std::move(std::get<proto::Frame>(result)));
    if (worker.misbehaving || worker.closed) return;  // e.g. a zygote stopped by its own frame
  }
}

void Supervisor::misbehaved(WorkerIo& worker, std::string reason) {
  if (worker.misbehaving) return;
  worker.misbehaving = true;
  logLine("worker " + worker.name + " (pid " + std::to_string(worker.pid) +
          ") broke the protocol: " + reason);
  if (worker.isZygote) {
    killZygote(worker.pool, "it broke the protocol: " + reason);
    return;
  }
  post(worker.pool, core::WorkerMisbehaved{worker.id, std::move(reason)});
}

void Supervisor::sampleAfterJob(WorkerIo& worker) {
  worker.mapsStale = true;
  const core::Pool& pool = worker.pool.pool;
  if (!pool.wantsSampleAfterJobs()) return;
  const core::Time t = now();
  // Maps cost ~1 us each to count, so counting them may take at most ~5% of the time since the
  // last count (every job for a small worker, every ~40 ms with torch loaded); the trend rule
  // looks as many jobs ahead as the samples skip. The cheap measures are read after every job
  // when the pool bounds them, so a fast leak is caught at the first job past its bound.
  const int maxMaps = pool.policy().bounds.maxMaps;
  const bool nearBound = maxMaps > 0 && worker.lastMaps >= maxMaps * 3 / 4;
  const bool mapsDue = nearBound || !worker.lastJobEndSampleAt ||
                       t - *worker.lastJobEndSampleAt >= 20 * worker.mapsReadCost;
  if (!mapsDue && !pool.wantsSampleAfterEveryJob()) return;
  if (mapsDue) worker.lastJobEndSampleAt = t;
  if (auto sample = takeSample(worker, mapsDue)) {
    post(worker.pool, core::WorkerSampled{worker.id, *sample, true});
  }
}

std::optional<core::ResourceSample> Supervisor::takeSample(WorkerIo& worker, bool withMaps) {
  const core::Time started = now();
  auto s = procReader_.sample(worker.pid, withMaps);
  if (!s) return std::nullopt;
  if (withMaps) {
    worker.mapsStale = false;
    worker.lastMaps = s->maps;
    // The cheapest read seen is the real cost; slower ones were preempted.
    worker.mapsReadCost = std::min(worker.mapsReadCost, core::Duration(now() - started));
  }
  core::ResourceSample r{s->rssBytes, s->threads, s->maps, s->fds, s->cpuSeconds};
  // With a pids limit, a refusal during a job turns its hang into resource_exhausted: the core
  // compares the counter at dispatch with the one at the worker's death.
  if (worker.cgroup && worker.pool.config.pidsLimit > 0) {
    r.pidsMaxEvents = cgroups_->counters(*worker.cgroup).pidsMaxEvents;
  }
  worker.samples.push_back({now(), r});
  if (worker.samples.size() > kSamplesKept) worker.samples.pop_front();
  return r;
}

void Supervisor::sampleAll() {
  const core::Time t = now();
  for (auto& pool : pools_) {
    if (t < pool->nextSampleAt) continue;
    pool->nextSampleAt = t + pool->config.sampleInterval;
    for (auto& [id, worker] : pool->workers) {
      if (worker->closed || worker->pid <= 0) continue;
      // /proc/PID/maps costs ~1 us per map (2 ms for a torch worker): read it only when jobs
      // ran since the last read, since an idle worker's maps do not grow.
      if (auto sample = takeSample(*worker, worker->mapsStale)) {
        post(*pool, core::WorkerSampled{id, *sample, false});
      }
    }
  }
  drain();
}

void Supervisor::armSampler() {
  core::Duration shortest = std::chrono::hours(1);
  for (const auto& pool : pools_)
    shortest = std::min(shortest, core::Duration(pool->config.sampleInterval));
  sampler_.expires_after(shortest);
  sampler_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    sampleAll();
    armSampler();
  });
}

void Supervisor::handleFrame(WorkerIo& worker, proto::Frame f) {
  using proto::FrameType;
  if (!worker.helloSeen) {
    if (f.type != FrameType::kHello) {
      misbehaved(worker, "expected HELLO first, got " + std::string(proto::frameTypeName(f.type)));
      return;
    }
    json hello = json::parse(f.body, nullptr, false);
    if (hello.is_discarded() || !hello.is_object() || hello.value("protocol", 0) != 1) {
      misbehaved(worker, "HELLO body is not {\"protocol\": 1, ...}");
      return;
    }
    worker.helloSeen = true;
    return;
  }
  if (worker.isZygote) return handleZygoteFrame(worker, std::move(f));
  switch (f.type) {
    case FrameType::kHello:
      misbehaved(worker, "HELLO sent twice");
      return;
    case FrameType::kReady:
      post(worker.pool, core::WorkerReady{worker.id});
      return;
    case FrameType::kStartFailed: {
      auto e = parseErrorInfo(f.body);
      if (!e) return misbehaved(worker, "START_FAILED body is not {type, message, traceback}");
      post(worker.pool, core::WorkerStartFailed{worker.id, std::move(*e)});
      return;
    }
    case FrameType::kResultBytes:
    case FrameType::kResultText:
    case FrameType::kResultJson: {
      core::ResultKind kind = f.type == FrameType::kResultBytes  ? core::ResultKind::kBytes
                              : f.type == FrameType::kResultText ? core::ResultKind::kText
                                                                 : core::ResultKind::kJson;
      if (kind == core::ResultKind::kJson && !json::accept(f.body)) {
        return misbehaved(worker, "RESULT_JSON body is not valid JSON");
      }
      sampleAfterJob(worker);
      post(worker.pool,
           core::JobResultReceived{worker.id, f.jobId, kind,
                                   std::make_shared<const std::string>(std::move(f.body))});
      return;
    }
    case FrameType::kHandlerError: {
      auto e = parseErrorInfo(f.body);
      if (!e) return misbehaved(worker, "HANDLER_ERROR body is not {type, message, traceback}");
      sampleAfterJob(worker);
      std::uint64_t pidsMaxEvents = 0;
      if (worker.cgroup) pidsMaxEvents = cgroups_->counters(*worker.cgroup).pidsMaxEvents;
      post(worker.pool, core::JobErrorReceived{worker.id, f.jobId, std::move(*e), pidsMaxEvents});
      return;
    }
    case FrameType::kHeartbeat: {
      json beat = json::parse(f.body, nullptr, false);
      if (beat.is_discarded() || !beat.is_object()) {
        return misbehaved(worker, "HEARTBEAT body is not a JSON object");
      }
      core::WorkerHeartbeat event;
      event.worker = worker.id;
      event.job = f.jobId;
      if (auto it = beat.find("progress"); it != beat.end() && it->is_number_unsigned()) {
        event.progress = it->get<std::uint64_t>();
      }
      if (auto it = beat.find("cpu_seconds"); it != beat.end() && it->is_number()) {
        event.cpuSeconds = it->get<double>();
      }
      if (auto it = beat.find("stack"); it != beat.end() && it->is_string()) {
        event.stack = it->get<std::string>();
      }
      post(worker.pool, std::move(event));
    }
      return;
    case FrameType::kForked:
    case FrameType::kForkRefused:
      misbehaved(worker, "a worker sent a zygote frame");
      return;
    case FrameType::kJob:
    case FrameType::kShutdown:
    case FrameType::kFork:
      misbehaved(worker, "worker sent a supervisor frame");
      return;
  }
}

void Supervisor::sendFrame(WorkerIo& worker, std::string header, core::Payload body) {
  if (worker.closed) return;
  worker.writes.emplace_back(std::move(header), std::move(body));
  flushWrites(worker.shared_from_this());
}

void Supervisor::flushWrites(const std::shared_ptr<WorkerIo>& worker) {
  if (worker->writing || worker->writes.empty() || worker->closed) return;
  worker->writing = true;
  auto& [header, body] = worker->writes.front();
  std::array<asio::const_buffer, 2> buffers{asio::buffer(header),
                                            body ? asio::buffer(*body) : asio::const_buffer()};
  asio::async_write(worker->control, buffers,
                    [this, worker](const boost::system::error_code& ec, std::size_t) {
                      worker->writing = false;
                      if (worker->closed) return;
                      worker->writes.pop_front();
                      if (ec) {
                        // EPIPE: the worker is gone or going; SIGCHLD tells the rest.
                        worker->writes.clear();
                        return;
                      }
                      flushWrites(worker);
                      if (worker->isZygote && worker->writes.empty()) {
                        tendZygote(worker->pool);  // FORKs held back behind a partial one
                        drain();
                      }
                    });
}

void Supervisor::waitForSigchld() {
  sigchld_.async_wait([this](const boost::system::error_code& ec, int) {
    if (ec) return;
    for (const auto& exit : os::reapExitedChildren()) onChildExit(exit.pid, exit.rawStatus);
    drain();
    waitForSigchld();
  });
}

void Supervisor::onChildExit(pid_t pid, int status) {
  auto it = byPid_.find(pid);
  if (it == byPid_.end()) {
    orphansReaped_++;  // a grandchild reparented to us (we are a child subreaper)
    const core::Time t = now();
    std::erase_if(unclaimedExits_,
                  [&](const auto& e) { return t - e.second.second > std::chrono::seconds(10); });
    if (unclaimedExits_.size() < 4096) unclaimedExits_[pid] = {status, t};
    return;
  }
  auto worker = it->second;
  byPid_.erase(it);
  // Whatever its children still do, they go with it: they may hold its pipes open forever.
  os::signalProcessGroup(pid, SIGKILL);
  if (worker->closed) return;  // released earlier by the core

  // Frames and bytes it wrote before dying are in the kernel buffers: take them now, without
  // waiting for an EOF that a surviving grandchild could withhold.
  readControlNow(*worker, std::numeric_limits<std::size_t>::max());
  for (int i = 0; i < 3; ++i) readPipeNow(*worker, i, kFinalDrainLimit);

  if (worker->isZygote) {
    std::string reason = WIFSIGNALED(status)
                             ? "killed by " + std::string(core::signalName(WTERMSIG(status)))
                             : "exited with code " + std::to_string(WEXITSTATUS(status));
    PoolRuntime& pool = worker->pool;
    if (pool.zygote->startError) {
      reason += ": preload failed: " + pool.zygote->startError->type + ": " +
                pool.zygote->startError->message;
    } else if (auto tail = worker->tails[kStderr].tail(); !tail.empty()) {
      reason += "; stderr ends: " + tail.substr(tail.size() > 400 ? tail.size() - 400 : 0);
    }
    closeWorkerIo(*worker);
    if (pool.zygote->io == worker) zygoteGone(pool, reason);
    return;
  }

  core::ExitEvidence evidence;
  if (WIFSIGNALED(status)) {
    evidence.signal = WTERMSIG(status);
    evidence.coreDumped = WCOREDUMP(status);
  } else if (WIFEXITED(status)) {
    evidence.exitCode = WEXITSTATUS(status);
  }
  evidence.stderrTail = worker->tails[kStderr].tail();
  evidence.stderrDroppedBytes = worker->tails[kStderr].droppedBytes();
  evidence.stdoutTail = worker->tails[kStdout].tail();
  evidence.stacks = worker->tails[kStacks].tail();
  if (worker->cgroup) {
    auto counters = cgroups_->counters(*worker->cgroup);
    evidence.oomKilled = counters.oomKills > 0;
    evidence.memoryPeakBytes = counters.memoryPeakBytes;
    evidence.pidsMaxEvents = counters.pidsMaxEvents;
  }
  closeWorkerIo(*worker);
  post(worker->pool, core::WorkerExited{worker->id, std::move(evidence)});
}

void Supervisor::removeCgroup(os::WorkerCgroup& cgroup) {
  std::string error;
  if (!cgroups_->remove(cgroup, &error))
    logLine("cannot remove cgroup " + cgroup.name() + ": " + error);
}

void Supervisor::closeWorkerIo(WorkerIo& worker) {
  worker.closed = true;
  if (worker.cgroup) {
    removeCgroup(*worker.cgroup);  // kills whatever is still in it
    worker.cgroup.reset();
  } else if (!worker.isZygote && worker.pid > 0) {
    killLeftovers(worker);  // the same through /proc: setsid'd grandchildren left its group
  }
  boost::system::error_code ignored;
  worker.control.close(ignored);
  for (auto& pipe : worker.pipes) pipe.close(ignored);
  worker.writes.clear();
  killOrphansAtShutdown();
}

// ---------------------------------------------------------------- views

core::Time Supervisor::now() const { return runtime::now(); }

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
  for (const auto& p : pools_) {
    if (p->config.name != name) continue;
    visit(viewOf(*p));
    return true;
  }
  return false;
}

std::optional<Supervisor::ZygoteStats> Supervisor::zygoteStats(std::string_view name) const {
  for (const auto& p : pools_) {
    if (p->config.name == name) return zygoteStatsOf(*p);
  }
  return std::nullopt;
}

void Supervisor::collectEvents() {
  for (auto& pool : pools_) {
    if (pool->pool.eventsNoted() == pool->eventsSeen) continue;
    for (const auto& e : pool->pool.recentEvents()) {
      if (e.seq <= pool->eventsSeen) continue;
      // Wall-clock time for people reading the stream; the core only knows steady time.
      auto wall = std::chrono::system_clock::now() - (now() - e.at);
      json event = {{"pool", pool->config.name},
                    {"kind", e.kind},
                    {"worker", e.worker},
                    {"detail", e.detail},
                    {"time", std::chrono::duration<double>(wall.time_since_epoch()).count()}};
      if (e.pid > 0) event["pid"] = e.pid;
      if (e.job > 0) event["job"] = std::to_string(e.job);
      EventLine line = eventLine(pool->config.name, e);
      logAt(line.level, line.message, line.fields);
      const std::uint64_t id = nextEventId_++;
      eventLog_.emplace_back(id, event);
      if (eventLog_.size() > kEventsLogged) eventLog_.pop_front();
      // A sink may unsubscribe itself (its connection failed): iterate over a copy of the keys.
      std::vector<int> subscribers;
      for (const auto& [sub, sink] : eventSinks_) subscribers.push_back(sub);
      for (int sub : subscribers) {
        auto it = eventSinks_.find(sub);
        if (it != eventSinks_.end()) it->second(id, event);
      }
    }
    pool->eventsSeen = pool->pool.eventsNoted();
  }
}

int Supervisor::subscribeEvents(std::uint64_t since, EventSink sink) {
  for (const auto& [id, event] : eventLog_) {
    if (id > since) sink(id, event);
  }
  const int subscription = nextSubscription_++;
  eventSinks_.emplace(subscription, std::move(sink));
  return subscription;
}

void Supervisor::unsubscribeEvents(int subscription) { eventSinks_.erase(subscription); }

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

os::ProcessHost& Supervisor::processHost() {
  if (!processHost_) processHost_ = os::makeLinuxProcessHost("/proc");
  return *processHost_;
}

os::OrphanQuery Supervisor::orphanQuery() const {
  os::OrphanQuery q;
  q.self = ::getpid();
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
  reportSweep("worker " + worker.name, os::killOrphans(processHost(), q));
}

void Supervisor::killOrphansAtShutdown() {
  if (!shuttingDown_ || orphansSwept_) return;
  for (const auto& [pid, worker] : byPid_) {
    if (!worker->isZygote && !worker->closed) return;  // the last worker's end comes later
  }
  orphansSwept_ = true;
  os::OrphanQuery q = orphanQuery();
  q.everything = true;  // nothing we started may outlive us
  reportSweep("shutdown: the workers", os::killOrphans(processHost(), q));
}

void Supervisor::armLineage() {
  if (lineageArmed_) return;
  lineageArmed_ = true;
  // The pools' shortest sample interval, but not below a second: the walk reads every process.
  core::Duration interval = std::chrono::hours(1);
  for (const auto& pool : pools_) {
    interval = std::min(interval, core::Duration(pool->config.sampleInterval));
  }
  lineageTimer_.expires_after(std::max(interval, core::Duration(std::chrono::seconds(1))));
  lineageTimer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
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
  const os::ProcTable table = processHost().readTable();
  for (pid_t pid : tracked) lineage_[pid] = os::updateLineage(table, pid, lineage_[pid]);
  return true;
}

}  // namespace bulkhead::runtime
