#pragma once
// The event-loop shell around the policy core. It owns the worker processes and their file
// descriptors; it turns what the OS reports (frames, bytes on stderr, child exits, timers) into
// core events and carries out the actions the core returns. One thread, one io_context. The clock,
// timers, spawning, signals, /proc and cgroups come through a Host (runtime/host.h): the real one
// by default, a simulated one in tests/runtime.

#include <algorithm>
#include <boost/asio.hpp>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <variant>

#include "config/config.h"
#include "core/exit_claims.h"
#include "core/pool.h"
#include "core/zygote_lifecycle.h"
#include "os/cgroups.h"
#include "os/orphans.h"
#include "os/payload_files.h"
#include "os/proc.h"
#include "os/process.h"
#include "proto/frame.h"
#include "proto/worker_connection.h"
#include "runtime/event_feed.h"
#include "runtime/host.h"

namespace bulkhead::runtime {

struct SupervisorOptions {
  std::string sdkDirectory;                  // put on each worker's PYTHONPATH
  std::vector<std::string> baseEnvironment;  // what workers inherit before their pool's env
  std::unique_ptr<os::Cgroups> cgroups;      // null: the host detects them
  std::unique_ptr<Host> host;  // clock, processes, /proc, cgroups; null: the real Linux one
  std::string nodeName;        // [cluster]: put on every event as "node" ("": no cluster)
};

// How one job is to be run, as the caller asked (docs/api.md, "Deadlines").
struct JobOptions {
  std::optional<core::Duration> timeout;  // one attempt's run limit; unset: job_timeout
  std::optional<core::Time> deadline;     // end-to-end: queue + every attempt
  bool async = false;                     // accepted with 202: no queue limit by default
  bool allowPoison = false;               // run a quarantined payload anyway
};

class Supervisor {
 public:
  using Reply = std::function<void(const core::JobReport&)>;
  enum class SubmitError { kUnknownPool, kPayloadTooLarge, kDuplicateId };

  Supervisor(boost::asio::io_context& io, const config::Config& config, SupervisorOptions options);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  void start();
  std::variant<core::JobId, SubmitError> submit(std::string_view pool, core::Payload payload,
                                                JobOptions options, Reply reply);
  // The same with an id chosen by the caller (journaled jobs keep theirs across restarts).
  std::optional<SubmitError> submitWithId(core::JobId id, std::string_view pool,
                                          core::Payload payload, JobOptions options, Reply reply);
  core::JobId reserveJobId() { return nextJobId_++; }
  void startJobIdsAfter(core::JobId last) { nextJobId_ = std::max(nextJobId_, last + 1); }
  core::JobId lastJobId() const { return nextJobId_ - 1; }  // given or reserved
  std::optional<std::string> jobState(core::JobId job) const;
  void cancel(core::JobId job);
  // Stop accepting, let queued and running jobs end, stop every worker, then call onStopped.
  void shutdown(std::function<void()> onStopped);
  bool shuttingDown() const { return shuttingDown_; }
  bool hasPool(std::string_view pool) const;
  std::uint64_t maxPayload(std::string_view pool) const;
  // The payload size from which a job of `pool` travels as a memfd (0: never; core/payload_path.h:
  // later for a handler that takes bytes); none for a pool this daemon does not have.
  std::optional<std::uint64_t> payloadMemfdFrom(std::string_view pool) const;
  // The pools' reused payload files (os/payload_files.h): the HTTP session fills them.
  const std::shared_ptr<os::PayloadFiles>& payloadFiles() const { return payloadFiles_; }

