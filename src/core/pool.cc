// The pool's front door: events in (handle() and one on(...) handler per event type), the next
// deadline, the read-only views the shell and the API show, and the operator event log.
// Owns: what each event means for its worker or job. May not touch: how a job's report is built
// (pool_reports.cc), the queue's order and deadlines (pool_queue.cc), kill escalation, spawning
// and shutdown (pool_workers.cc), or the recycle rules (pool_recycle.cc); it calls into them.

#include "core/pool.h"

#include <algorithm>
#include <string>

#include "core/pool_detail.h"

namespace bulkhead::core {

using pool_detail::describeExit;
using pool_detail::invariantFailed;
using pool_detail::millisBetween;

namespace {

// CPU growth of the worker between heartbeats that counts as progress: more than the heartbeat
// thread itself burns, less than any real computation.
constexpr double kCpuProgressSeconds = 0.05;
constexpr std::size_t kEventsKept = 256;

}  // namespace

std::string_view workerStateName(WorkerState state) {
  switch (state) {
    case WorkerState::kSpawning:
      return "spawning";
    case WorkerState::kStarting:
      return "starting";
    case WorkerState::kIdle:
      return "idle";
    case WorkerState::kBusy:
      return "busy";
    case WorkerState::kStopping:
      return "stopping";
    case WorkerState::kKillSettling:
    case WorkerState::kKillTerminating:
    case WorkerState::kKillKilling:
      return "killing";
  }
  return "unknown";
}

bool isKilling(WorkerState state) {
  switch (state) {
    case WorkerState::kKillSettling:
    case WorkerState::kKillTerminating:
    case WorkerState::kKillKilling:
      return true;
    case WorkerState::kSpawning:
    case WorkerState::kStarting:
    case WorkerState::kIdle:
    case WorkerState::kBusy:
    case WorkerState::kStopping:
      return false;
  }
  return false;
}

Pool::Pool(PoolPolicy policy, Time /*now*/)
    : policy_(std::move(policy)), crashLoop_(policy_.crashLoop), breaker_(policy_.breaker) {}

std::vector<Action> Pool::handle(const Event& event, Time now) {
  std::visit([&](const auto& e) { on(e, now); }, event);
  rebalance(now);
  std::vector<Action> out;
  out.swap(actions_);
  return out;
}

std::optional<Time> Pool::nextDeadline() const {
  std::optional<Time> next;
  auto consider = [&](std::optional<Time> t) {
    if (t && (!next || *t < *next)) next = t;
  };
  consider(index_.nextDeadline());  // the earliest of deadlineFor() over the workers
  if (!queueDeadlines_.empty()) consider(queueDeadlines_.begin()->first);
  consider(spawnNotBefore_);
  consider(shutdownDeadline_);
  return next;
}

std::vector<WorkerView> Pool::workers() const {
  std::vector<WorkerView> out;
  out.reserve(workers_.size());
  for (const auto& [id, w] : workers_) {
    const bool ready = !w.retiring() && !w.standby &&
                       (w.state == WorkerState::kIdle || w.state == WorkerState::kBusy);
    std::string recycleCause(w.recycleCause ? recycleCauseName(*w.recycleCause) : "");
    out.push_back({id, workerName(id), w.slot, w.pid, w.state, w.retiring(), ready, w.jobsServed,
                   w.startedAt, w.job, w.nextJob, std::move(recycleCause), w.latestSample,
                   deadlineFor(w), w.standby});
  }
  return out;
}

std::optional<std::string> Pool::jobStateName(JobId id) const {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  switch (it->second.state) {
    case JobState::kQueued:
    case JobState::kDelivered:  // at its worker, not started: it waits as a queued job does
      return "queued";
    case JobState::kRunning:
      return "running";
    case JobState::kFinished:
      return std::nullopt;
  }
  return std::nullopt;
}

std::size_t Pool::readyWorkers() const { return index_.ready(); }

std::size_t Pool::inFlight() const {
  std::size_t n = 0;
  for (const auto& [id, job] : jobs_) {
    n += job.state == JobState::kRunning || job.state == JobState::kDelivered;
  }
  return n;
}

bool Pool::hasDeliveredJob(WorkerId id) const {
  auto it = workers_.find(id);
  return it != workers_.end() && it->second.nextJob.has_value();
}

bool Pool::stopped() const { return shuttingDown_ && workers_.empty() && jobs_.empty(); }

std::string Pool::workerName(WorkerId id) const { return policy_.name + "-" + std::to_string(id); }

// ---------------------------------------------------------------- events

void Pool::on(const JobSubmitted& e, Time now) {
  counters_.submitted++;
  Job job;
  job.id = e.job;
  job.payload = e.payload;
  job.timeout = e.timeout.value_or(policy_.jobTimeout);
  job.submittedAt = now;
  job.queuedAt = now;
  job.deadline = e.deadline;
  job.async = e.async;
  job.hops = e.hops;
  auto [it, inserted] = jobs_.emplace(e.job, std::move(job));
  if (!inserted) invariantFailed("duplicate job id");
  Job& j = it->second;
  if (shuttingDown_) {
    // Refused before it was queued: no latency observed, no start failure to blame, and the
    // caller may retry sooner (another supervisor may already be up).
    setJobState(j, JobState::kFinished, now);
    counters_.outcomes[Outcome::kUnavailable]++;
    JobReport r = reportFor(j, Outcome::kUnavailable, "the supervisor is shutting down", now);
    r.breakerOpen = false;
    r.lastStartFailure.reset();
    r.retryAfterSeconds = 1;
    actions_.push_back(FinishJob{std::move(r)});
    jobs_.erase(it);
    return;
  }
  if (!quarantine_.empty() && !e.allowPoison) {
    if (const QuarantineEntry* q = quarantine_.find(payloadFingerprint(*e.payload))) {
      j.attempts = q->attempts;  // the evidence that condemned it
      finish(j, Outcome::kPoison,
             "payload quarantined: it crashed " + std::to_string(policy_.poisonAfter) +
                 " workers as job " + std::to_string(q->jobId) +
                 " (send X-Bulkhead-Allow-Poison: 1 to run it anyway)",
             now);
      return;
    }
  }
  if (breaker_.admit(now) == Breaker::Admission::kReject) {
    finish(j, Outcome::kUnavailable,
           "circuit breaker of pool '" + policy_.name + "' is " +
               std::string(breakerStateName(breaker_.state())),
           now);
    return;
  }
  if (unavailable_) {
    finish(j, Outcome::kUnavailable,
           "no worker of pool '" + policy_.name + "' could start (" +
               std::to_string(consecutiveStartFailures_) + " start failures in a row" +
               (lastStartFailure_ ? ", the last: " + lastStartFailure_->cause : "") + ")",
           now);
    return;
  }
  if (queue_.size() >= policy_.queueLimit) {
    finish(
        j, Outcome::kOverloaded,
        "queue of pool '" + policy_.name + "' is full (" + std::to_string(queue_.size()) + " jobs)",
        now, queueFullReport());
    return;
  }
  enqueue(j, now, /*front=*/false);
}

void Pool::on(const JobCancelled& e, Time now) {
  Job* job = findJob(e.job);
  if (!job) return;
  if (job->state == JobState::kQueued) {
    finish(*job, Outcome::kCancelled, "cancelled by the caller", now);
    return;
  }
  if (job->state == JobState::kDelivered) {
    // Its worker will start it once it answers the job ahead: the cancel waits for that start
    // (or the queue, if the worker ends first). Prefetch delivers only short jobs.
    job->cancelOnStart = true;
    return;
  }
  if (job->state == JobState::kRunning && job->worker) {
    Worker* w = findWorker(*job->worker);
    if (w && w->state == WorkerState::kBusy) {
      beginKill(*w, KillReason::kCancelled, "cancelled by the caller", now);
    }
  }
}

void Pool::on(const WorkerSpawned& e, Time now) {
  Worker* w = findWorker(e.worker);
  if (!w || w->state != WorkerState::kSpawning) return;
  w->pid = e.pid;
  w->startedAt = now;
  counters_.workerStarts++;
  setWorkerState(*w, WorkerState::kStarting, now);
  note("started", *w, "pid " + std::to_string(e.pid), now);
}

void Pool::on(const WorkerSpawnFailed& e, Time now) {
  Worker* w = findWorker(e.worker);
  if (!w || w->state != WorkerState::kSpawning) return;
  AttemptRecord record;
  record.worker = workerName(w->id);
  record.outcome = Outcome::kCrashed;
  record.cause = "spawn failed: " + e.reason;
  note("start_failed", *w, record.cause, now);
  backOffSpawns(now);  // a spawn that keeps failing at once must not be retried at once forever
  recordStartFailure(std::move(record), now);
  actions_.push_back(ReleaseWorker{w->id});
  removeWorker(w->id);
}

void Pool::on(const WorkerReady& e, Time now) {
  Worker* w = findWorker(e.worker);
  if (!w) return;
  if (w->state != WorkerState::kStarting) {
    on(WorkerMisbehaved{e.worker, "READY sent while " + std::string(workerStateName(w->state))},
       now);
    return;
  }
  consecutiveStartFailures_ = 0;
  unavailable_ = false;
  setWorkerState(*w, WorkerState::kIdle, now);
  note("ready", *w,
       "after " + std::to_string(static_cast<long long>(millisBetween(w->startedAt, now))) + " ms",
       now);
}

void Pool::on(const WorkerStartFailed& e, Time now) {
  Worker* w = findWorker(e.worker);
  if (!w) return;
  if (w->state != WorkerState::kStarting) {
    on(WorkerMisbehaved{e.worker, "START_FAILED sent after start"}, now);
    return;
  }
  // The worker exits by itself after saying so; keep the reason for when it does.
  w->startError = e.error;
}

void Pool::on(const JobResultReceived& e, Time now) {
  Worker* w = findWorker(e.worker);
  if (w && w->state == WorkerState::kBusy && w->job == e.job) {
    Job& job = jobs_.at(e.job);
    finishOk(job, *w, e.kind, e.body, now);
    return;
  }
  if (w && !isKilling(w->state) && w->state != WorkerState::kStopping) {
    on(WorkerMisbehaved{e.worker, "result for job " + std::to_string(e.job) +
                                      " which is not in flight on this worker"},
       now);
  }
}

void Pool::on(const JobErrorReceived& e, Time now) {
  Worker* w = findWorker(e.worker);
  if (w && w->state == WorkerState::kBusy && w->job == e.job) {
    Job& job = jobs_.at(e.job);
    LimitEvidence limits = limitsOf(*w, nullptr);
    limits.pidsMaxEvents = e.pidsMaxEvents;
    auto exhausted =
        exhaustionOf(limits, e.error.type + ": " + e.error.message + "\n" + e.error.traceback);
    const Outcome outcome = exhausted ? Outcome::kResourceExhausted : Outcome::kHandlerError;
    AttemptRecord a = attemptFor(job, *w, outcome, now);
    a.error = e.error;
    a.cause = exhausted ? exhausted->cause : "the handler raised " + e.error.type;
    if (exhausted) {
      a.limit = exhausted->limit;
      a.limitValue = exhausted->limitValue;
      a.exit.pidsMaxEvents = limits.pidsMaxEvents;
      a.lastSample = w->latestSample;
    }
    job.attempts.push_back(std::move(a));
    observeRunTime(*w, now);
    w->job.reset();
    w->jobsServed++;
    setWorkerState(*w, WorkerState::kIdle, now);
    if (!exhausted) {
      afterJob(*w, now);
      startDelivered(*w, now);
      finish(job, Outcome::kHandlerError, e.error.type + ": " + e.error.message, now);
      return;
    }
    // The worker can no longer get a thread, a map or GPU memory (its allocator caches what it
    // got): it must not take another job. One already delivered runs (it may have started):
    // retiring over its bound, the worker stops after it.
    note("resource_exhausted", *w, exhausted->cause, now, job.id);
    recycle(*w, RecycleCause::kExhausted, now);
    if (!startDelivered(*w, now)) beginStop(*w, now);
    if (retryIfAllowed(job, outcome, now)) return;
    finish(job, outcome, exhausted->cause, now);
    return;
  }
  if (w && !isKilling(w->state) && w->state != WorkerState::kStopping) {
    on(WorkerMisbehaved{e.worker, "error for job " + std::to_string(e.job) +
                                      " which is not in flight on this worker"},
       now);
  }
}

void Pool::on(const WorkerHeartbeat& e, Time now) {
  Worker* w = findWorker(e.worker);
  if (!w || w->state != WorkerState::kBusy || w->job != e.job) return;  // late or idle: ignore
  w->lastBeatAt = now;
  const bool moved = !w->lastBeat || e.progress != w->lastBeat->progress ||
                     e.stack != w->lastBeat->stack ||
                     e.cpuSeconds - w->lastBeat->cpuSeconds >= kCpuProgressSeconds;
  if (moved) {
    w->lastBeat = e;
    recordProgress(*w, now);
  }
}

void Pool::on(const WorkerSampled& e, Time now) {
  Worker* w = findWorker(e.worker);
  if (!w) return;
  w->latestSample = e.sample;
  if (e.afterJob && w->state == WorkerState::kBusy) {
    w->jobEndSample = e.sample;
    return;  // judged when the result arrives, together with the job count
  }
  // What the job just answered left, counted with it as if it had come before the result. Not
  // once the worker took another job: that job's own state would blur it.
  if (e.afterAnswer && w->state == WorkerState::kIdle) w->history.record(w->jobsServed, e.sample);
  // The hard GPU limit: no cgroup can cap GPU memory, so a sample over it ends the job.
  if (w->state == WorkerState::kBusy && policy_.gpuMemoryLimitBytes &&
      e.sample.gpuMemoryBytes >= 0 &&
      static_cast<std::uint64_t>(e.sample.gpuMemoryBytes) > policy_.gpuMemoryLimitBytes) {
    beginKill(*w, KillReason::kGpuMemoryLimit,
              "GPU memory " + std::to_string(e.sample.gpuMemoryBytes >> 20) +
                  " MiB over gpu_memory_limit (" +
                  std::to_string(policy_.gpuMemoryLimitBytes >> 20) + " MiB)",
              now);
    return;
  }
  if (w->state == WorkerState::kIdle && !w->retiring()) checkRecycleRules(*w, now);
}

void Pool::on(const WorkerMisbehaved& e, Time now) {
  Worker* w = findWorker(e.worker);
  if (!w || isKilling(w->state)) return;
  beginKill(*w, KillReason::kProtocolError, "protocol_error: " + e.reason, now);
}

void Pool::on(const WorkerExited& e, Time now) {
  Worker* w = findWorker(e.worker);
  if (!w) return;
  const bool expected =
      w->state == WorkerState::kStopping ||
      (isKilling(w->state) &&
       (w->killReason == KillReason::kShutdown || w->killReason == KillReason::kStopTimeout) &&
       !w->job);
  if (!expected) counters_.workerDeaths++;
  // A crash loop is workers that fail to start, die before READY or die while idle (bad install,
  // bad preload, a broken GPU): those deaths back the pool off. A worker that dies while running a
  // job is that job's doing (poison handles repeats): it is replaced at once, or innocent jobs
  // queued behind it would wait out the backoff.
  if (!expected && !w->job) backOffSpawns(now);

  if (w->state == WorkerState::kStarting ||
      (isKilling(w->state) && w->killReason == KillReason::kStartupTimeout)) {
    AttemptRecord record;
    record.worker = workerName(w->id);
    record.pid = w->pid;
    record.outcome = Outcome::kCrashed;
    record.exit = e.evidence;
    record.error = w->startError;
    if (w->killReason == KillReason::kStartupTimeout) {
      record.cause = w->killCause;
    } else if (w->startError) {
      record.cause = "start failed: " + w->startError->type + ": " + w->startError->message;
    } else {
      record.cause = "worker " + describeExit(e.evidence) + " before it was ready";
    }
    note("start_failed", *w, record.cause, now);
    recordStartFailure(std::move(record), now);
  } else if (w->job) {
    requeueDelivered(*w, now);  // before the retry of the job ahead, which goes first
    failInFlight(*w, e.evidence, now);
  } else if (!expected) {
    note("died", *w, "idle worker " + describeExit(e.evidence), now);
  }
  actions_.push_back(ReleaseWorker{w->id});
  removeWorker(w->id);
}

void Pool::on(const TimePassed&, Time now) { expireDeadlines(now); }

void Pool::on(const ShutdownRequested&, Time now) {
  if (shuttingDown_) return;
  shuttingDown_ = true;
  shutdownDeadline_ = now + policy_.shutdownTimeout;
}

// ---------------------------------------------------------------- operator events

void Pool::note(std::string kind, std::string detail, Time now) {
  events_.push_back({++eventsNoted_, now, std::move(kind), "", std::move(detail)});
  if (events_.size() > kEventsKept) events_.pop_front();
}

void Pool::on(const ShellNoted& e, Time now) {
  events_.push_back({++eventsNoted_, now, e.kind, e.worker, e.detail});
  if (events_.size() > kEventsKept) events_.pop_front();
}

void Pool::note(std::string kind, const Worker& w, std::string detail, Time now, JobId job) {
  events_.push_back(
      {++eventsNoted_, now, std::move(kind), workerName(w.id), std::move(detail), w.pid, job});
  if (events_.size() > kEventsKept) events_.pop_front();
}

// ---------------------------------------------------------------- lookup

void Pool::removeWorker(WorkerId id) {
  auto it = workers_.find(id);
  if (it == workers_.end()) return;
  if (it->second.indexed) index_.remove(id, *it->second.indexed);
  workers_.erase(it);
}

Pool::Worker* Pool::findWorker(WorkerId id) {
  auto it = workers_.find(id);
  return it == workers_.end() ? nullptr : &it->second;
}

Pool::Job* Pool::findJob(JobId id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

}  // namespace bulkhead::core
