// runSteps: the event loop of `bulkhead run` (see step_runner.h).
//
// How this works: one thread, one poll(2) over a signalfd (SIGINT, SIGTERM, SIGCHLD) and every
// running step's stdout/stderr pipe. Each turn asks the StepScheduler what is due (start, SIGTERM,
// SIGKILL), reaps exited children (we are a child subreaper, so orphaned grandchildren come back
// to us too), ends a step once its leader is reaped (the rest of its group and its cgroup are
// killed then: a step is its leader), and samples running trees every kSampleEveryMs
// (kYoungSampleEveryMs in their first second).

#include "run/step_runner.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <memory>

#include "core/signal_names.h"
#include "core/step_scheduler.h"
#include "os/proc.h"
#include "os/process.h"
#include "run/run_output.h"
#include "run/run_watcher.h"
#include "run/step_process.h"
#include "run/step_state.h"
#include "run/step_verdict.h"
#include "runtime/worker_spec.h"

extern char** environ;

namespace bulkhead::run {

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kSampleEveryMs = 250;
// A young step is sampled more often: most of a short step's life, and the start-up of a long one
// (imports, model load), would otherwise fall between two samples.
constexpr double kYoungSampleEveryMs = 40;
constexpr double kYoungForMs = 1000;

constexpr double kRedrawEveryMs = 1000;
constexpr double kPlainEveryMs = 10000;  // not a terminal: one line per step per 10 s

// Milliseconds until the step is due for its next sample (0 or less: now).
double sampleDueIn(const LiveStep& step, double now) {
  const double every = now - step.startedMs < kYoungForMs ? kYoungSampleEveryMs : kSampleEveryMs;
  return step.lastSampledMs + every - now;
}

double msNow() {
  return std::chrono::duration<double, std::milli>(Clock::now().time_since_epoch()).count();
}
std::int64_t unixMs() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

class Runner {
 public:
  explicit Runner(const RunOptions& o)
      : o_(o),
        scheduler_(o.steps.size(), {o.parallel, o.retries, o.timeout, o.grace}),
        progress_(::isatty(2) == 1),
        summaries_(o.steps.size()) {}

  int run();

 private:
  bool setUp(int* exitCode);
  void execute(const core::StepAction& action, double now);
  void start(std::size_t index, int attempt, double now);
  void finish(LiveStep& step, double now);
  void passThrough(LiveStep& step, bool final);
  void killTree(LiveStep& step, int signal);
  void onSignal(int signal);
  void redraw(double now);
  void record(const StepSummary& s, const std::string& outcome, pid_t pid);
  // Where the step writes its result: DIR/results/NAME.json, or a private temp file.
  std::string resultPathFor(std::size_t index) const {
    return o_.stateDir.empty() ? "/tmp/bulkhead-run-" + std::to_string(::getpid()) + "-" +
                                     std::to_string(index) + ".json"
                               : o_.stateDir + "/results/" + o_.steps[index] + ".json";
  }