  // Typed snapshots for the API views (src/api/pool_views.h renders them as JSON). Limits are
  // read from each pool's policy (config::toPolicy), never from the config again.
  struct ZygoteStats {
    core::ZygoteLifecycle::State state = core::ZygoteLifecycle::State::kDown;
    bool ready = false;
    bool refused = false;
    int starts = 0;
    int deaths = 0;
    std::uint64_t forked = 0;
    std::optional<pid_t> pid;  // the running zygote; none while down
    std::size_t forksPending = 0;
    bool spawningInstead = false;
    std::string refusal;
  };
  struct TimedSample {
    core::Time at;
    core::ResourceSample sample;
  };
  struct PoolView {
    const core::Pool& pool;  // its policy, counters, workers, recent events
    const std::string& handler;
    bool zygoteMode;
    const std::string& fallback;  // empty: none
    std::optional<ZygoteStats> zygote;
    // A worker's sample history, oldest first (bounded); empty for an unknown worker.
    std::function<const std::deque<TimedSample>&(core::WorkerId)> history;
  };
  // The shell's clock (its Host's): views compute ages against it.
  core::Time now() const;
  core::Time startedAt() const { return startedAt_; }
  void forEachPool(const std::function<void(const PoolView&)>& visit) const;
  // False for an unknown pool.
  bool visitPool(std::string_view pool, const std::function<void(const PoolView&)>& visit) const;
  std::uint64_t orphansReaped() const { return orphansReaped_; }
  // nullopt for an unknown pool or one in spawn mode.
  std::optional<ZygoteStats> zygoteStats(std::string_view pool) const;

  // The event stream (GET /v1/events): every pool's events with one global, increasing id.
  // A subscriber first gets the kept events with id > since, then each new one as it happens.
  using EventSink = EventFeed::Sink;
  int subscribeEvents(std::uint64_t since, EventSink sink) {
    return feed_.subscribe(since, std::move(sink));
  }
  void unsubscribeEvents(int subscription) { feed_.unsubscribe(subscription); }

 private:
  struct WorkerIo;
  struct PoolRuntime;
  struct ZygoteRuntime;
  struct WorkerLimits {
    std::optional<os::WorkerCgroup> cgroup;
    std::uint64_t addressSpaceLimit = 0;  // RLIMIT_AS when no cgroup can be had
  };

  void post(PoolRuntime& pool, core::Event event);
  void drain();
  void execute(PoolRuntime& pool, core::Action& action);
  void spawn(PoolRuntime& pool, const core::SpawnWorker& action);
  bool prepareLimits(PoolRuntime& pool, const core::SpawnWorker& action, const std::string& name,
                     WorkerLimits& limits);
  std::shared_ptr<WorkerIo> makeWorkerIo(PoolRuntime& pool, core::WorkerId id, std::string name,
                                         os::WorkerProcess& process, bool zygote);
  void workerStarted(WorkerIo& worker, pid_t pid, os::UniqueFd pidfd);

  // Zygote mode (docs/protocol.md, "Zygote").
  void forkFromZygote(PoolRuntime& pool, const core::SpawnWorker& action, const std::string& name,
                      WorkerLimits limits);
  void tendZygote(PoolRuntime& pool);
  void startZygote(PoolRuntime& pool);
  void sendForks(PoolRuntime& pool);
  void handleZygoteEvent(WorkerIo& zygote, proto::ConnectionEvent event);
  void zygoteForked(PoolRuntime& pool, core::WorkerId id, pid_t pid);
  void zygoteRefused(PoolRuntime& pool, const std::string& message);
  void zygoteGone(PoolRuntime& pool, const std::string& reason);
  void killZygote(PoolRuntime& pool, const std::string& reason);
  void noteEvent(PoolRuntime& pool, std::string kind, std::string worker, std::string detail);
  void sendFrame(WorkerIo& worker, std::string header, core::Payload body);
  void flushWrites(const std::shared_ptr<WorkerIo>& worker);
  void sendWithFile(const std::shared_ptr<WorkerIo>& worker);
  core::Payload takeResultFile(WorkerIo& worker, std::uint64_t size);
  void armPayloadTrim();
  ssize_t receiveControl(WorkerIo& worker, char* into, std::size_t room);
  void readControl(const std::shared_ptr<WorkerIo>& worker);
  enum class ReadResult { kDrained, kMore, kClosed };
  ReadResult readPipeNow(WorkerIo& worker, int which, std::size_t limit);
  ReadResult readControlNow(WorkerIo& worker, std::size_t limit);
  void readPipe(const std::shared_ptr<WorkerIo>& worker, int which);
  void consumeControlBytes(WorkerIo& worker, std::string_view bytes);
  // Pulls the connection's events until it needs more bytes; a PeerError ends that worker.
  void handleConnectionEvents(WorkerIo& worker);
  void handleWorkerEvent(WorkerIo& worker, proto::ConnectionEvent event);
  void misbehaved(WorkerIo& worker, std::string reason);
  void onChildExit(pid_t pid, int rawStatus);
  void closeWorkerIo(WorkerIo& worker);
  void removeCgroup(os::WorkerCgroup& cgroup);
  void armTimer();
  void armSampler();
  void sampleAll();
  // afterAnswer: taken after the job's result event, not before it (core::WorkerSampled).
  void sampleAfterJob(WorkerIo& worker, bool afterAnswer = false);
  // gpu: this tick's GPU reading, for workers of pools with `gpus` (null: none taken).
  std::optional<core::ResourceSample> takeSample(WorkerIo& worker, bool withMaps,
                                                 const os::GpuReading* gpu = nullptr);
  void startGpuReadings(const config::Config& config);
  std::optional<os::GpuReading> readGpus();
  void checkStopped();
  PoolRuntime* findPool(std::string_view name);
  const PoolRuntime* findPool(std::string_view name) const;
  void collectEvents();
  PoolView viewOf(const PoolRuntime& pool) const;
  std::optional<ZygoteStats> zygoteStatsOf(const PoolRuntime& pool) const;

