// How jobs end: attempt records, a worker's death turned into an outcome (failInFlight), the
// retry decision, poison (quarantine) and breaker recording, the one report builder, latency.
// Owns: counters_ outcomes and latency, quarantine_, breaker_ records. May not touch: worker
// states (it reads them) or the queue beyond setJobState.

#include <set>
#include <string>

#include "core/exit_outcome.h"
#include "core/fallback_route.h"
#include "core/pool.h"
#include "core/pool_detail.h"
#include "core/retry_rule.h"

namespace bulkhead::core {

using pool_detail::describeExit;
using pool_detail::millisBetween;

namespace {

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

}  // namespace

// ---------------------------------------------------------------- outcomes

AttemptRecord Pool::attemptFor(const Job& job, const Worker& worker, Outcome outcome,
                               Time now) const {
  AttemptRecord a;
  a.number = static_cast<int>(job.attempts.size()) + 1;
  a.worker = workerName(worker.id);
  a.pid = worker.pid;
  a.outcome = outcome;
  a.runMs = millisBetween(job.runStartedAt, now);
  // In a GPU pool every attempt carries the GPU memory its worker last held: the evidence that
  // tells a job that needed the whole card from one that leaked it.
  const auto& sample = worker.jobEndSample ? worker.jobEndSample : worker.latestSample;
  if (sample && sample->gpuMemoryBytes >= 0) a.lastSample = sample;
  return a;
}

void Pool::failInFlight(Worker& w, const ExitEvidence& evidence, Time now) {
  Job& job = jobs_.at(*w.job);
  w.job.reset();
  ExitFacts facts;
  facts.evidence = evidence;
  facts.limits = limitsOf(w, &evidence);
  facts.memoryLimitBytes = policy_.memoryLimitBytes;
  facts.pidsLimit = policy_.pidsLimit;
  facts.pidsRefusedDuringWork = evidence.pidsMaxEvents > w.pidsEventsAtDispatch;
  if (isKilling(w.state) && w.killReason) {
    facts.killCause = w.killCause;
    switch (*w.killReason) {
      case KillReason::kJobTimeout:
        facts.killReason = ExitKillReason::kTimeout;
        break;
      case KillReason::kHung:
        facts.killReason = ExitKillReason::kHung;
        break;
      case KillReason::kProtocolError:
        facts.killReason = ExitKillReason::kProtocol;
        break;
      case KillReason::kCancelled:
      case KillReason::kShutdown:
        facts.killReason = ExitKillReason::kCancelled;
        break;
      case KillReason::kStartupTimeout:
      case KillReason::kStopTimeout:
        facts.killReason = ExitKillReason::kOther;
        break;
      case KillReason::kGpuMemoryLimit:
        facts.killReason = ExitKillReason::kResourceBound;
        facts.boundLimit = "gpu_memory";
        facts.boundValue = policy_.gpuMemoryLimitBytes;
        break;
    }
  }
  ExitVerdict verdict = classifyExit(facts, "worker");
  const Outcome outcome = verdict.outcome;
  const std::string cause = verdict.cause;
  const std::string limit = verdict.limit;
  const std::uint64_t limitValue = verdict.limitValue;
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
  // Refused while the breaker is open: the fallback pool may take it (counted here all the same,
  // as this pool's answer).
  if (auto route =
          fallbackRoute(r.breakerOpen, policy_.fallback, job.hops, policy_.poolsInDaemon)) {
    actions_.push_back(Resubmit{job.id, route->pool, std::move(r)});
  } else {
    actions_.push_back(FinishJob{std::move(r)});
  }
  jobs_.erase(job.id);
}

void Pool::finishOk(Job& job, Worker& w, ResultKind kind, Payload body, Time now) {
  job.attempts.push_back(attemptFor(job, w, Outcome::kOk, now));
  observeRunTime(w, now);
  w.job.reset();
  w.jobsServed++;
  setWorkerState(w, WorkerState::kIdle, now);
  afterJob(w, now);
  startDelivered(w, now);
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

// ---------------------------------------------------------------- poison and breaker

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

}  // namespace bulkhead::core
