// bulkhead: command-line entry point (serve, check, call, status).

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <boost/asio.hpp>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "api/http_server.h"
#include "cli/check.h"
#include "cli/http_client.h"
#include "cli/run_command.h"
#include "cli/sdk_location.h"
#include "cli/service_notifications.h"
#include "cli/top_command.h"
#include "config/config.h"
#include "jobs/jobs_service.h"
#include "jobs/supervisor_runner.h"
#include "journal/journal.h"
#include "os/fd_limits.h"
#include "os/heap_reuse.h"
#include "os/process.h"
#include "runtime/operator_log.h"
#include "runtime/supervisor.h"
#include "runtime/worker_spec.h"

extern char** environ;

namespace {

using namespace bulkhead;
using nlohmann::json;

constexpr int kExitJobFailed = 1;
constexpr int kExitBadConfig = 2;
constexpr int kExitCannotConnect = 3;

std::optional<config::Config> loadOrReport(const std::string& path) {
  auto result = config::loadConfigFile(path);
  for (const auto& e : result.errors) std::fprintf(stderr, "%s\n", e.describe().c_str());
  return result.config;
}

int serve(const std::string& path, const std::string& listenOverride, const std::string& logFormat,
          const std::string& logLevel, bool stopWhenStdinCloses) {
  using runtime::logAt;
  using runtime::LogLevel;
  auto format = runtime::parseLogFormat(logFormat);
  auto level = runtime::parseLogLevel(logLevel);
  if (!format || !level) {
    std::fprintf(
        stderr, "bulkhead: %s\n",
        !format ? ("--log-format must be text or json, got \"" + logFormat + "\"").c_str()
                : ("--log-level must be debug, info, warning or error, got \"" + logLevel + "\"")
                      .c_str());
    return kExitBadConfig;
  }
  runtime::configureLog(*format, *level);
  // Before anything holds fds: clients and workers share this table (os/fd_limits.h).
  if (auto raised = os::raiseFdLimitToHard(); !raised.error.empty()) {
    logAt(LogLevel::kWarning, "cannot raise the fd limit from " +
                                  std::to_string(raised.before.soft) + " to " +
                                  std::to_string(raised.before.hard) + ": " + raised.error);
  }
  auto config = loadOrReport(path);
  if (!config) return kExitBadConfig;
  if (!listenOverride.empty()) config->server.listen = listenOverride;

  ::signal(SIGPIPE, SIG_IGN);
  if (!os::becomeChildSubreaper()) {
    logAt(LogLevel::kWarning,
          "cannot become a child subreaper; orphaned grandchildren of workers will be reaped by "
          "init instead");
  }
  os::keepFreedBlocksForReuse();
  boost::asio::io_context io(1);
  runtime::SupervisorOptions options;
  options.sdkDirectory = cli::locateSdkDirectory();
  for (char** e = environ; *e; ++e) options.baseEnvironment.emplace_back(*e);

  runtime::Supervisor supervisor(io, *config, std::move(options));
  // Every job goes through the jobs service; the journal (async jobs, failure records) is optional.
  jobs::SupervisorRunner runner(supervisor);
  jobs::AsioTimers timers(io);
  std::unique_ptr<jobs::JobsService> jobs;
  try {
    std::unique_ptr<journal::Journal> journal;
    if (!config->server.journal.empty()) {
      journal =
          std::make_unique<journal::Journal>(config->server.journal, config->server.journalKeep);
    }
    jobs = std::make_unique<jobs::JobsService>(runner, timers, std::move(journal));
  } catch (const std::exception& e) {
    logAt(LogLevel::kError, e.what());
    return kExitBadConfig;
  }
  api::HttpServerOptions serverOptions{config->server.listen, config->server.maxRequestBody,
                                       jobs.get()};
  serverOptions.maxConnections = config->server.maxConnections;
  serverOptions.requestTimeout = config->server.requestTimeout;
  serverOptions.idleTimeout = config->server.idleTimeout;
  std::uint64_t workerSlots = 0;  // a zygote holds fds like a worker
  for (const auto& pool : config->pools)
    workerSlots += static_cast<std::uint64_t>(pool.workers) + (pool.zygote ? 1 : 0);
  serverOptions.fdReserve = os::fdReserve(workerSlots);
  api::HttpServer server(io, supervisor, serverOptions);
  std::string address;
  try {
    address = server.start();
  } catch (const std::exception& e) {
    logAt(LogLevel::kError, e.what());
    return kExitBadConfig;
  }
  // Large jobs reuse the daemon's freed blocks (os/heap_reuse.h); a quiet daemon returns them.
  boost::asio::steady_timer heapTimer(io);
  os::HeapRelease heapRelease(/*threshold=*/8u << 20, /*quiet=*/1u << 20);
  std::function<void()> tendHeap = [&] {
    heapTimer.expires_after(std::chrono::seconds(1));
    heapTimer.async_wait([&](const boost::system::error_code& ec) {
      if (ec) return;
      if (heapRelease.due(os::heapUse())) os::releaseFreeHeap();
      tendHeap();
    });
  };
  tendHeap();
  std::map<std::string, std::chrono::nanoseconds> startupTimeouts;
  for (const auto& pool : config->pools) startupTimeouts[pool.name] = pool.startupTimeout;
  cli::ServiceNotifications notifications(io, supervisor, std::move(startupTimeouts),
                                          os::ServiceNotifier::fromEnvironment());
  bool stopping = false;
  auto stop = [&](const std::string& why) {
    if (std::exchange(stopping, true)) return;
    notifications.stopping();
    logAt(LogLevel::kInfo, why + ": finishing jobs and stopping workers", {{"event", "stopping"}});
    supervisor.shutdown([&] {
      server.stopAccepting();
      logAt(LogLevel::kInfo, "all workers stopped, exiting", {{"event", "stopped"}});
      // The last outcomes must reach their callers before the loop ends.
      server.whenResponsesWritten([&] {
        heapTimer.cancel();
        notifications.cancel();
        io.stop();
      });
    });
  };
  boost::asio::signal_set stopSignals(io, SIGTERM, SIGINT);
  stopSignals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (!ec) stop(std::string(sig == SIGTERM ? "SIGTERM" : "SIGINT") + " received");
  });
  // A private daemon (bulkhead.Executor) is bound to its owner's life by a pipe on stdin: when
  // the owner goes, even by SIGKILL, the kernel closes the write end and the daemon stops.
  boost::asio::posix::stream_descriptor lifeline(io);
  std::array<char, 256> lifelineBytes{};
  std::function<void()> watchLifeline = [&] {
    lifeline.async_read_some(boost::asio::buffer(lifelineBytes),
                             [&](const boost::system::error_code& ec, std::size_t) {
                               if (ec == boost::asio::error::operation_aborted) return;
                               if (ec) return stop("stdin closed");
                               watchLifeline();
                             });
  };
  if (stopWhenStdinCloses) {
    int fd = ::fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) {
      logAt(LogLevel::kError, std::string("--stop-when-stdin-closes: ") + std::strerror(errno));
      return kExitBadConfig;
    }
    lifeline.assign(fd);
    watchLifeline();
  }
  supervisor.start();
  if (std::size_t recovered = jobs->recover()) {
    logAt(LogLevel::kInfo, "journal " + config->server.journal + ": " + std::to_string(recovered) +
                               " unfinished job(s) run again");
  }
  logAt(
      LogLevel::kInfo,
      std::to_string(config->pools.size()) + " pool(s) from " + path + "; listening on " + address,
      {{"event", "listening"}, {"address", address}});
  notifications.start();
  io.run();
  return 0;
}