  boost::asio::io_context& io_;
  std::unique_ptr<Host> host_;  // before everything that holds its timers
  SupervisorOptions options_;
  std::vector<std::unique_ptr<PoolRuntime>> pools_;
  std::map<pid_t, std::shared_ptr<WorkerIo>> byPid_;
  struct PendingJob {
    Reply reply;
    PoolRuntime* pool;
    core::Payload payload;  // kept for a reroute to the fallback pool
    JobOptions options;
    int hops;
    std::vector<std::string> via;
  };
  std::map<core::JobId, PendingJob> pending_;
  std::deque<std::pair<PoolRuntime*, core::Event>> events_;
  bool draining_ = false;
  core::JobId nextJobId_ = 1;
  std::unique_ptr<HostTimer> timer_;    // the core's next deadline
  std::unique_ptr<HostTimer> sampler_;  // the pools' sample_interval
  std::shared_ptr<os::PayloadFiles> payloadFiles_;
  std::unique_ptr<HostTimer> payloadTrim_;  // drops payload files left unused
  bool payloadTrimArmed_ = false;
  std::unique_ptr<os::Cgroups> cgroups_;
  std::unique_ptr<os::GpuProbe> gpu_;  // null: no pool has GPUs, or no NVML here
  std::optional<core::Time> armedFor_;
  bool shuttingDown_ = false;
  std::function<void()> onStopped_;
  std::uint64_t orphansReaped_ = 0;
  // Children reaped before we knew their pid: a zygote-forked worker can die before the FORKED
  // frame that names it is read. Bounded, and each entry expires (the rule: core/exit_claims.h).
  core::ExitClaims unclaimedExits_;  // reaped before a FORKED named them
  EventFeed feed_;
  core::Time startedAt_;

  // Containment without a cgroup (src/os/orphans.h): what a worker leaves running is found
  // through /proc and killed with it. Defined at the end of supervisor.cc.
  os::OrphanQuery orphanQuery() const;
  void reportSweep(const std::string& whose, const os::SweepResult& result);
  void killLeftovers(const WorkerIo& worker);
  void killOrphansAtShutdown();
  void armLineage();
  bool recordLineage();  // false: no worker without a cgroup is left to watch
  std::map<pid_t, std::set<os::ProcessKey>> lineage_;  // by worker pid
  std::unique_ptr<HostTimer> lineageTimer_;
  bool lineageArmed_ = false;
  bool orphansSwept_ = false;
};

}  // namespace bulkhead::runtime
