#pragma once
// The subcommands that talk to a running daemon or read a config without starting one:
// `bulkhead call`, `status`, `events`, `env`, `check`. Each returns the process exit code
// (cli/exit_codes.h). `serve` is main.cc's; `run` is run_command.h's.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"

namespace bulkhead::cli {

// Loads a config, printing every error ("file:line: key: message") on stderr.
std::optional<config::Config> loadOrReport(const std::string& path);
// Where workers import the SDK from: $BULKHEAD_SDK_DIR, else the checkout's python/.
std::string sdkDirectory();
// This process's environment as KEY=VALUE strings (what a worker's environment is built from).
std::vector<std::string> ourEnvironment();
// $BULKHEAD_URL, else http://127.0.0.1:8787.
std::string defaultUrl();

int checkConfig(const std::string& path, bool imports);
int callJob(const std::string& url, const std::string& pool, const std::string& payloadArg,
            const std::string& timeout);
// GET `target` from the daemon as a JSON object. When it cannot be had, prints why on stderr,
// sets `exitCode` (cannot connect, or the daemon's error) and returns nullopt.
std::optional<nlohmann::json> fetchJson(const std::string& url, const std::string& target,
                                        int& exitCode);
int showStatus(const std::string& url);
// `bulkhead status --cluster`: GET /v1/cluster as a table (cli/cluster_status.cc).
int showCluster(const std::string& url);
int printWorkerEnvironment(const std::string& path, const std::string& pool, int slot);
int followEvents(const std::string& url, std::uint64_t since);

}  // namespace bulkhead::cli
