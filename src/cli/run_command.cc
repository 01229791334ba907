// `bulkhead run` options: parsing and validation into run::RunOptions (see run_command.h).

#include "cli/run_command.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <variant>

#include "config/units.h"
#include "core/step_list.h"
#include "run/step_runner.h"
#include "runtime/worker_spec.h"

namespace bulkhead::cli {

struct RunCommand {
  CLI::App* app = nullptr;
  std::string steps, memory, timeout, grace = "10s", state;
  std::uint64_t pids = 0;
  int maxMaps = 0, retries = 0, parallel = 1, threads = 0;
  bool fresh = false, json = false, cleanEnv = false;
  std::vector<std::string> env, profiles, command;
  std::vector<std::string> tail;  // after "--"
  bool cut = false;
};

std::shared_ptr<RunCommand> addRunCommand(CLI::App& app) {
  auto c = std::make_shared<RunCommand>();
  CLI::App* run = app.add_subcommand(
      "run", "run a command once per step, each in its own process group and cgroup (docs/run.md)");
  c->app = run;
  run->add_option("--steps", c->steps, "steps: ranges and names, e.g. 1-3, a,b,c or 1-3,7")
      ->required();
  run->add_option("--memory", c->memory, "memory limit per step (cgroup), e.g. 8GiB");
  run->add_option("--pids", c->pids, "pids limit per step: processes + threads (cgroup)");
  run->add_option("--max-maps", c->maxMaps,
                  "stop a step when one of its processes holds this many memory maps");
  run->add_option("--timeout", c->timeout,
                  "time limit per attempt, e.g. 2h (SIGTERM, then "
                  "SIGKILL after --grace)");
  run->add_option("--grace", c->grace, "time between SIGTERM and SIGKILL (default 10s)");
  run->add_option("--retries", c->retries,
                  "retry crashed, oom_killed and resource_exhausted steps this many times");
  run->add_option("--parallel", c->parallel, "steps run at once (default 1)");
  run->add_option("--state", c->state,
                  "state directory: steps that ended ok are skipped when run again");
  run->add_flag("--fresh", c->fresh, "forget the state directory's steps and start over");
  run->add_flag("--json", c->json, "print the outcome as one JSON document on stdout");
  run->add_option("--env", c->env, "KEY=VALUE for every step (repeatable)");
  run->add_option("--profile", c->profiles, "torch, tensorflow, onnxruntime or cpu-only");
  run->add_option("--threads", c->threads, "thread count for the numeric libraries");
  run->add_flag("--clean-env", c->cleanEnv,
                "pass only a whitelist of our environment (PATH, HOME, locale...), as pool "
                "workers get, instead of all of it");
  run->add_option("command", c->command, "the command after --; {step} is the step name");
  return c;
}

int cutRunCommand(int argc, char** argv, RunCommand& command) {
  // CLI11 would go on parsing the command's own options (python train.py --fold {step}): what
  // follows the first "--" of `bulkhead run` is the command, untouched.
  if (argc < 2 || std::string(argv[1]) != "run") return argc;
  for (int i = 2; i < argc; ++i) {
    if (std::string(argv[i]) != "--") continue;
    command.tail.assign(argv + i + 1, argv + argc);
    command.cut = true;
    return i;
  }
  return argc;
}

bool runChosen(const RunCommand& c) { return c.app && c.app->parsed(); }

namespace {

int usage(const std::string& message) {
  std::fprintf(stderr, "bulkhead run: %s\n", message.c_str());
  return run::kExitUsage;
}

std::string resolveExecutable(const std::string& name) {
  auto executable = [](const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
           ::access(path.c_str(), X_OK) == 0;
  };
  if (name.find('/') != std::string::npos) return executable(name) ? name : "";
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t begin = 0;
  while (begin <= dirs.size()) {
    std::size_t end = dirs.find(':', begin);
    if (end == std::string::npos) end = dirs.size();
    std::string dir = dirs.substr(begin, end - begin);
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + name;
    if (executable(candidate)) return candidate;
    begin = end + 1;
  }
  return "";
}

}  // namespace

int executeRun(const RunCommand& c) {
  run::RunOptions o;
  auto steps = core::parseStepList(c.steps);
  if (auto* error = std::get_if<core::StepListError>(&steps)) return usage(error->message);
  o.steps = std::get<std::vector<std::string>>(steps);
  o.command = c.cut ? c.tail : c.command;
  if (o.command.empty()) return usage("no command given (put it after --)");
  o.executable = resolveExecutable(o.command[0]);
  if (o.executable.empty()) return usage("command not found or not executable: " + o.command[0]);
  if (!c.memory.empty()) {
    auto bytes = config::parseSize(c.memory);
    if (!bytes || *bytes < (4u << 20)) return usage("bad --memory '" + c.memory + "' (e.g. 8GiB)");
    o.memoryBytes = *bytes;
  }
  if (c.pids > 0) o.pids = c.pids;
  if (c.maxMaps < 0) return usage("--max-maps must be >= 0");
  o.maxMaps = c.maxMaps;
  if (!c.timeout.empty()) {
    auto d = config::parseDuration(c.timeout);
    if (!d || d->count() <= 0) return usage("bad --timeout '" + c.timeout + "' (e.g. 2h, 30s)");
    o.timeout = *d;
  }
  auto grace = config::parseDuration(c.grace);
  if (!grace) return usage("bad --grace '" + c.grace + "'");
  o.grace = *grace;
  if (c.retries < 0 || c.retries > 100) return usage("--retries must be 0-100");
  o.retries = c.retries;
  if (c.parallel < 1 || c.parallel > 256) return usage("--parallel must be 1-256");
  o.parallel = c.parallel;
  o.stateDir = c.state;
  o.fresh = c.fresh;
  o.json = c.json;
  for (const auto& p : c.profiles) {
    bool known = false;
    for (const auto& k : runtime::knownProfiles()) known = known || k == p;
    if (!known) return usage("unknown --profile '" + p + "'");
  }
  o.environment.profiles = c.profiles;
  if (c.threads < 0) return usage("--threads must be >= 0");
  o.environment.threads = c.threads;
  for (const auto& kv : c.env) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) return usage("bad --env '" + kv + "' (KEY=VALUE)");
    o.environment.env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  if (!c.cleanEnv) o.environment.inheritEnv = {"*"};
  return run::runSteps(o);
}

}  // namespace bulkhead::cli
