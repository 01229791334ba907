#include "core/pool.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/retry_rule.h"
#include "core/signal_names.h"

namespace bulkhead::core {

namespace {

// CPU growth of the worker between heartbeats that counts as progress: more than the heartbeat
// thread itself burns, less than any real computation.
constexpr double kCpuProgressSeconds = 0.05;
constexpr std::size_t kEventsKept = 256;

long long millisOf(Duration d) {
  return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

double millisBetween(Time from, Time to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// A broken invariant is our bug, not the peer's: stop loudly instead of guessing.
[[noreturn]] void invariantFailed(const char* what) {
  std::fprintf(stderr, "bulkhead: invariant broken in core::Pool: %s\n", what);
  std::abort();
}

// The last non-empty line of a worker's output: what an operator's log line quotes.
std::string lastLine(const std::string& text) {
  std::size_t end = text.find_last_not_of("\r\n \t");
  if (end == std::string::npos) return "";
  std::size_t begin = text.find_last_of('\n', end);
  begin = begin == std::string::npos ? 0 : begin + 1;
  std::string line = text.substr(begin, end - begin + 1);
  if (line.size() > 300) line = line.substr(0, 300) + "...";
  return line;
}

std::string describeExit(const ExitEvidence& e) {
  if (e.signal) {
    return "killed by " + std::string(signalName(*e.signal)) +
           (e.coreDumped ? " (core dumped)" : "");
  }
  if (e.exitCode) return "exited with code " + std::to_string(*e.exitCode);
  return "vanished";
}

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
    case WorkerState::kKilling:
      return "killing";
  }
  return "unknown";
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
  for (const auto& [id, w] : workers_) consider(w.deadline);
  if (!queueDeadlines_.empty()) consider(queueDeadlines_.begin()->first);
  consider(spawnNotBefore_);
  consider(shutdownDeadline_);
  return next;
}

std::vector<WorkerView> Pool::workers() const {
  std::vector<WorkerView> out;
  out.reserve(workers_.size());
  for (const auto& [id, w] : workers_) {
    const bool ready =
        !w.retiring && (w.state == WorkerState::kIdle || w.state == WorkerState::kBusy);
    std::string recycleCause(w.recycleCause ? recycleCauseName(*w.recycleCause) : "");
    out.push_back({id, workerName(id), w.slot, w.pid, w.state, w.retiring, ready, w.jobsServed,
                   w.startedAt, w.job, std::move(recycleCause), w.latestSample});
  }
  return out;
}

std::optional<std::string> Pool::jobStateName(JobId id) const {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  switch (it->second.state) {
    case JobState::kQueued:
      return "queued";
    case JobState::kRunning:
      return "running";
    case JobState::kFinished:
      return std::nullopt;
  }
  return std::nullopt;
}

std::size_t Pool::readyWorkers() const {
  std::size_t n = 0;
  for (const auto& [id, w] : workers_) {
    n += !w.retiring && (w.state == WorkerState::kIdle || w.state == WorkerState::kBusy);
  }
  return n;
}

std::size_t Pool::inFlight() const {
  std::size_t n = 0;
  for (const auto& [id, job] : jobs_) n += job.state == JobState::kRunning;
  return n;
}

bool Pool::stopped() const { return shuttingDown_ && workers_.empty() && jobs_.empty(); }

std::string Pool::workerName(WorkerId id) const { return policy_.name + "-" + std::to_string(id); }

// ---------------------------------------------------------------- transitions

void Pool::setWorkerState(Worker& worker, WorkerState next, Time now) {
  const WorkerState from = worker.state;
  bool legal = false;
  switch (next) {
    case WorkerState::kSpawning:
      legal = false;
      break;
    case WorkerState::kStarting:
      legal = from == WorkerState::kSpawning;
      break;
    case WorkerState::kIdle:
      legal = from == WorkerState::kStarting || from == WorkerState::kBusy;
      break;
    case WorkerState::kBusy:
      legal = from == WorkerState::kIdle;
      break;
    case WorkerState::kStopping:
      legal = from == WorkerState::kIdle;
      break;
    case WorkerState::kKilling:
      legal = from == WorkerState::kStarting || from == WorkerState::kBusy ||
              from == WorkerState::kIdle || from == WorkerState::kStopping ||
              from == WorkerState::kKilling;
      break;
  }
  if (!legal) invariantFailed("illegal worker state transition");
  worker.state = next;
  switch (next) {
    case WorkerState::kStarting:
      worker.deadline = now + policy_.startupTimeout;
      break;
    case WorkerState::kIdle:
      worker.deadline.reset();
      break;
    case WorkerState::kBusy:
      break;  // the job's timeout, set by dispatch()
    case WorkerState::kStopping:
      worker.deadline = now + policy_.stopGrace;
      break;
    case WorkerState::kKilling:
      break;  // set by the kill phase
    case WorkerState::kSpawning:
      break;
  }
}

void Pool::setJobState(Job& job, JobState next, Time now) {
  const JobState from = job.state;
  switch (next) {
    case JobState::kQueued:
      if (from != JobState::kRunning) invariantFailed("requeue of a job not running");
      job.worker.reset();
      enqueue(job, now, /*front=*/true);  // a retried job goes first: it has waited already
      break;
    case JobState::kRunning:
      if (from != JobState::kQueued) invariantFailed("dispatch of a job not queued");
      removeFromQueue(job);
      job.dispatched = true;
      job.runStartedAt = now;
      job.queueMs += millisBetween(job.queuedAt, now);
      break;
    case JobState::kFinished:
      if (from == JobState::kFinished) invariantFailed("job finished twice");
      if (from == JobState::kQueued) {
        removeFromQueue(job);
        job.queueMs += millisBetween(job.queuedAt, now);  // overloaded reports the real wait
      }
      break;
  }
  job.state = next;
}

void Pool::removeFromQueue(const Job& job) {
  if (!queue_.empty() && queue_.front() == job.id) {
    queue_.pop_front();
  } else {
    queue_.erase(std::remove(queue_.begin(), queue_.end(), job.id), queue_.end());
  }
  dropQueueDeadline(job);
}

void Pool::dropQueueDeadline(const Job& job) {
  if (!job.queueDeadline) return;
  auto [from, to] = queueDeadlines_.equal_range(*job.queueDeadline);
  for (auto it = from; it != to; ++it) {
    if (it->second == job.id) {
      queueDeadlines_.erase(it);
      break;
    }
  }
}

// Deadlines, one meaning each (docs/api.md, "Deadlines"): job_timeout bounds one attempt's run;
// queue_timeout bounds a sync job's wait for a worker (async jobs wait without a limit unless
// async_queue_timeout is set); the caller's deadline bounds everything.
std::optional<Time> Pool::queueDeadlineFor(const Job& job, Time now) const {
  std::optional<Time> until;
  if (!job.async) {
    until = now + policy_.queueTimeout;
  } else if (policy_.asyncQueueTimeout) {
    until = now + *policy_.asyncQueueTimeout;
  }
  if (job.deadline && (!until || *job.deadline < *until)) until = job.deadline;
  return until;
}

void Pool::enqueue(Job& job, Time now, bool front) {
  job.queuedAt = now;
  job.queueDeadline = queueDeadlineFor(job, now);
  if (front) {
    queue_.push_front(job.id);
  } else {
    queue_.push_back(job.id);
  }
  if (job.queueDeadline) queueDeadlines_.emplace(*job.queueDeadline, job.id);
}

// A worker still starting will have one to offer until its startup deadline: the queue waits for
// it (a cold start with a slow preload must not turn the first jobs away).
std::optional<Time> Pool::latestStartupDeadline() const {
  std::optional<Time> latest;
  for (const auto& [id, w] : workers_) {
    if (w.retiring || w.state != WorkerState::kStarting || !w.deadline) continue;
    if (!latest || *w.deadline > *latest) latest = w.deadline;
  }
  return latest;
}

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
  if (w && w->state != WorkerState::kKilling && w->state != WorkerState::kStopping) {
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
        exhaustionCause(limits, e.error.type + ": " + e.error.message + "\n" + e.error.traceback);
    const Outcome outcome = exhausted ? Outcome::kResourceExhausted : Outcome::kHandlerError;
    AttemptRecord a = attemptFor(job, *w, outcome, now);
    a.error = e.error;
    a.cause = exhausted ? *exhausted : "the handler raised " + e.error.type;
    if (exhausted) {
      a.limit = limits.pidsMaxEvents ? "pids" : "threads_or_maps";
      a.limitValue = limits.pidsMaxEvents ? policy_.pidsLimit : 0;
      a.exit.pidsMaxEvents = limits.pidsMaxEvents;
      a.lastSample = w->latestSample;
    }
    job.attempts.push_back(std::move(a));
    w->job.reset();
    w->jobsServed++;
    setWorkerState(*w, WorkerState::kIdle, now);
    if (!exhausted) {
      afterJob(*w, now);
      finish(job, Outcome::kHandlerError, e.error.type + ": " + e.error.message, now);
      return;
    }
    // The worker can no longer create threads or maps: it must not take another job.
    note("resource_exhausted", *w, *exhausted, now, job.id);
    recycle(*w, RecycleCause::kExhausted, now);
    beginStop(*w, now);
    if (retryIfAllowed(job, outcome, now)) return;
    finish(job, outcome, *exhausted, now);
    return;
  }
  if (w && w->state != WorkerState::kKilling && w->state != WorkerState::kStopping) {
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
    w->lastProgressAt = now;
    w->lastBeat = e;
  }
  w->deadline = busyDeadline(*w);
}

void Pool::on(const WorkerSampled& e, Time now) {
  Worker* w = findWorker(e.worker);
  if (!w) return;
  w->latestSample = e.sample;
  if (e.afterJob && w->state == WorkerState::kBusy) {
    w->jobEndSample = e.sample;
    return;  // judged when the result arrives, together with the job count
  }
  if (w->state == WorkerState::kIdle && !w->retiring) checkRecycleRules(*w, now);
}

void Pool::on(const WorkerMisbehaved& e, Time now) {
  Worker* w = findWorker(e.worker);
  if (!w || w->state == WorkerState::kKilling) return;
  beginKill(*w, KillReason::kProtocolError, "protocol_error: " + e.reason, now);
}

void Pool::on(const WorkerExited& e, Time now) {
  Worker* w = findWorker(e.worker);
  if (!w) return;
  const bool expected =
      w->state == WorkerState::kStopping ||
      (w->state == WorkerState::kKilling &&
       (w->killReason == KillReason::kShutdown || w->killReason == KillReason::kStopTimeout) &&
       !w->job);
  if (!expected) counters_.workerDeaths++;
  // A crash loop is workers that fail to start, die before READY or die while idle (bad install,
  // bad preload, a broken GPU): those deaths back the pool off. A worker that dies while running a
  // job is that job's doing (poison handles repeats): it is replaced at once, or innocent jobs
  // queued behind it would wait out the backoff.
  if (!expected && !w->job) backOffSpawns(now);

  if (w->state == WorkerState::kStarting ||
      (w->state == WorkerState::kKilling && w->killReason == KillReason::kStartupTimeout)) {
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

// ---------------------------------------------------------------- outcomes

AttemptRecord Pool::attemptFor(const Job& job, const Worker& worker, Outcome outcome,
                               Time now) const {
  AttemptRecord a;
  a.number = static_cast<int>(job.attempts.size()) + 1;
  a.worker = workerName(worker.id);
  a.pid = worker.pid;
  a.outcome = outcome;
  a.runMs = millisBetween(job.runStartedAt, now);
  return a;
}

void Pool::failInFlight(Worker& w, const ExitEvidence& evidence, Time now) {
  Job& job = jobs_.at(*w.job);
  w.job.reset();
  Outcome outcome = Outcome::kCrashed;
  std::string cause = "worker " + describeExit(evidence) + " while running the job";
  std::string limit;
  std::uint64_t limitValue = 0;
  const bool abnormal = evidence.signal || (evidence.exitCode && *evidence.exitCode != 0);
  if (evidence.oomKilled) {
    outcome = Outcome::kOomKilled;
    limit = "memory";
    limitValue = policy_.memoryLimitBytes;
    cause = "killed by the kernel at its memory limit of " +
            std::to_string(policy_.memoryLimitBytes >> 20) + " MiB (peak " +
            std::to_string(evidence.memoryPeakBytes >> 20) + " MiB)";
  } else if (abnormal) {
    // Library messages count only when the worker exited on its own (code != 0): a signal
    // death is told by its signal, never by what stderr happens to hold (FAULTS.md, segfault).
    LimitEvidence limits = limitsOf(w, &evidence);
    auto exhausted =
        exhaustionCause(limits, evidence.exitCode ? evidence.stderrTail : std::string());
    if (exhausted) {
      outcome = Outcome::kResourceExhausted;
      cause = *exhausted;
      limit = limits.pidsMaxEvents ? "pids" : "threads_or_maps";
      limitValue = limits.pidsMaxEvents ? policy_.pidsLimit : 0;
    }
  }
  // A refused thread or fork often shows as a hang (a thread pool waiting for a thread that was
  // never created, FAULTS.md): if the cgroup refused one during this job, that is the cause.
  const bool pidsRefusedDuringJob = evidence.pidsMaxEvents > w.pidsEventsAtDispatch;
  auto pidsExhausted = [&](const std::string& what) {
    outcome = Outcome::kResourceExhausted;
    limit = "pids";
    limitValue = policy_.pidsLimit;
    cause = "pids_limit of " + std::to_string(policy_.pidsLimit) +
            " refused a thread or process while the job ran (pids.events max " +
            std::to_string(evidence.pidsMaxEvents) + "); then " + what;
  };
  if (w.state == WorkerState::kKilling && w.killReason) {
    switch (*w.killReason) {
      case KillReason::kJobTimeout:
        outcome = Outcome::kTimedOut;
        cause = w.killCause;
        if (pidsRefusedDuringJob) pidsExhausted(w.killCause);
        break;
      case KillReason::kHung:
        if (outcome == Outcome::kCrashed) outcome = Outcome::kHung;
        if (outcome == Outcome::kHung) cause = w.killCause;
        if (outcome == Outcome::kHung && pidsRefusedDuringJob) pidsExhausted(w.killCause);
        break;
      case KillReason::kProtocolError:
        cause = w.killCause;
        break;
      case KillReason::kCancelled:
      case KillReason::kShutdown:
        outcome = Outcome::kCancelled;
        cause = w.killCause;
        break;
      case KillReason::kStartupTimeout:
      case KillReason::kStopTimeout:
        break;
    }
  }
  AttemptRecord a = attemptFor(job, w, outcome, now);
  a.exit = evidence;
  a.cause = cause;
  a.limit = limit;
  a.limitValue = limitValue;
  if (outcome == Outcome::kResourceExhausted || outcome == Outcome::kOomKilled ||
      outcome == Outcome::kHung) {
    a.lastSample = w.latestSample;
  }
  job.attempts.push_back(std::move(a));
  std::string noted = cause;
  if (auto line = lastLine(evidence.stderrTail); !line.empty()) {
    noted += "; last stderr line: " + line;
  }
  note(std::string(outcomeName(outcome)), w, std::move(noted), now, job.id);

  std::string detail = "worker " + workerName(w.id) + " (pid " + std::to_string(w.pid) + ") " +
                       describeExit(evidence);
  if (outcome != Outcome::kCrashed) detail = cause;
  if (job.attempts.size() > 1) detail += " (attempt " + std::to_string(job.attempts.size()) + ")";

  // The caller hears what happened to this job (crashed, hung, oom_killed...), marked quarantined;
  // only a resubmission refused without running is `poison`.
  if (poisonedBy(job)) {
    std::string fingerprint = payloadFingerprint(*job.payload);
    std::string why = "the job killed " + std::to_string(policy_.poisonAfter) +
                      " different workers; its payload is quarantined";
    quarantine_.add({fingerprint, policy_.name, job.id, now, why, job.attempts});
    note("poisoned", w, why + " (" + fingerprint + ")", now, job.id);
    job.quarantined = true;
    finish(job, outcome, detail + "; " + why, now);
    return;
  }
  if (retryIfAllowed(job, outcome, now)) return;
  if (outcome == Outcome::kTimedOut) job.stage = "running";
  finish(job, outcome, detail, now);
}

bool Pool::retryIfAllowed(Job& job, Outcome outcome, Time now) {
  const RetryFacts facts{outcome, static_cast<int>(job.attempts.size()), policy_.retries,
                         shuttingDown_, job.deadline && *job.deadline <= now};
  if (!shouldRetry(facts)) return false;
  counters_.retries++;
  setJobState(job, JobState::kQueued, now);
  return true;
}

// The one place a JobReport is assembled from a job that ends (ran or not).
JobReport Pool::reportFor(Job& job, Outcome outcome, std::string detail, Time now) const {
  JobReport r;
  r.jobId = job.id;
  r.pool = policy_.name;
  r.outcome = outcome;
  r.detail = std::move(detail);
  r.attempts = std::move(job.attempts);
  r.queueMs = job.queueMs;
  r.totalMs = millisBetween(job.submittedAt, now);
  for (const auto& a : r.attempts) r.runMs += a.runMs;
  r.breakerOpen = outcome == Outcome::kUnavailable && !job.dispatched &&
                  breaker_.state() != BreakerState::kClosed;
  if (outcome == Outcome::kPoison || job.quarantined) {
    r.fingerprint = payloadFingerprint(*job.payload);
  }
  r.quarantined = job.quarantined;
  r.stage = job.stage;
  if (outcome == Outcome::kOverloaded) r.retryAfterSeconds = 1;
  if (outcome == Outcome::kUnavailable) {
    r.retryAfterSeconds = 5;
    r.lastStartFailure = lastStartFailure_;
  }
  return r;
}

void Pool::finish(Job& job, Outcome outcome, std::string detail, Time now, JobReport extra) {
  // Only jobs that ran tell the breaker about the pool's health (not refusals, not queue waits).
  const bool ran = job.dispatched;
  setJobState(job, JobState::kFinished, now);
  counters_.outcomes[outcome]++;
  if (ran) recordForBreaker(outcome, now);
  JobReport r = reportFor(job, outcome, std::move(detail), now);
  r.queueFull = extra.queueFull;
  r.resultKind = extra.resultKind;
  r.result = std::move(extra.result);
  r.worker = std::move(extra.worker);
  observeLatency(r, ran);
  actions_.push_back(FinishJob{std::move(r)});
  jobs_.erase(job.id);
}

void Pool::finishOk(Job& job, Worker& w, ResultKind kind, Payload body, Time now) {
  job.attempts.push_back(attemptFor(job, w, Outcome::kOk, now));
  w.job.reset();
  w.jobsServed++;
  setWorkerState(w, WorkerState::kIdle, now);
  afterJob(w, now);
  JobReport result;
  result.resultKind = kind;
  result.result = std::move(body);
  result.worker = workerName(w.id);
  finish(job, Outcome::kOk, "", now, std::move(result));
}

void Pool::observeLatency(const JobReport& r, bool ran) {
  counters_.totalSeconds.observe(r.totalMs / 1000);
  if (!ran) return;
  counters_.queueSeconds.observe(r.queueMs / 1000);
  counters_.runSeconds.observe(r.runMs / 1000);
}

void Pool::failQueued(Outcome outcome, const std::string& detail, Time now) {
  while (!queue_.empty()) finish(jobs_.at(queue_.front()), outcome, detail, now);
}

void Pool::backOffSpawns(Time now) {
  crashLoop_.recordDeath(now);
  // Each death in a crash loop pushes the next spawn out; ready workers are not affected.
  auto delay = crashLoop_.spawnDelay(now);
  if (delay.count() > 0 && (!spawnNotBefore_ || *spawnNotBefore_ < now + delay)) {
    spawnNotBefore_ = now + delay;
  }
}

void Pool::recordStartFailure(AttemptRecord record, Time now) {
  counters_.startFailures++;
  consecutiveStartFailures_++;
  lastStartFailure_ = std::move(record);
  bool anyReady = std::any_of(workers_.begin(), workers_.end(), [](const auto& kv) {
    return kv.second.state == WorkerState::kIdle || kv.second.state == WorkerState::kBusy;
  });
  if (!anyReady && consecutiveStartFailures_ >= policy_.startFailureLimit) {
    unavailable_ = true;
    failQueued(Outcome::kUnavailable,
               "no worker of pool '" + policy_.name + "' could start: " + lastStartFailure_->cause,
               now);
  }
}

// ---------------------------------------------------------------- killing

void Pool::beginKill(Worker& w, KillReason reason, std::string cause, Time now) {
  if (w.state == WorkerState::kSpawning) invariantFailed("kill of a worker without a process");
  w.killReason = reason;
  w.killCause = std::move(cause);
  const bool wantStacks = reason == KillReason::kJobTimeout || reason == KillReason::kHung ||
                          reason == KillReason::kStartupTimeout;
  setWorkerState(w, WorkerState::kKilling, now);
  if (wantStacks) {
    w.killPhase = KillPhase::kSettleStacks;
    w.deadline = now + policy_.stackSettle;
    actions_.push_back(DumpStacks{w.id});
  } else {
    w.killPhase = KillPhase::kTerminate;
    w.deadline = now + policy_.killGrace;
    actions_.push_back(SignalWorkerGroup{w.id, GroupSignal::kTerminate});
  }
}

void Pool::advanceKill(Worker& w, Time now) {
  switch (w.killPhase) {
    case KillPhase::kSettleStacks:
      w.killPhase = KillPhase::kTerminate;
      w.deadline = now + policy_.killGrace;
      actions_.push_back(SignalWorkerGroup{w.id, GroupSignal::kTerminate});
      return;
    case KillPhase::kTerminate:
      w.killPhase = KillPhase::kKill;
      w.deadline = now + policy_.killWait;
      actions_.push_back(SignalWorkerGroup{w.id, GroupSignal::kKill});
      return;
    case KillPhase::kKill: {
      // SIGKILL did not end it (uninterruptible sleep). Stop waiting: settle the job as if it
      // exited, keep reaping in the shell, and let a replacement take the slot.
      ExitEvidence none;
      none.signal = 9;
      WorkerExited gone{w.id, none};
      on(gone, now);
      return;
    }
  }
}

void Pool::beginStop(Worker& w, Time now) {
  setWorkerState(w, WorkerState::kStopping, now);
  actions_.push_back(SendShutdown{w.id});
}

void Pool::expireDeadlines(Time now) {
  std::vector<WorkerId> due;
  for (auto& [id, w] : workers_) {
    if (w.deadline && *w.deadline <= now) due.push_back(id);
  }
  for (WorkerId id : due) {
    Worker* w = findWorker(id);
    if (!w || !w->deadline || *w->deadline > now) continue;
    switch (w->state) {
      case WorkerState::kStarting:
        beginKill(*w, KillReason::kStartupTimeout,
                  "startup_timeout: not ready after " +
                      std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         policy_.startupTimeout)
                                         .count()) +
                      " ms",
                  now);
        break;
      case WorkerState::kBusy: {
        const Job& job = jobs_.at(*w->job);
        if (w->jobDeadline > now) {
          beginKill(*w, KillReason::kHung, hangCause(*w, now), now);
          break;
        }
        const bool callersDeadline = job.deadline && *job.deadline <= now;
        beginKill(*w, KillReason::kJobTimeout,
                  callersDeadline ? "the caller's deadline passed after " +
                                        std::to_string(millisOf(now - job.submittedAt)) +
                                        " ms, while the job ran (attempt " +
                                        std::to_string(job.attempts.size() + 1) + ")"
                                  : "job ran longer than its timeout of " +
                                        std::to_string(millisOf(job.timeout)) + " ms",
                  now);
        break;
      }
      case WorkerState::kStopping:
        beginKill(*w, KillReason::kStopTimeout, "did not exit after SHUTDOWN", now);
        break;
      case WorkerState::kKilling:
        advanceKill(*w, now);
        break;
      case WorkerState::kSpawning:
      case WorkerState::kIdle:
        w->deadline.reset();
        break;
    }
  }
  while (!queue_.empty()) {
    if (queueDeadlines_.empty() || queueDeadlines_.begin()->first > now) break;
    expireQueued(jobs_.at(queueDeadlines_.begin()->second), now);
  }
}

void Pool::expireQueued(Job& job, Time now) {
  const std::string waited =
      "waited " + std::to_string(static_cast<long long>(millisBetween(job.queuedAt, now))) +
      " ms in the queue of pool '" + policy_.name + "' without a free worker";
  if (job.deadline && *job.deadline <= now) {
    job.stage = "queued";
    const std::string why = "the caller's deadline passed after " +
                            std::to_string(millisOf(now - job.submittedAt)) + " ms; " + waited;
    if (!job.attempts.empty()) {
      const AttemptRecord& last = job.attempts.back();
      return finish(job, Outcome::kTimedOut, last.cause + "; then " + why, now);
    }
    return finish(job, Outcome::kTimedOut, why, now);
  }
  // Still starting: a worker is on its way, so wait for it, at most until its startup deadline
  // and never longer than one startup_timeout past the queue's own limit.
  if (auto starting = latestStartupDeadline(); starting && *starting > now) {
    const Time original = queueDeadlineFor(job, job.queuedAt).value_or(now);
    Time until = std::min(*starting, original + policy_.startupTimeout);
    if (job.deadline) until = std::min(until, *job.deadline);
    if (until > now) {
      dropQueueDeadline(job);
      job.queueDeadline = until;
      queueDeadlines_.emplace(until, job.id);
      return;
    }
  }
  if (!job.attempts.empty()) {
    // A retry that found no worker in time: the caller must hear how the job failed (say a
    // SIGABRT), not an invitation to resubmit it.
    const AttemptRecord& last = job.attempts.back();
    return finish(job, last.outcome, last.cause + "; no retry possible: " + waited, now);
  }
  finish(job, Outcome::kOverloaded, waited, now);
}

// ---------------------------------------------------------------- rebalance

void Pool::rebalance(Time now) {
  spawnMissing(now);
  dispatch(now);
  retireRecycled(now);
  driveShutdown(now);
}

int Pool::freeSlot() const {
  std::set<int> taken;
  for (const auto& [id, w] : workers_) {
    if (!w.retiring && w.state != WorkerState::kStopping && w.state != WorkerState::kKilling) {
      taken.insert(w.slot);
    }
  }
  int slot = 0;
  while (taken.count(slot)) ++slot;
  return slot;
}

void Pool::spawnMissing(Time now) {
  if (shuttingDown_) return;
  if (spawnNotBefore_) {
    if (now < *spawnNotBefore_) return;
    spawnNotBefore_.reset();
  }
  int live = 0;
  for (const auto& [id, w] : workers_) {
    live += !w.retiring && w.state != WorkerState::kStopping && w.state != WorkerState::kKilling;
  }
  for (; live < policy_.workers; ++live) {
    Worker w;
    w.id = nextWorkerId_++;
    w.slot = freeSlot();
    w.startedAt = now;
    actions_.push_back(SpawnWorker{w.id, w.slot});
    workers_.emplace(w.id, std::move(w));
  }
}

void Pool::dispatch(Time now) {
  while (!queue_.empty()) {
    Worker* chosen = nullptr;
    for (auto& [id, w] : workers_) {
      if (w.state != WorkerState::kIdle || w.overBound) continue;
      if (!chosen || (chosen->retiring && !w.retiring)) chosen = &w;
      if (!w.retiring) break;
    }
    if (!chosen) return;
    Job& job = jobs_.at(queue_.front());
    setJobState(job, JobState::kRunning, now);
    job.worker = chosen->id;
    chosen->job = job.id;
    setWorkerState(*chosen, WorkerState::kBusy, now);
    chosen->jobDeadline = now + job.timeout;
    if (job.deadline && *job.deadline < chosen->jobDeadline) chosen->jobDeadline = *job.deadline;
    chosen->pidsEventsAtDispatch = chosen->latestSample ? chosen->latestSample->pidsMaxEvents : 0;
    chosen->lastProgressAt = now;
    chosen->lastBeatAt = now;
    chosen->lastBeat.reset();
    chosen->jobEndSample.reset();
    chosen->deadline = busyDeadline(*chosen);
    actions_.push_back(SendJob{chosen->id, job.id, job.payload});
  }
}

void Pool::retireRecycled(Time now) {
  int ready = 0;
  for (const auto& [id, w] : workers_) {
    ready += !w.retiring && (w.state == WorkerState::kIdle || w.state == WorkerState::kBusy);
  }
  for (auto& [id, w] : workers_) {
    if (!w.retiring || w.state != WorkerState::kIdle) continue;
    if (ready >= policy_.workers || shuttingDown_) beginStop(w, now);
  }
}

void Pool::driveShutdown(Time now) {
  if (!shuttingDown_) return;
  if (shutdownDeadline_ && *shutdownDeadline_ <= now) {
    shutdownDeadline_.reset();
    failQueued(Outcome::kCancelled, "the supervisor shut down before the job could run", now);
    for (auto& [id, w] : workers_) {
      if (w.state == WorkerState::kBusy) {
        beginKill(w, KillReason::kShutdown, "the supervisor shut down while the job ran", now);
      }
    }
  }
  const bool anyoneCanServe = std::any_of(workers_.begin(), workers_.end(), [](const auto& kv) {
    return kv.second.state == WorkerState::kIdle || kv.second.state == WorkerState::kBusy;
  });
  if (!anyoneCanServe) {
    failQueued(Outcome::kCancelled, "the supervisor shut down with no worker left to run the job",
               now);
  }
  if (!queue_.empty()) return;
  for (auto& [id, w] : workers_) {
    if (w.state == WorkerState::kIdle) beginStop(w, now);
    if (w.state == WorkerState::kStarting) {
      beginKill(w, KillReason::kShutdown, "the supervisor shut down", now);
    }
  }
  std::vector<WorkerId> unspawned;
  for (auto& [id, w] : workers_) {
    if (w.state == WorkerState::kSpawning) unspawned.push_back(id);
  }
  for (WorkerId id : unspawned) {
    actions_.push_back(ReleaseWorker{id});
    removeWorker(id);
  }
  if (jobs_.empty()) shutdownDeadline_.reset();
}

// ---------------------------------------------------------------- resources

Time Pool::busyDeadline(const Worker& w) const {
  if (policy_.hangAfter.count() <= 0) return w.jobDeadline;
  return std::min(w.jobDeadline, w.lastProgressAt + policy_.hangAfter);
}

std::string Pool::hangCause(const Worker& w, Time now) const {
  const Duration quiet = now - w.lastBeatAt;
  if (quiet >= policy_.hangAfter) {
    return "no heartbeat for " + std::to_string(millisOf(quiet)) +
           " ms (native code holding the GIL, or the process is frozen)";
  }
  return "no progress for " + std::to_string(millisOf(now - w.lastProgressAt)) +
         " ms: heartbeats show no CPU growth, the same stack and no ctx.progress()";
}

void Pool::afterJob(Worker& w, Time now) {
  if (w.jobEndSample) {
    w.history.record(w.jobsServed, *w.jobEndSample);
    w.jobEndSample.reset();
  }
  if (policy_.maxJobs > 0 && w.jobsServed >= policy_.maxJobs)
    return recycle(w, RecycleCause::kJobs, now);
  checkRecycleRules(w, now);
}

void Pool::checkRecycleRules(Worker& w, Time now) {
  if (w.retiring) {
    // Retiring on a trend, it may still serve while its replacement starts, but not once a
    // bound is crossed or its next job would cross one: then it waits idle for the replacement.
    if (w.latestSample && !w.overBound) {
      w.overBound = nextJobWouldCross(*w.latestSample, w.history, policy_.bounds, w.jobsServed);
    }
    return;
  }
  if (policy_.maxAge.count() > 0 && now - w.startedAt >= policy_.maxAge) {
    return recycle(w, RecycleCause::kAge, now);
  }
  if (!w.latestSample) return;
  if (auto cause = recycleCause(*w.latestSample, w.history, policy_.bounds)) {
    recycle(w, *cause, now);
  }
}

void Pool::recycle(Worker& w, RecycleCause cause, Time now) {
  if (w.retiring) return;
  w.retiring = true;
  // A crossed bound (not a predicted one) or an exhausted worker takes no further job.
  w.overBound = recycleCauseCrossedBound(cause);
  if (!w.overBound && w.latestSample) {
    w.overBound = nextJobWouldCross(*w.latestSample, w.history, policy_.bounds, w.jobsServed);
  }
  w.recycleCause = cause;
  const std::string word(recycleCauseName(cause));
  counters_.recycles++;
  counters_.recyclesByCause[word]++;
  note("recycled", w, word, now);
}

LimitEvidence Pool::limitsOf(const Worker& w, const ExitEvidence* exit) const {
  LimitEvidence l;
  l.memoryLimitBytes = policy_.memoryLimitBytes;
  l.pidsLimit = policy_.pidsLimit;
  l.lastSample = w.latestSample;
  if (exit) {
    l.oomKilled = exit->oomKilled;
    l.memoryPeakBytes = exit->memoryPeakBytes;
    l.pidsMaxEvents = exit->pidsMaxEvents;
  }
  return l;
}

bool Pool::poisonedBy(const Job& job) const {
  if (policy_.poisonAfter <= 0) return false;
  std::set<std::string> killers;
  for (const auto& a : job.attempts) {
    if (a.outcome == Outcome::kCrashed || a.outcome == Outcome::kHung ||
        a.outcome == Outcome::kOomKilled) {
      killers.insert(a.worker);
    }
  }
  return static_cast<int>(killers.size()) >= policy_.poisonAfter;
}

void Pool::recordForBreaker(Outcome outcome, Time now) {
  bool failed = false;
  switch (outcome) {
    case Outcome::kOk:
    case Outcome::kHandlerError:
      break;
    case Outcome::kCrashed:
    case Outcome::kTimedOut:
    case Outcome::kHung:
    case Outcome::kOomKilled:
    case Outcome::kResourceExhausted:
    case Outcome::kPoison:
      failed = true;
      break;
    case Outcome::kOverloaded:
    case Outcome::kUnavailable:
    case Outcome::kCancelled:
      return;  // not a verdict on the pool's health
  }
  switch (breaker_.record(failed, now)) {
    case Breaker::Change::kOpened:
      note("breaker_opened",
           "circuit breaker opened after " + std::to_string(policy_.breaker.failures) + " failures",
           now);
      break;
    case Breaker::Change::kClosed:
      note("breaker_closed", "the probe job succeeded", now);
      break;
    case Breaker::Change::kNone:
      break;
  }
}

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

void Pool::removeWorker(WorkerId id) { workers_.erase(id); }

Pool::Worker* Pool::findWorker(WorkerId id) {
  auto it = workers_.find(id);
  return it == workers_.end() ? nullptr : &it->second;
}

Pool::Job* Pool::findJob(JobId id) {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}

}  // namespace bulkhead::core