  const RunOptions& o_;
  core::StepScheduler scheduler_;
  Progress progress_;
  std::vector<StepSummary> summaries_;
  std::vector<double> firstStartMs_ = std::vector<double>(o_.steps.size(), 0);
  std::map<std::size_t, std::unique_ptr<LiveStep>> live_;
  std::unique_ptr<os::Cgroups> cgroups_;
  std::unique_ptr<StepState> state_;
  RunWatcher watcher_;
  os::ProcReader proc_;
  os::UniqueFd signals_;
  int interruptSignal_ = 0;
  int maxMapCount_ = 65530;
  double lastRedrawMs_ = 0, lastPlainMs_ = 0;
  std::vector<std::string> baseEnvironment_;
};

bool Runner::setUp(int* exitCode) {
  // Before anything else (and before any thread): the watcher that outlives a SIGKILL of ours.
  std::string error;
  if (!watcher_.start(&error)) progress_.note("warning: " + error + " (no SIGKILL guard)");
  for (char** e = environ; *e; ++e) baseEnvironment_.emplace_back(*e);

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  signals_.reset(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
  os::becomeChildSubreaper();
  maxMapCount_ = readMaxMapCount();

  std::string whyNone;
  cgroups_ = os::detectCgroups("/proc/self/cgroup", "/proc/self/mountinfo", &whyNone);
  if (cgroups_->mode() == os::CgroupMode::kNone) {
    progress_.note("no cgroups (" + whyNone + "): limits by rlimit only, tree by process group");
  } else {
    std::string staleError;
    int removed = cgroups_->cleanupStale(&staleError);
    if (removed > 0) {
      progress_.note("removed the cgroups of " + std::to_string(removed) + " dead run(s)");
    }
  }

  state_ = o_.stateDir.empty() ? StepState::inMemory(&error) : StepState::open(o_.stateDir, &error);
  if (!state_) {
    std::fprintf(stderr, "bulkhead run: %s\n", error.c_str());
    *exitCode = kExitEnvironment;
    return false;
  }
  if (o_.fresh && !state_->clear(&error)) {
    std::fprintf(stderr, "bulkhead run: %s\n", error.c_str());
    *exitCode = kExitEnvironment;
    return false;
  }
  for (std::size_t i = 0; i < o_.steps.size(); ++i) {
    StepSummary& s = summaries_[i];
    s.name = o_.steps[i];
    auto row = state_->get(s.name, &error);
    if (!row) continue;
    if (row->outcome == "ok") {
      s = summaryFromRecord(*row);
      scheduler_.skip(i);
      std::string line = "step " + s.name + ": ok in an earlier run, skipped";
      if (s.result) line += "; result " + jsonText(*s.result);
      progress_.note(line);
    } else if (row->outcome == "running") {
      progress_.note("step " + s.name + " was running in run pid " +
                     std::to_string(row->runnerPid) + ", which ended without recording it: rerun");
    } else {
      progress_.note("step " + s.name + " ended " + row->outcome + " in an earlier run: rerun");
    }
  }
  return true;
}

void Runner::record(const StepSummary& s, const std::string& outcome, pid_t pid) {
  StepRecord r;
  r.name = s.name;
  r.outcome = outcome;
  r.attempts = s.attempts;
  r.durationMs = s.durationMs;
  r.runnerPid = static_cast<int>(::getpid());
  r.pid = pid;
  r.peaks = s.peaks;
  r.evidenceJson = jsonText(s.evidence);
  if (s.result) r.resultJson = jsonText(*s.result);
  r.updatedAtMs = unixMs();
  std::string error;
  if (!state_->put(r, &error)) progress_.note("warning: " + error);
}

void Runner::start(std::size_t index, int attempt, double now) {
  StepSummary& summary = summaries_[index];
  auto step = std::make_unique<LiveStep>();
  step->index = index;
  step->name = o_.steps[index];
  step->attempt = attempt;
  if (attempt == 1) firstStartMs_[index] = now;

  const std::string resultPath = resultPathFor(index);
  ::unlink(resultPath.c_str());

  os::SpawnSpec spec;
  spec.executable = o_.executable;
  for (const auto& arg : o_.command) spec.argv.push_back(replaceAll(arg, "{step}", step->name));
  for (const auto& [key, entry] :
       runtime::buildCommandEnvironment(o_.environment, 0, baseEnvironment_)) {
    spec.env.push_back(key + "=" + entry.value);
  }
  spec.env.push_back("BULKHEAD_STEP=" + step->name);
  spec.env.push_back("BULKHEAD_STEP_ATTEMPT=" + std::to_string(attempt));
  spec.env.push_back("BULKHEAD_STEP_RESULT=" + resultPath);
  spec.workingDirectory = o_.workingDirectory;

  if (cgroups_->mode() != os::CgroupMode::kNone) {
    os::CgroupLimits limits{o_.memoryBytes, o_.pids};
    std::string error;
    auto cg = cgroups_->create("step" + std::to_string(index) + "-a" + std::to_string(attempt),
                               limits, &error);
    if (cg) {
      step->cgroup = std::move(*cg);
      spec.joinCgroupFds = step->cgroup->procsFds();
      step->cgroupProcs = step->cgroup->pidsDir() + "/cgroup.procs";
      for (const auto& dir : step->cgroup->directories()) watcher_.watchCgroup(dir);
    } else {
      progress_.note("warning: step " + step->name + ": no cgroup (" + error + ")");
    }
  }
  if (!step->cgroup && o_.memoryBytes) {
    spec.addressSpaceLimit = *o_.memoryBytes;  // the no-cgroup fallback, as for pool workers
  }

  summary.attempts = attempt;
  step->startedMs = now;
  auto spawned = os::spawnCommand(spec);
  if (step->cgroup) step->cgroup->closeProcsFds();
  if (auto* failed = std::get_if<os::SpawnError>(&spawned)) {
    std::string error;
    if (step->cgroup) {
      for (const auto& dir : step->cgroup->directories()) watcher_.forgetCgroup(dir);
      cgroups_->remove(*step->cgroup, &error);
    }
    summary.outcome = std::string(core::outcomeName(core::Outcome::kHandlerError));
    summary.attemptOutcomes.push_back(summary.outcome);
    summary.evidence = {{"cause", "cannot start the command: " + failed->describe()}};
    summary.durationMs = now - firstStartMs_[index];
    record(summary, summary.outcome, 0);
    progress_.note("step " + step->name + " " + summary.outcome + ": " + failed->describe());
    scheduler_.ended(index, core::Outcome::kHandlerError, core::Time{});
    return;
  }
  auto& p = std::get<os::CommandProcess>(spawned);
  step->pid = p.pid;
  watcher_.watchGroup(p.pid);
  step->stdoutRead = std::move(p.stdoutRead);
  step->stderrRead = std::move(p.stderrRead);
  record(summary, "running", p.pid);
  progress_.note("step " + step->name + " (" + std::to_string(index + 1) + "/" +
                 std::to_string(o_.steps.size()) + ") START attempt " + std::to_string(attempt) +
                 " pid " + std::to_string(p.pid));
  live_[index] = std::move(step);
}

void Runner::killTree(LiveStep& step, int signal) {
  os::signalProcessGroup(step.pid, signal);
  if (signal == SIGKILL && step.cgroup) {
    for (pid_t pid : treePids(step, proc_)) {
      if (pid > 1) ::kill(pid, SIGKILL);
    }
  }
}

void Runner::execute(const core::StepAction& a, double now) {
  switch (a.kind) {
    case core::StepAction::Kind::kStart:
      start(a.step, a.attempt, now);
      break;
    case core::StepAction::Kind::kTerminate:
      if (auto it = live_.find(a.step); it != live_.end()) {
        progress_.note("step " + it->second->name + ": SIGTERM to its process group (" +
                       (a.reason == core::StepStopReason::kTimeout ? "timeout" : "interrupted") +
                       ")");
        killTree(*it->second, SIGTERM);
      }
      break;
    case core::StepAction::Kind::kKill:
      if (auto it = live_.find(a.step); it != live_.end()) {
        progress_.note("step " + it->second->name + ": SIGKILL to its tree after the grace");
        killTree(*it->second, SIGKILL);
      }
      break;
  }
}

void Runner::passThrough(LiveStep& step, bool final) {
  std::string out, err;
  drainPipe(step.stdoutRead, &out);
  drainPipe(step.stderrRead, &err);
  if (final) {
    step.stdoutRead.reset();
    step.stderrRead.reset();
  }
  if (out.empty() && err.empty()) return;
  progress_.erase();
  if (!out.empty()) writeAll(o_.json ? 2 : 1, out);
  if (!err.empty()) {
    step.stderrTail.append(err);
    writeAll(2, err);
  }
}

void Runner::finish(LiveStep& step, double now) {
  StepSummary& summary = summaries_[step.index];
  // The leader is gone: the step is over. Its cgroup's counters first, then nothing of it stays.
  os::CgroupCounters counters;
  if (step.cgroup) counters = cgroups_->counters(*step.cgroup);
  killTree(step, SIGKILL);
  if (step.cgroup) {
    std::string error;
    if (!cgroups_->remove(*step.cgroup, &error)) progress_.note("warning: " + error);
    for (const auto& dir : step.cgroup->directories()) watcher_.forgetCgroup(dir);
  }
  passThrough(step, true);
  watcher_.forgetGroup(step.pid);

  StepEnd end;
  end.rawStatus = *step.rawStatus;
  end.stderrTail = step.stderrTail.tail();
  end.stderrTotalBytes = step.stderrTail.totalBytes();
  end.oomKills = counters.oomKills;
  end.pidsMaxEvents = counters.pidsMaxEvents;
  end.memoryPeakBytes = counters.memoryPeakBytes;
  end.stopReason = scheduler_.stopReason(step.index);
  end.interruptSignal = interruptSignal_;
  end.largestProcessMaps = step.largestMapsPeak;
  end.rssBytes = step.latest.rssBytes;
  end.threads = step.latest.threads;
  const double ranMs = now - step.startedMs;
  end.runMs = ranMs;
  StepLimitsSet limits{o_.memoryBytes.value_or(0), o_.pids.value_or(0), o_.maxMaps,
                       std::chrono::duration<double, std::milli>(o_.timeout).count()};
  StepVerdict verdict = judgeStep(end, limits);
  const core::Outcome outcome = verdict.outcome;
  nlohmann::json& evidence = verdict.evidence;

  summary.outcome = std::string(core::outcomeName(outcome));
  summary.attemptOutcomes.push_back(summary.outcome);
  summary.peaks.rssBytes = std::max(summary.peaks.rssBytes, step.peaks.rssBytes);
  summary.peaks.threads = std::max(summary.peaks.threads, step.peaks.threads);
  summary.peaks.maps = std::max(summary.peaks.maps, step.peaks.maps);
  summary.peaks.pids = std::max(summary.peaks.pids, step.peaks.pids);
  summary.durationMs = now - firstStartMs_[step.index];

  // The result the step wrote, kept with its outcome.
  const std::string resultPath = resultPathFor(step.index);
  bool tooLarge = false;
  const std::optional<std::string> text = readSmallFile(resultPath, &tooLarge);
  keepStepResult(text, tooLarge, summary, evidence);
  if (text && o_.stateDir.empty()) ::unlink(resultPath.c_str());
  summary.evidence = evidence;
  record(summary, summary.outcome, step.pid);

  const bool retry = scheduler_.ended(step.index, outcome, core::Time{});
  std::string line = "step " + step.name + " END " + summary.outcome + " in " +
                     formatDuration(ranMs) + " (peak rss=" + formatBytes(step.peaks.rssBytes) +
                     " threads=" + std::to_string(step.peaks.threads) +
                     " maps=" + std::to_string(step.peaks.maps) + ")";
  if (outcome != core::Outcome::kOk) line += ": " + evidence.value("cause", std::string());
  if (retry) line += "; retrying in a fresh process";
  progress_.note(line);
}

void Runner::onSignal(int signal) {
  if (signal == SIGCHLD) return;
  if (interruptSignal_) {
    // A second Ctrl-C: no more grace.
    progress_.note("second interrupt: SIGKILL to every running step");
    for (auto& [index, step] : live_) killTree(*step, SIGKILL);
    return;
  }
  interruptSignal_ = signal;
  progress_.note(std::string("interrupted by ") + core::signalName(signal) +
                 ": stopping running steps (again to kill at once)");
  scheduler_.interrupt(core::Time{});
}

void Runner::redraw(double now) {
  std::vector<std::string> lines;
  for (auto& [index, step] : live_) {
    lines.push_back(liveLine(step->name, step->attempt, now - step->startedMs, step->latest,
                             maxMapCount_, o_.pids.value_or(0)));
  }
  if (progress_.tty()) {
    progress_.draw(lines);
  } else {
    for (const auto& l : lines) progress_.note(l);
  }
}

int Runner::run() {
  int exitCode = kExitAllOk;
  if (!setUp(&exitCode)) return exitCode;
  auto coreNow = [] { return core::fromSteady(Clock::now()); };
  while (!scheduler_.finished()) {
    double now = msNow();
    for (const auto& action : scheduler_.poll(coreNow())) execute(action, now);
    if (scheduler_.finished()) break;

    std::vector<pollfd> fds;
    fds.push_back({signals_.get(), POLLIN, 0});
    std::vector<std::size_t> owners;
    for (auto& [index, step] : live_) {
      for (os::UniqueFd* fd : {&step->stdoutRead, &step->stderrRead}) {
        if (!fd->valid()) continue;
        fds.push_back({fd->get(), POLLIN, 0});
        owners.push_back(index);
      }
    }
    double wait = kSampleEveryMs;
    for (const auto& [index, step] : live_) {
      wait = std::min(wait, sampleDueIn(*step, msNow()));
    }
    if (auto deadline = scheduler_.nextDeadline()) {
      double until = std::chrono::duration<double, std::milli>(*deadline - coreNow()).count();
      wait = std::min(wait, until);
    }
    int timeout = static_cast<int>(std::clamp(wait, 0.0, kSampleEveryMs)) + 1;
    int ready = ::poll(fds.data(), fds.size(), timeout);
    now = msNow();
    if (ready > 0 && (fds[0].revents & POLLIN)) {
      signalfd_siginfo info{};
      while (::read(signals_.get(), &info, sizeof info) == sizeof info) {
        onSignal(static_cast<int>(info.ssi_signo));
      }
    }
    for (std::size_t i = 1; ready > 0 && i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      auto it = live_.find(owners[i - 1]);
      if (it != live_.end()) passThrough(*it->second, false);
    }
    for (const auto& exited : os::reapExitedChildren()) {
      for (auto& [index, step] : live_) {
        if (step->pid != exited.pid) continue;
        step->rawStatus = exited.rawStatus;
        // A step shorter than a few samples would otherwise report a peak taken mid-exec.
        step->peaks.rssBytes = std::max(step->peaks.rssBytes, exited.maxRssBytes);
      }
    }
    for (auto it = live_.begin(); it != live_.end();) {
      if (it->second->rawStatus) {
        finish(*it->second, msNow());
        it = live_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& [index, step] : live_) {
      if (sampleDueIn(*step, now) > 0) continue;
      step->lastSampledMs = now;
      sampleTree(*step, proc_, *cgroups_);
      if (o_.maxMaps > 0 && step->latest.largestMaps >= o_.maxMaps &&
          scheduler_.phase(index) == core::StepPhase::kRunning) {
        scheduler_.stop(index, core::StepStopReason::kBound, coreNow());
      }
    }
    const double every = progress_.tty() ? kRedrawEveryMs : kPlainEveryMs;
    if (!live_.empty() && now - lastRedrawMs_ >= every) {
      if (lastRedrawMs_ > 0 || progress_.tty()) redraw(now);
      lastRedrawMs_ = now;
    }
  }
  progress_.erase();
  watcher_.stop();

  bool allOk = true;
  for (const auto& s : summaries_) allOk = allOk && s.outcome == "ok";
  if (interruptSignal_) {
    exitCode = 128 + interruptSignal_;
  } else {
    exitCode = allOk ? kExitAllOk : kExitStepFailed;
  }
  if (o_.json) {
    std::string doc = jsonText(runJson(summaries_, exitCode, interruptSignal_ != 0, maxMapCount_,
                                       os::cgroupModeName(cgroups_->mode())),
                               2) +
                      "\n";
    writeAll(1, doc);
  } else {
    writeAll(1, "\n" + finalTable(summaries_));
  }
  return exitCode;
}

}  // namespace

int runSteps(const RunOptions& options) {
  Runner runner(options);
  return runner.run();
}

}  // namespace bulkhead::run
