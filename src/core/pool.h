#pragma once
// How a pool works: the policy core of the supervisor.
//
// A Pool receives past-tense events (a job was submitted, a worker became ready, a worker exited,
// time passed) together with the current time, and answers with imperative actions (spawn a
// worker, send it a job, signal its process group, report a job's outcome). It never performs I/O
// and never reads a clock, so every rule here is tested deterministically with simulated time.
//
// Worker states change only in setWorkerState(); job states only in setJobState(). After every
// event, rebalance() is the single place that spawns replacements, retires recycled workers,
// dispatches queued jobs and drives shutdown.
//
// The vocabulary lives in core/events.h and core/actions.h. The class is written in six files,
// one concern each: pool.cc (events in, views), pool_queue.cc (job states, queue, dispatch),
// pool_workers.cc (worker states, spawning, kill escalation, shutdown), pool_reports.cc (how jobs
// end: outcomes, retries, poison, breaker, reports), pool_recycle.cc (recycle rules, hangs),
// pool_index.cc (the worker indexes, core/worker_index.h, that keep per-event work independent
// of the pool's size).

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "core/actions.h"
#include "core/breaker.h"
#include "core/crash_loop.h"
#include "core/events.h"
#include "core/outcome.h"
#include "core/quarantine.h"
#include "core/recycle_cause.h"
#include "core/resource_rules.h"
#include "core/time.h"
#include "core/worker_index.h"

namespace bulkhead::core {

struct PoolPolicy {
  std::string name;
  int workers = 2;
  // Extra workers kept started and READY outside dispatch: when a serving worker dies, is killed
  // or retires, a standby takes its place at once and a new standby starts behind it.
  int standby = 0;
  std::size_t queueLimit = 1000;
  Duration jobTimeout = std::chrono::seconds(30);    // one attempt's run time, nothing else
  Duration queueTimeout = std::chrono::seconds(30);  // a sync job's wait for a worker
  std::optional<Duration> asyncQueueTimeout;         // async jobs: unset = never expire queued
  Duration startupTimeout = std::chrono::seconds(60);
  int retries = 2;
  std::uint64_t maxJobs = 0;   // 0: never recycle on job count
  bool maxJobsStrict = false;  // served maxJobs: no further job, even before the replacement
  Duration stackSettle = std::chrono::milliseconds(200);  // dump signal -> SIGTERM
  Duration killGrace = std::chrono::seconds(1);           // SIGTERM -> SIGKILL
  Duration killWait = std::chrono::seconds(5);            // SIGKILL -> give the worker up
  Duration stopGrace = std::chrono::seconds(5);           // SHUTDOWN frame -> SIGTERM
  Duration shutdownTimeout = std::chrono::seconds(30);
  int startFailureLimit = 3;  // consecutive start failures with no ready worker: pool unavailable
  CrashLoopPolicy crashLoop;
  ResourceBounds bounds;                  // soft: recycle between jobs
  Duration maxAge{0};                     // 0: no age limit
  Duration hangAfter{0};                  // 0: no hang detection, only job_timeout
  std::uint64_t memoryLimitBytes = 0;     // hard (cgroup), for evidence; 0: none
  std::uint64_t pidsLimit = 0;            // hard (cgroup), for evidence; 0: none
  std::uint64_t gpuMemoryLimitBytes = 0;  // hard, checked on each sample of a busy worker; 0: none
  int poisonAfter = 2;                    // crashes on this many different workers: poison; 0: off
  BreakerPolicy breaker;                  // failures = 0: no breaker
  std::string fallback;                   // reroute here while the breaker is open; empty: none
  std::size_t poolsInDaemon = 1;          // bounds a job's fallback hops (core/fallback_route.h)
  // Prefetch: while jobs queue and no worker is idle, a busy worker is sent its next job before
  // it answers the one it runs, so it never waits for the daemon between jobs. Only while the
  // pool's jobs are short: its average run time, and the running job's time so far, below this.
  // 0: never.
  Duration prefetchBelow{0};
};

enum class WorkerState {
  kSpawning,  // asked the shell to start it, no pid yet
  kStarting,  // process exists, not ready
  kIdle,
  kBusy,
  kStopping,  // asked to exit gracefully (SHUTDOWN frame sent)
  // Being killed, one state per step of the escalation; each waits its own policy duration:
  kKillSettling,     // stacks asked for (DumpStacks), waiting stack_settle before SIGTERM
  kKillTerminating,  // SIGTERM sent to the group, waiting kill_grace before SIGKILL
  kKillKilling,      // SIGKILL sent, waiting kill_wait before giving the process up
};
// The name operators see: the three kill steps all read "killing".
std::string_view workerStateName(WorkerState state);
bool isKilling(WorkerState state);
// The worker state machine's table: may a worker go from `from` to `to`? (Pool::setWorkerState
// aborts on any other move: that would be our bug, not a peer's.)
bool workerTransitionAllowed(WorkerState from, WorkerState to);
enum class KillReason {
  kJobTimeout,
  kHung,
  kStartupTimeout,
  kProtocolError,
  kCancelled,  // the caller cancelled the running job
  kShutdown,   // the supervisor is shutting down
  kStopTimeout,
  kGpuMemoryLimit  // a sample of the busy worker showed more GPU memory than gpu_memory_limit
};

struct WorkerView {
  WorkerId id;
  std::string name;
  int slot;
  int pid;
  WorkerState state;
  bool retiring;
  bool ready;  // idle or busy and not retiring: counts towards the pool's target
  std::uint64_t jobsServed;
  Time startedAt;
  std::optional<JobId> job;
  std::optional<JobId> nextJob;  // delivered (prefetched), starts when `job` is answered
  std::string recycleCause;      // recycleCauseName(): the word shown; empty when not recycling
  std::optional<ResourceSample> latestSample;
  std::optional<Time> deadline;  // when its current state times out; none: never
  bool standby = false;          // waiting outside dispatch to take a serving worker's place
};

// A Prometheus-style cumulative histogram over fixed buckets (seconds).
struct LatencyHistogram {
  static constexpr double kBounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                       0.25,   0.5,   1,      2.5,   5,    10,    30,   60};
  static constexpr std::size_t kBuckets = sizeof(kBounds) / sizeof(kBounds[0]);
  std::uint64_t counts[kBuckets + 1] = {};  // last: above every bound (+Inf)
  std::uint64_t count = 0;
  double sum = 0;