std::string sdkDirectory() { return cli::locateSdkDirectory(); }

std::vector<std::string> ourEnvironment() {
  std::vector<std::string> base;
  for (char** e = environ; *e; ++e) base.emplace_back(*e);
  return base;
}

int check(const std::string& path, bool imports) {
  auto config = loadOrReport(path);
  if (!config) return kExitBadConfig;
  if (!cli::checkPools(path, *config, imports, ourEnvironment(), sdkDirectory())) {
    return kExitBadConfig;
  }
  std::printf("%s: ok, %zu pool(s):", path.c_str(), config->pools.size());
  for (const auto& p : config->pools) std::printf(" %s", p.name.c_str());
  std::printf("%s\n", imports ? " (entry points import)" : "");
  return 0;
}

std::string defaultUrl() {
  const char* url = std::getenv("BULKHEAD_URL");
  return url && *url ? url : "http://127.0.0.1:8787";
}

std::string readPayload(const std::string& arg) {
  if (arg == "-") return std::string(std::istreambuf_iterator<char>(std::cin), {});
  if (!arg.empty() && arg[0] == '@') {
    std::ifstream in(arg.substr(1), std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + arg.substr(1));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  return arg;
}

void printProblem(const json& p, int status) {
  if (p.contains("outcome") || !p.contains("error")) {
    std::fprintf(stderr, "outcome: %s\n", p.value("outcome", std::string("?")).c_str());
  } else {  // refused before it was a job (unknown pool, payload too large, ...)
    std::fprintf(stderr, "error:   %s (HTTP %d)\n", p.value("error", "?").c_str(), status);
  }
  std::fprintf(stderr, "detail:  %s\n", p.value("detail", "").c_str());
  if (p.contains("stage") && p["stage"].is_string()) {
    std::fprintf(stderr, "stage:   %s\n", p["stage"].get<std::string>().c_str());
  }
  if (p.value("quarantined", false)) {
    std::fprintf(stderr, "payload quarantined: resubmitting it is refused as poison\n");
  }
  if (!p.contains("attempts")) return;
  for (const auto& a : p["attempts"]) {
    std::fprintf(stderr, "attempt %d on %s (pid %d): %s", a.value("attempt", 0),
                 a.value("worker", "?").c_str(), a.value("pid", 0),
                 a.value("outcome", "?").c_str());
    if (a.contains("signal") && a["signal"].is_string()) {
      std::fprintf(stderr, ", %s", a["signal"].get<std::string>().c_str());
    }
    if (a.contains("exit_code") && a["exit_code"].is_number()) {
      std::fprintf(stderr, ", exit code %d", a["exit_code"].get<int>());
    }
    std::fprintf(stderr, "\n");
    if (a.contains("cause"))
      std::fprintf(stderr, "  cause: %s\n", a["cause"].get<std::string>().c_str());
    if (a.contains("error")) {
      std::fprintf(stderr, "  %s", a["error"].value("traceback", "").c_str());
    }
    auto section = [](const char* title, const std::string& text) {
      if (text.empty()) return;
      std::string shown = text.size() > 2000 ? "..." + text.substr(text.size() - 2000) : text;
      std::fprintf(stderr, "  --- %s ---\n%s\n", title, shown.c_str());
    };
    section("stderr tail", a.value("stderr_tail", ""));
    section("stacks", a.value("stacks", ""));
  }
}

int call(const std::string& url, const std::string& pool, const std::string& payloadArg,
         const std::string& timeout) {
  std::map<std::string, std::string> headers{{"Content-Type", "application/octet-stream"}};
  if (!timeout.empty()) headers["X-Bulkhead-Timeout"] = timeout;
  cli::HttpResult res;
  try {
    res = cli::httpRequest(url, "POST", "/v1/pools/" + pool + "/jobs", readPayload(payloadArg),
                           headers, 3600);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bulkhead: %s\n", e.what());
    return kExitCannotConnect;
  }
  if (res.status == 200) {
    std::fwrite(res.body.data(), 1, res.body.size(), stdout);
    if (!res.body.empty() && res.body.back() != '\n' && isatty(STDOUT_FILENO)) std::printf("\n");
    return 0;
  }
  json problem = json::parse(res.body, nullptr, false);
  if (problem.is_discarded()) {
    std::fprintf(stderr, "HTTP %d: %s\n", res.status, res.body.c_str());
  } else {
    printProblem(problem, res.status);
  }
  return kExitJobFailed;
}

// A string field of the daemon's JSON, or "" when it is absent or null.
std::string text(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool isReady(const json& worker) {
  std::string state = text(worker, "state");
  return state == "idle" || state == "busy";
}

int status(const std::string& url) {
  cli::HttpResult res;
  try {
    res = cli::httpRequest(url, "GET", "/v1/pools", "", {}, 10);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bulkhead: %s\n", e.what());
    return kExitCannotConnect;
  }
  json j = json::parse(res.body, nullptr, false);
  if (res.status != 200 || j.is_discarded()) {
    std::fprintf(stderr, "HTTP %d: %s\n", res.status, res.body.c_str());
    return kExitJobFailed;
  }
  // READY counts workers that can take a job now (idle or busy), against the pool's target: a
  // worker that is still spawning or starting is there, but not ready.
  std::printf("%-14s %-8s %-7s %-7s %-8s %-8s %-8s %-8s\n", "POOL", "READY", "QUEUE", "RUNNING",
              "OK", "FAILED", "DEATHS", "STARTS");
  for (const auto& p : j["pools"]) {
    const auto& c = p["counters"];
    std::uint64_t failed = c.value("submitted", 0ull) - c.value("ok", 0ull);
    failed -= p.value("queue_length", 0ull) + p.value("in_flight", 0ull);
    long long ready = 0;
    if (p.contains("ready_workers") && p["ready_workers"].is_number()) {
      ready = p["ready_workers"].get<long long>();
    } else {  // a daemon that does not count them: the same rule over its workers
      for (const auto& w : p["workers"]) ready += isReady(w);
    }
    std::printf(
        "%-14s %-8s %-7llu %-7llu %-8llu %-8llu %-8llu %-8llu\n", p.value("name", "").c_str(),
        (std::to_string(ready) + "/" + std::to_string(p.value("workers_target", 0))).c_str(),
        (unsigned long long)p.value("queue_length", 0ull),
        (unsigned long long)p.value("in_flight", 0ull), (unsigned long long)c.value("ok", 0ull),
        (unsigned long long)failed, (unsigned long long)c.value("worker_deaths", 0ull),
        (unsigned long long)c.value("worker_starts", 0ull));
  }
  for (const auto& p : j["pools"]) {
    std::string failure = text(p, "last_start_failure");
    if (failure.empty()) continue;
    for (std::size_t at = 0; (at = failure.find('\n', at)) != std::string::npos; at += 3) {
      failure.replace(at, 1, "\n  ");
    }
    std::printf("\npool %s: last start failure:\n  %s\n", text(p, "name").c_str(), failure.c_str());
  }
  std::printf("\n%-16s %-8s %-10s %-6s %-6s %-8s %-9s %-8s %-7s %-5s %-8s\n", "WORKER", "PID",
              "STATE", "READY", "JOBS", "AGE", "RSS", "THREADS", "MAPS", "FDS", "RECYCLE");
  for (const auto& p : j["pools"]) {
    for (const auto& w : p["workers"]) {
      char age[32], pid[16] = "-", rss[32] = "-", threads[16] = "-", maps[16] = "-", fds[16] = "-";
      std::snprintf(age, sizeof age, "%.1fs", w.value("age_s", 0.0));
      // A worker still spawning (zygote mode: waiting for its fork) has no pid yet: null.
      if (w.contains("pid") && w["pid"].is_number()) {
        std::snprintf(pid, sizeof pid, "%d", w["pid"].get<int>());
      }
      if (w.contains("sample")) {
        const auto& s = w["sample"];
        std::snprintf(rss, sizeof rss, "%.1fMiB", s.value("rss_bytes", 0.0) / (1 << 20));
        std::snprintf(threads, sizeof threads, "%d", s.value("threads", 0));
        if (s["maps"].is_number()) std::snprintf(maps, sizeof maps, "%d", s["maps"].get<int>());
        std::snprintf(fds, sizeof fds, "%d", s.value("fds", 0));
      }
      std::printf("%-16s %-8s %-10s %-6s %-6llu %-8s %-9s %-8s %-7s %-5s %-8s\n",
                  text(w, "id").c_str(), pid, text(w, "state").c_str(), isReady(w) ? "yes" : "no",
                  (unsigned long long)w.value("jobs_served", 0ull), age, rss, threads, maps, fds,
                  text(w, "recycle_cause").c_str());
    }
  }
  return 0;
}

int env(const std::string& path, const std::string& poolName, int slot) {
  auto config = loadOrReport(path);
  if (!config) return kExitBadConfig;
  for (const auto& pool : config->pools) {
    if (pool.name != poolName) continue;
    auto vars = runtime::buildWorkerEnvironment(pool, pool.name + "-N", slot, ourEnvironment(),
                                                sdkDirectory());
    if (pool.zygote) {
      std::printf(
          "# worker of pool %s in slot %d, forked from the pool's zygote (%s -m bulkhead.zygote, "
          "started with the environment of slot 0: libraries read their variables when the "
          "zygote imports them); os.environ is set to this in the worker before init\n",
          pool.name.c_str(), slot, pool.python.c_str());
    } else {
      std::printf("# worker of pool %s in slot %d: %s -m bulkhead.worker\n", pool.name.c_str(),
                  slot, pool.python.c_str());
    }
    for (const auto& [key, entry] : vars) {
      std::printf("%s=%s\t# %s\n", key.c_str(), entry.value.c_str(), entry.source.c_str());
    }
    return 0;
  }
  std::fprintf(stderr, "bulkhead: %s has no pool named '%s'\n", path.c_str(), poolName.c_str());
  return kExitBadConfig;
}

int events(const std::string& url, std::uint64_t since) {
  try {
    cli::streamEvents(url, "/v1/events?since=" + std::to_string(since),
                      [](const std::string& data) {
                        json e = json::parse(data, nullptr, false);
                        if (e.is_discarded()) return;
                        std::time_t seconds = static_cast<std::time_t>(e.value("time", 0.0));
                        char when[32];
                        std::strftime(when, sizeof when, "%H:%M:%S", std::localtime(&seconds));
                        std::printf("%s  %-12s %-18s %-14s %s\n", when, e.value("pool", "").c_str(),
                                    e.value("kind", "").c_str(), e.value("worker", "").c_str(),
                                    e.value("detail", "").c_str());
                        std::fflush(stdout);
                      });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bulkhead: %s\n", e.what());
    return kExitCannotConnect;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bulkhead: warm, isolated, supervised workers for crash-prone ML code"};
  app.require_subcommand(1);
  std::string configPath, listen, url = defaultUrl(), pool, payload, timeout;

  auto* serveCmd = app.add_subcommand("serve", "run the supervisor daemon");
  serveCmd->add_option("-c,--config", configPath, "config file (TOML)")->required();
  serveCmd->add_option("--listen", listen, "override [server] listen (HOST:PORT or unix:PATH)");
  std::string logFormat = "text", logLevel = "info";
  bool stopWhenStdinCloses = false;
  serveCmd->add_option("--log-format", logFormat, "text (default) or json: one object per line");
  serveCmd->add_option("--log-level", logLevel, "debug, info (default), warning or error");
  serveCmd->add_flag("--stop-when-stdin-closes", stopWhenStdinCloses,
                     "drain and exit once stdin reaches end of file (a private daemon bound to "
                     "the process holding the other end of the pipe)");

  bool imports = false;
  auto* checkCmd = app.add_subcommand("check", "validate a config file (exit 2 if invalid)");
  checkCmd->add_option("-c,--config", configPath, "config file (TOML)")->required();
  checkCmd->add_flag("--import", imports,
                     "also import each pool's handler, preload and init with its python and "
                     "environment, in a throwaway process");

  auto* callCmd = app.add_subcommand("call", "run one job and print its result or its outcome");
  callCmd->add_option("pool", pool, "pool name")->required();
  callCmd->add_option("payload", payload, "payload bytes, @file, or - for stdin");
  callCmd->add_option("--url", url,
                      "supervisor URL (default $BULKHEAD_URL or http://127.0.0.1:8787)");
  callCmd->add_option("--timeout", timeout, "job timeout, e.g. 5s");

  auto* statusCmd = app.add_subcommand("status", "show pools and workers");
  statusCmd->add_option("--url", url, "supervisor URL");

  int slot = 0;
  auto* envCmd = app.add_subcommand("env", "print the exact environment a pool's worker gets");
  envCmd->add_option("pool", pool, "pool name")->required();
  envCmd->add_option("-c,--config", configPath, "config file (TOML)")->required();
  envCmd->add_option("--slot", slot, "worker slot (GPU pinning depends on it)");

  std::uint64_t since = 0;
  auto* eventsCmd = app.add_subcommand("events", "follow worker and pool events as they happen");
  eventsCmd->add_option("--url", url, "supervisor URL");
  eventsCmd->add_option("--since", since, "replay kept events after this id (0: all kept)");

  auto runCmd = cli::addRunCommand(app);
  argc = cli::cutRunCommand(argc, argv, *runCmd);
  auto topCmd = cli::addTopCommand(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitBadConfig;
  }
  try {
    if (*serveCmd) return serve(configPath, listen, logFormat, logLevel, stopWhenStdinCloses);
    if (*checkCmd) return check(configPath, imports);
    if (*callCmd) return call(url, pool, payload, timeout);
    if (*statusCmd) return status(url);
    if (*eventsCmd) return events(url, since);
    if (*envCmd) return env(configPath, pool, slot);
    if (cli::runChosen(*runCmd)) return cli::executeRun(*runCmd);
    if (cli::topChosen(*topCmd)) return cli::executeTop(*topCmd);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bulkhead: %s\n", e.what());
    return kExitJobFailed;
  }
  return 0;
}
