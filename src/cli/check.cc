#include "cli/check.h"

#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <variant>
#include <vector>

#include "config/config.h"
#include "core/signal_names.h"
#include "os/process.h"
#include "runtime/worker_spec.h"

namespace bulkhead::cli {

namespace {

// What `--import` runs in the pool's interpreter: the worker's own resolver on each entry point,
// exiting 11, 12 or 13 for the handler, preload or init that failed (traceback on stderr). `-c`
// puts the current directory first on sys.path; a worker does not run from here.
constexpr const char* kImportProbe = R"(import sys, traceback
if sys.path and sys.path[0] == "":
    del sys.path[0]
from bulkhead.worker import _resolve
for code, what, spec in zip((11, 12, 13), ("handler", "preload", "init"), sys.argv[1:]):
    try:
        spec and _resolve(spec, what)
    except BaseException:
        traceback.print_exc()
        sys.exit(code)
)";

struct ProbeResult {
  std::string error;  // why it did not start or finish; empty if it exited
  int status = 0;     // as from waitpid
  std::string stderrText;
};

// Starts `spec` the way the supervisor starts a worker (os::spawnWorker: own process group, dies
// with us) and waits at most `limit` for it to exit, keeping its stderr; then kills its group.
ProbeResult runProbe(const os::SpawnSpec& spec, std::chrono::nanoseconds limit) {
  ProbeResult r;
  auto started = os::spawnWorker(spec);
  if (auto* e = std::get_if<os::SpawnError>(&started)) {
    r.error = "cannot start " + spec.executable + ": " + e->describe();
    return r;
  }
  auto& child = std::get<os::WorkerProcess>(started);
  const auto deadline = std::chrono::steady_clock::now() + limit;
  pollfd fds[3] = {{child.stderrRead.get(), POLLIN, 0},
                   {child.stdoutRead.get(), POLLIN, 0},
                   {child.pidfd.get(), POLLIN, 0}};  // without a pidfd: wait for the pipes' end
  bool exited = false;
  while (!exited && (fds[0].fd >= 0 || fds[1].fd >= 0 || fds[2].fd >= 0)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      os::signalProcessGroup(child.pid, SIGKILL);
      r.error = "did not finish within startup_timeout";
      break;
    }
    for (auto& f : fds) f.revents = 0;
    if (::poll(fds, 3, static_cast<int>(left.count())) < 0 && errno != EINTR) break;
    exited = fds[2].revents != 0;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents || exited)) continue;
      // Our ends do not block: drain, and once it exited take what is left without waiting for
      // the pipe's end (a grandchild may hold it open).
      char buffer[8192];
      ssize_t n;
      while ((n = ::read(fds[i].fd, buffer, sizeof buffer)) > 0) {
        if (i == 0) r.stderrText.append(buffer, static_cast<std::size_t>(n));
        if (r.stderrText.size() > (64u << 10)) r.stderrText.erase(0, 32u << 10);
      }
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) fds[i].fd = -1;
    }
  }
  while (::waitpid(child.pid, &r.status, 0) < 0 && errno == EINTR) {
  }
  return r;
}

std::string lastLine(const std::string& text) {
  auto end = text.find_last_not_of(" \n\r\t");
  if (end == std::string::npos) return "";
  auto start = text.rfind('\n', end);
  return text.substr(start == std::string::npos ? 0 : start + 1, end - start);
}

// The interpreter a worker execs directly: an executable file, not a name to look up. Returns
// what is wrong with it, or "".
std::string interpreterProblem(const std::string& python) {
  struct stat st;
  if (::stat(python.c_str(), &st) != 0) return python + ": " + std::strerror(errno);
  if (!S_ISREG(st.st_mode) || ::access(python.c_str(), X_OK) != 0) {
    return python + " is not an executable file";
  }
  return "";
}

struct Problem {
  std::string key;  // the pool's key it is about
  std::string why;  // empty: no problem
};

// Imports the pool's entry points with a worker's interpreter and environment (buildWorkerSpec,
// slot 0); a problem names the entry point that failed.
Problem importProblem(const config::PoolConfig& pool, const std::vector<std::string>& environment,
                      const std::string& sdkDirectory) {
  auto spec = runtime::buildWorkerSpec(pool, pool.name + "-check", 0, environment, sdkDirectory);
  spec.argv = {pool.python, "-c", kImportProbe, pool.handler, pool.preload, pool.init};
  auto r = runProbe(spec, pool.startupTimeout);
  if (r.error.empty() && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) return {};
  static const char* kKeys[] = {"handler", "preload", "init"};
  const int code = WIFEXITED(r.status) ? WEXITSTATUS(r.status) : -1;
  const bool named = code >= 11 && code <= 13;
  std::string why = r.error;
  if (why.empty() && WIFSIGNALED(r.status)) {
    why = "killed by " + core::signalName(WTERMSIG(r.status));
  } else if (why.empty() && !named) {
    why = "exit status " + std::to_string(code);
  }
  std::string line = lastLine(r.stderrText);
  if (!line.empty()) why += (why.empty() ? "" : ": ") + line;
  return {named ? kKeys[code - 11] : "handler", "import check failed: " + why};
}

}  // namespace

bool checkPools(const std::string& path, const config::Config& config, bool imports,
                const std::vector<std::string>& environment, const std::string& sdkDirectory) {
  bool ok = true;
  for (const auto& pool : config.pools) {
    Problem problem{"python", interpreterProblem(pool.python)};
    if (problem.why.empty() && imports) {
      problem = importProblem(pool, environment, sdkDirectory);
    }
    if (problem.why.empty()) continue;
    const std::string key = "pool." + pool.name + "." + problem.key;
    std::fprintf(stderr, "%s\n",
                 config::ConfigError{path, pool.line, key, problem.why}.describe().c_str());
    ok = false;
  }
  return ok;
}

}  // namespace bulkhead::cli