  void observe(double seconds) {
    std::size_t i = 0;
    while (i < kBuckets && seconds > kBounds[i]) ++i;
    counts[i]++;
    count++;
    sum += seconds;
  }
};

struct PoolCounters {
  std::uint64_t submitted = 0;
  std::map<Outcome, std::uint64_t> outcomes;
  std::uint64_t retries = 0;
  std::uint64_t workerStarts = 0;
  std::uint64_t startFailures = 0;
  std::uint64_t workerDeaths = 0;
  std::uint64_t recycles = 0;
  std::uint64_t standbyPromotions = 0;  // standby workers that took a serving worker's place
  std::uint64_t prefetched = 0;         // jobs sent to a busy worker ahead of time
  std::uint64_t prefetchReturns = 0;    // of those, sent back unstarted: their worker ended first
  std::map<std::string, std::uint64_t> recyclesByCause;  // by recycleCauseName()
  LatencyHistogram queueSeconds;                         // jobs that ran
  LatencyHistogram runSeconds;                           // jobs that ran
  LatencyHistogram totalSeconds;                         // every job, refusals included
};

// Something an operator wants to see in the event stream.
struct PoolEvent {
  std::uint64_t seq;  // per pool, from 1, never reused
  Time at;
  std::string kind;  // "started", "ready", "recycled", "crashed", "hung", "oom_killed", ...
  std::string worker;
  std::string detail;
  int pid = 0;    // the worker's, when there is one
  JobId job = 0;  // the job it ran, for crashes, timeouts and quarantines
};

class Pool {
 public:
  Pool(PoolPolicy policy, Time now);

  std::vector<Action> handle(const Event& event, Time now);
  std::optional<Time> nextDeadline() const;

  const PoolPolicy& policy() const { return policy_; }
  std::vector<WorkerView> workers() const;
  std::size_t queueLength() const { return queue_.size(); }
  // "queued" or "running" for a job this pool holds; nullopt otherwise.
  std::optional<std::string> jobStateName(JobId job) const;
  std::size_t inFlight() const;
  // Whether a job waits at this worker behind the one it runs (prefetch).
  bool hasDeliveredJob(WorkerId worker) const;
  const PoolCounters& counters() const { return counters_; }
  bool stopped() const;  // shutdown finished: no jobs, no workers
  bool unavailable() const { return unavailable_; }
  std::size_t readyWorkers() const;
  const std::optional<AttemptRecord>& lastStartFailure() const { return lastStartFailure_; }
  std::string workerName(WorkerId id) const;
  const std::deque<PoolEvent>& recentEvents() const { return events_; }
  std::uint64_t eventsNoted() const { return eventsNoted_; }
  const Quarantine& quarantine() const { return quarantine_; }
  BreakerState breakerState() const { return breaker_.state(); }
  // For tests, after any event: empty when the worker indexes agree with a full scan of the
  // workers; else what differs. Costs O(workers), so the pool itself never calls it.
  std::string indexProblems() const;

