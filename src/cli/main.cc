// bulkhead: command-line entry point (serve, check, call, status).

#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/asio.hpp>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "api/async_jobs.h"
#include "api/http_server.h"
#include "cli/http_client.h"
#include "config/config.h"
#include "os/process.h"
#include "runtime/supervisor.h"
#include "runtime/worker_spec.h"

#ifndef BULKHEAD_SDK_DIR
#define BULKHEAD_SDK_DIR ""
#endif

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

int serve(const std::string& path, const std::string& listenOverride) {
  auto config = loadOrReport(path);
  if (!config) return kExitBadConfig;
  if (!listenOverride.empty()) config->server.listen = listenOverride;

  ::signal(SIGPIPE, SIG_IGN);
  if (!os::becomeChildSubreaper()) {
    std::fprintf(stderr,
                 "bulkhead: warning: cannot become a child subreaper; orphaned "
                 "grandchildren of workers will be reaped by init instead\n");
  }
  boost::asio::io_context io(1);
  runtime::SupervisorOptions options;
  const char* sdk = std::getenv("BULKHEAD_SDK_DIR");
  options.sdkDirectory = sdk && *sdk ? sdk : BULKHEAD_SDK_DIR;
  for (char** e = environ; *e; ++e) options.baseEnvironment.emplace_back(*e);

  runtime::Supervisor supervisor(io, *config, std::move(options));
  std::unique_ptr<api::AsyncJobs> jobs;
  if (!config->server.journal.empty()) {
    try {
      jobs = std::make_unique<api::AsyncJobs>(
          io, supervisor,
          std::make_unique<journal::Journal>(config->server.journal, config->server.journalKeep));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bulkhead: %s\n", e.what());
      return kExitBadConfig;
    }
  }
  api::HttpServer server(io, supervisor,
                         {config->server.listen, config->server.maxRequestBody, jobs.get()});
  std::string address;
  try {
    address = server.start();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bulkhead: %s\n", e.what());
    return kExitBadConfig;
  }
  boost::asio::signal_set stopSignals(io, SIGTERM, SIGINT);
  stopSignals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    std::fprintf(stderr, "bulkhead: %s received: finishing jobs and stopping workers\n",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT");
    supervisor.shutdown([&] {
      server.stopAccepting();
      std::fprintf(stderr, "bulkhead: all workers stopped, exiting\n");
      // The last outcomes must reach their callers before the loop ends.
      server.whenResponsesWritten([&] { io.stop(); });
    });
  });
  supervisor.start();
  if (jobs) {
    if (std::size_t recovered = jobs->recover()) {
      std::fprintf(stderr, "bulkhead: journal %s: %zu unfinished job(s) run again\n",
                   config->server.journal.c_str(), recovered);
    }
  }
  std::fprintf(stderr, "bulkhead: %zu pool(s) from %s; listening on %s\n", config->pools.size(),
               path.c_str(), address.c_str());
  std::fflush(stderr);
  io.run();
  return 0;
}

int check(const std::string& path) {
  auto config = loadOrReport(path);
  if (!config) return kExitBadConfig;
  std::printf("%s: ok, %zu pool(s):", path.c_str(), config->pools.size());
  for (const auto& p : config->pools) std::printf(" %s", p.name.c_str());
  std::printf("\n");
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

void printProblem(const json& p) {
  std::fprintf(stderr, "outcome: %s\n", p.value("outcome", p.value("error", "?")).c_str());
  std::fprintf(stderr, "detail:  %s\n", p.value("detail", "").c_str());
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
    printProblem(problem);
  }
  return kExitJobFailed;
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
  std::printf("%-14s %-8s %-7s %-7s %-8s %-8s %-8s %-8s\n", "POOL", "WORKERS", "QUEUE", "RUNNING",
              "OK", "FAILED", "DEATHS", "STARTS");
  for (const auto& p : j["pools"]) {
    const auto& c = p["counters"];
    std::uint64_t failed = c.value("submitted", 0ull) - c.value("ok", 0ull);
    failed -= p.value("queue_length", 0ull) + p.value("in_flight", 0ull);
    std::printf(
        "%-14s %-8s %-7llu %-7llu %-8llu %-8llu %-8llu %-8llu\n", p.value("name", "").c_str(),
        (std::to_string(p["workers"].size()) + "/" + std::to_string(p.value("workers_target", 0)))
            .c_str(),
        (unsigned long long)p.value("queue_length", 0ull),
        (unsigned long long)p.value("in_flight", 0ull), (unsigned long long)c.value("ok", 0ull),
        (unsigned long long)failed, (unsigned long long)c.value("worker_deaths", 0ull),
        (unsigned long long)c.value("worker_starts", 0ull));
  }
  std::printf("\n%-16s %-8s %-10s %-6s %-8s %-9s %-8s %-7s %-5s %-8s\n", "WORKER", "PID", "STATE",
              "JOBS", "AGE", "RSS", "THREADS", "MAPS", "FDS", "RECYCLE");
  for (const auto& p : j["pools"]) {
    for (const auto& w : p["workers"]) {
      char age[32], rss[32] = "-", threads[16] = "-", maps[16] = "-", fds[16] = "-";
      std::snprintf(age, sizeof age, "%.1fs", w.value("age_s", 0.0));
      if (w.contains("sample")) {
        const auto& s = w["sample"];
        std::snprintf(rss, sizeof rss, "%.1fMiB", s.value("rss_bytes", 0.0) / (1 << 20));
        std::snprintf(threads, sizeof threads, "%d", s.value("threads", 0));
        if (s["maps"].is_number()) std::snprintf(maps, sizeof maps, "%d", s["maps"].get<int>());
        std::snprintf(fds, sizeof fds, "%d", s.value("fds", 0));
      }
      std::printf("%-16s %-8d %-10s %-6llu %-8s %-9s %-8s %-7s %-5s %-8s\n",
                  w.value("id", "").c_str(), w.value("pid", 0), w.value("state", "").c_str(),
                  (unsigned long long)w.value("jobs_served", 0ull), age, rss, threads, maps, fds,
                  w.value("recycle_cause", "").c_str());
    }
  }
  return 0;
}

int env(const std::string& path, const std::string& poolName, int slot) {
  auto config = loadOrReport(path);
  if (!config) return kExitBadConfig;
  for (const auto& pool : config->pools) {
    if (pool.name != poolName) continue;
    std::vector<std::string> base;
    for (char** e = environ; *e; ++e) base.emplace_back(*e);
    const char* sdk = std::getenv("BULKHEAD_SDK_DIR");
    auto vars = runtime::buildWorkerEnvironment(pool, pool.name + "-N", slot, base,
                                                sdk && *sdk ? sdk : BULKHEAD_SDK_DIR);
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

  auto* checkCmd = app.add_subcommand("check", "validate a config file (exit 2 if invalid)");
  checkCmd->add_option("-c,--config", configPath, "config file (TOML)")->required();

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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitBadConfig;
  }
  try {
    if (*serveCmd) return serve(configPath, listen);
    if (*checkCmd) return check(configPath);
    if (*callCmd) return call(url, pool, payload, timeout);
    if (*statusCmd) return status(url);
    if (*eventsCmd) return events(url, since);
    if (*envCmd) return env(configPath, pool, slot);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bulkhead: %s\n", e.what());
    return kExitJobFailed;
  }
  return 0;
}
