// The client subcommands (call, status, events) and the config-reading ones (env, check): see
// client_commands.h.

#include "cli/client_commands.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "cli/check.h"
#include "cli/exit_codes.h"
#include "cli/http_client.h"
#include "cli/sdk_location.h"
#include "cli/top_view.h"
#include "runtime/worker_spec.h"

extern char** environ;

namespace bulkhead::cli {

using nlohmann::json;

std::optional<config::Config> loadOrReport(const std::string& path) {
  auto result = config::loadConfigFile(path);
  for (const auto& e : result.errors) std::fprintf(stderr, "%s\n", e.describe().c_str());
  return result.config;
}

namespace {

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

// A string field of the daemon's JSON, or "" when it is absent or null.
std::string text(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool isReady(const json& worker) {
  std::string state = text(worker, "state");
  return state == "idle" || state == "busy";
}

}  // namespace

std::string sdkDirectory() { return locateSdkDirectory(); }

std::vector<std::string> ourEnvironment() {
  std::vector<std::string> base;
  for (char** e = environ; *e; ++e) base.emplace_back(*e);
  return base;
}

int checkConfig(const std::string& path, bool imports) {
  auto config = loadOrReport(path);
  if (!config) return kExitBadConfig;
  if (!checkPools(path, *config, imports, ourEnvironment(), sdkDirectory())) {
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

int callJob(const std::string& url, const std::string& pool, const std::string& payloadArg,
            const std::string& timeout) {
  std::map<std::string, std::string> headers{{"Content-Type", "application/octet-stream"}};
  if (!timeout.empty()) headers["X-Bulkhead-Timeout"] = timeout;
  HttpResult res;
  try {
    res = httpRequest(url, "POST", "/v1/pools/" + pool + "/jobs", readPayload(payloadArg), headers,
                      3600);
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

std::optional<json> fetchJson(const std::string& url, const std::string& target, int& exitCode) {
  HttpResult res;
  try {
    res = httpRequest(url, "GET", target, "", {}, 10);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bulkhead: %s\n", e.what());
    exitCode = kExitCannotConnect;
    return std::nullopt;
  }
  json j = json::parse(res.body, nullptr, false);
  if (res.status != 200 || !j.is_object()) {
    std::fprintf(stderr, "HTTP %d: %s\n", res.status, res.body.c_str());
    exitCode = kExitJobFailed;
    return std::nullopt;
  }
  return j;
}

int showStatus(const std::string& url) {
  int exitCode = 0;
  auto fetched = fetchJson(url, "/v1/pools", exitCode);
  if (!fetched) return exitCode;
  const json& j = *fetched;
  // READY counts workers that can take a job now (idle or busy), against the pool's target: a
  // worker that is still spawning or starting is there, but not ready.
  std::printf("%-14s %-8s %-7s %-7s %-8s %-8s %-8s %-8s\n", "POOL", "READY", "QUEUE", "RUNNING",
              "OK", "FAILED", "DEATHS", "STARTS");
  for (const auto& p : j["pools"]) {
    const auto& c = p["counters"];
    std::uint64_t failed = c.value("submitted", 0ull) - c.value("ok", 0ull);
    failed -= p.value("queue_length", 0ull) + p.value("in_flight", 0ull);
    std::printf(
        "%-14s %-8s %-7llu %-7llu %-8llu %-8llu %-8llu %-8llu\n", p.value("name", "").c_str(),
        readyColumn(p).c_str(), (unsigned long long)p.value("queue_length", 0ull),
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
  // A GPU column only where some worker has a GPU reading (pools with gpus, NVML there).
  bool gpuShown = false;
  for (const auto& p : j["pools"]) {
    for (const auto& w : p["workers"]) {
      gpuShown = gpuShown || (w.contains("sample") && w["sample"].contains("gpu_memory_bytes"));
    }
  }
  std::printf("\n%-16s %-8s %-10s %-6s %-6s %-8s %-9s %-8s %-7s %-5s %s%-8s\n", "WORKER", "PID",
              "STATE", "READY", "JOBS", "AGE", "RSS", "THREADS", "MAPS", "FDS",
              gpuShown ? "GPU        " : "", "RECYCLE");
  for (const auto& p : j["pools"]) {
    for (const auto& w : p["workers"]) {
      char age[32], pid[16] = "-", rss[32] = "-", threads[16] = "-", maps[16] = "-", fds[16] = "-";
      char gpu[32] = "-";
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
        if (s.contains("gpu_memory_bytes") && s["gpu_memory_bytes"].is_number()) {
          std::snprintf(gpu, sizeof gpu, "%.1fMiB",
                        s["gpu_memory_bytes"].get<double>() / (1 << 20));
        }
      }
      char gpuColumn[40] = "";
      if (gpuShown) std::snprintf(gpuColumn, sizeof gpuColumn, "%-10s ", gpu);
      std::printf("%-16s %-8s %-10s %-6s %-6llu %-8s %-9s %-8s %-7s %-5s %s%-8s\n",
                  text(w, "id").c_str(), pid, text(w, "state").c_str(), isReady(w) ? "yes" : "no",
                  (unsigned long long)w.value("jobs_served", 0ull), age, rss, threads, maps, fds,
                  gpuColumn, text(w, "recycle_cause").c_str());
    }
  }
  return 0;
}

int printWorkerEnvironment(const std::string& path, const std::string& poolName, int slot) {
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

int followEvents(const std::string& url, std::uint64_t since) {
  try {
    streamEvents(url, "/v1/events?since=" + std::to_string(since), [](const std::string& data) {
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

}  // namespace bulkhead::cli