 private:
  // kDelivered: sent to a busy worker (prefetch), to start when that worker answers its job.
  enum class JobState { kQueued, kDelivered, kRunning, kFinished };

  struct Job {
    JobId id;
    Payload payload;
    Duration timeout;
    Time submittedAt;
    Time queuedAt;
    Time runStartedAt{};
    std::optional<Time> queueDeadline;  // when waiting for a worker ends it; unset: never
    std::optional<Time> deadline;       // the caller's end-to-end budget
    bool async = false;
    int hops = 0;  // fallback reroutes before it came here
    JobState state = JobState::kQueued;
    std::optional<WorkerId> worker;
    std::vector<AttemptRecord> attempts;
    double queueMs = 0;
    bool dispatched = false;     // ran on a worker at least once
    bool quarantined = false;    // its attempts put its payload in quarantine
    bool cancelOnStart = false;  // cancelled while delivered: its worker is killed as it starts
    std::string stage;           // timed_out: "queued" or "running"
  };

  // Recycling marks a worker retiring: it serves on while its replacement starts, unless it is over
  // a bound (crossed one, or its next job would), when it takes no further job.
  enum class Retirement { kNone, kRetiring, kRetiringOverBound };

  struct Worker {
    WorkerId id;
    int slot;
    int pid = 0;
    bool standby = false;  // outside dispatch and the target until promoteStandby() clears it
    WorkerState state = WorkerState::kSpawning;
    Retirement retirement = Retirement::kNone;
    std::uint64_t jobsServed = 0;
    Time startedAt;
    Time stateSince{};  // when it entered its state: deadlineFor() counts from it
    std::optional<JobId> job;
    std::optional<JobId> nextJob;  // delivered behind `job` (prefetch), not started
    Time jobStartedAt{};           // when `job` started
    std::optional<KillReason> killReason;
    std::string killCause;
    std::optional<ErrorInfo> startError;
    std::optional<RecycleCause> recycleCause;
    std::optional<ResourceSample> latestSample;
    std::optional<ResourceSample> jobEndSample;  // arrived just before the result
    std::uint64_t pidsEventsAtDispatch = 0;      // pids.events "max" when the job was sent
    JobEndHistory history;
    Time jobDeadline{};
    Time lastProgressAt{};
    Time lastBeatAt{};
    std::optional<WorkerHeartbeat> lastBeat;
    // What index_ holds for this worker; nullopt until it is indexed. Only reindex() writes it.
    std::optional<WorkerIndexEntry> indexed;

    bool retiring() const { return retirement != Retirement::kNone; }
  };

  // one handler per event type
  void on(const JobSubmitted& e, Time now);
  void on(const JobCancelled& e, Time now);
  void on(const WorkerSpawned& e, Time now);
  void on(const WorkerSpawnFailed& e, Time now);
  void on(const WorkerReady& e, Time now);
  void on(const WorkerStartFailed& e, Time now);
  void on(const JobResultReceived& e, Time now);
  void on(const JobErrorReceived& e, Time now);
  void on(const WorkerHeartbeat& e, Time now);
  void on(const WorkerSampled& e, Time now);
  void on(const WorkerMisbehaved& e, Time now);
  void on(const WorkerExited& e, Time now);
  void on(const TimePassed& e, Time now);
  void on(const ShutdownRequested& e, Time now);
  void on(const ShellNoted& e, Time now);

  void rebalance(Time now);
  void promoteStandby(Time now);
  void spawnMissing(Time now);
  void retireRecycled(Time now);
  void dispatch(Time now);
  void prefetch(Time now);
  bool prefetching() const;
  // Hands `job` to `worker` as its running job: dispatch, and the start of a delivered job.
  void startJob(Worker& worker, Job& job, Time now);
  // The worker answered its job: its delivered job, if any, starts; true if one did.
  bool startDelivered(Worker& worker, Time now);
  // The worker ended before it answered its job: its delivered job never started, back first.
  void requeueDelivered(Worker& worker, Time now);
  void observeRunTime(const Worker& worker, Time now);
  void expireDeadlines(Time now);
  void driveShutdown(Time now);

  // The only writer of a worker's state (the kill escalation's steps included).
  void setWorkerState(Worker& worker, WorkerState next, Time now);
  std::optional<Time> deadlineFor(const Worker& worker) const;
  // The only writers of a worker's retirement, and of a busy worker's last progress (which moves
  // its hang deadline).
  void setRetirement(Worker& worker, Retirement next);
  void recordProgress(Worker& worker, Time now);
  // Brings index_ in line with the worker's fields; every writer above ends with it.
  void reindex(Worker& worker);
  WorkerIndexEntry indexEntryFor(const Worker& worker) const;
  void setJobState(Job& job, JobState next, Time now);
  void removeFromQueue(const Job& job);
  void dropQueueDeadline(const Job& job);
  void beginKill(Worker& worker, KillReason reason, std::string cause, Time now);
  void advanceKill(Worker& worker, Time now);
  void beginStop(Worker& worker, Time now);
  void backOffSpawns(Time now);
  void recordStartFailure(AttemptRecord record, Time now);
  void failInFlight(Worker& worker, const ExitEvidence& evidence, Time now);
  // `extra` carries what only some endings have: the result, its worker, a full queue.
  void finish(Job& job, Outcome outcome, std::string detail, Time now, JobReport extra = {});
  JobReport reportFor(Job& job, Outcome outcome, std::string detail, Time now) const;
  static JobReport queueFullReport() {
    JobReport r;
    r.queueFull = true;
    return r;
  }
  bool retryIfAllowed(Job& job, Outcome outcome, Time now);
  void expireQueued(Job& job, Time now);
  void enqueue(Job& job, Time now, bool front);
  std::optional<Time> queueDeadlineFor(const Job& job, Time now) const;
  std::optional<Time> latestStartupDeadline() const;
  void finishOk(Job& job, Worker& worker, ResultKind kind, Payload body, Time now);
  void failQueued(Outcome outcome, const std::string& detail, Time now);
  void removeWorker(WorkerId id);
  Worker* findWorker(WorkerId id);
  Job* findJob(JobId id);
  AttemptRecord attemptFor(const Job& job, const Worker& worker, Outcome outcome, Time now) const;
  int freeSlot() const;
  void afterJob(Worker& worker, Time now);
  void recycle(Worker& worker, RecycleCause cause, Time now);
  void checkRecycleRules(Worker& worker, Time now);
  Time busyDeadline(const Worker& worker) const;
  std::string hangCause(const Worker& worker, Time now) const;
  LimitEvidence limitsOf(const Worker& worker, const ExitEvidence* exit) const;
  void note(std::string kind, const Worker& worker, std::string detail, Time now, JobId job = 0);
  void note(std::string kind, std::string detail, Time now);
  void recordForBreaker(Outcome outcome, Time now);
  void observeLatency(const JobReport& report, bool ran);
  bool poisonedBy(const Job& job) const;
  bool canTakeMoreJobs() const { return !shuttingDown_ && !unavailable_; }

  PoolPolicy policy_;
  std::map<WorkerId, Worker> workers_;
  WorkerIndex index_;  // idle lists, deadlines and counts over workers_ (pool_index.cc)
  std::map<JobId, Job> jobs_;
  std::deque<JobId> queue_;
  // Queue deadlines in time order, so nextDeadline() never walks the queue.
  std::multimap<Time, JobId> queueDeadlines_;
  WorkerId nextWorkerId_ = 1;
  CrashLoop crashLoop_;
  std::optional<Time> spawnNotBefore_;
  int consecutiveStartFailures_ = 0;
  std::optional<AttemptRecord> lastStartFailure_;
  bool unavailable_ = false;
  bool shuttingDown_ = false;
  std::optional<Time> shutdownDeadline_;
  PoolCounters counters_;
  std::deque<PoolEvent> events_;
  std::uint64_t eventsNoted_ = 0;
  Breaker breaker_;
  Quarantine quarantine_;
  double runTimeAverageMs_ = 0;  // moving average of jobs' run times, for prefetch
  std::uint64_t runTimesSeen_ = 0;
  std::vector<Action> actions_;
};

}  // namespace bulkhead::core
