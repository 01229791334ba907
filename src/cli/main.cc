// bulkhead: command-line entry point. It owns `serve` (the daemon's assembly: config, supervisor,
// journal, HTTP server, signals); the command line's definition is cli_app.h's, the client
// subcommands client_commands.h's, `run` run_command.h's.

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <boost/asio.hpp>
#include <cstdio>
#include <cstring>
#include <functional>

#include "api/http_server.h"
#include "cli/cli_app.h"
#include "cli/client_commands.h"
#include "cli/cluster_node.h"
#include "cli/exit_codes.h"
#include "cli/man_page.h"
#include "cli/run_command.h"
#include "cli/sdk_location.h"
#include "cli/service_notifications.h"
#include "cli/top_command.h"
#include "cli/version.h"
#include "config/config.h"
#include "jobs/jobs_service.h"
#include "jobs/supervisor_runner.h"
#include "journal/journal.h"
#include "os/fd_limits.h"
#include "os/heap_reuse.h"
#include "os/process.h"
#include "runtime/operator_log.h"
#include "runtime/supervisor.h"

extern char** environ;

namespace {

using namespace bulkhead;

using cli::kExitBadConfig;
using cli::loadOrReport;

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
  if (config->cluster) options.nodeName = cluster::nodeNameOf(*config->cluster);

  runtime::Supervisor supervisor(io, *config, std::move(options));
  // Every job goes through the jobs service; the journal (async jobs, failure records) is optional.
  jobs::SupervisorRunner localRunner(supervisor);
  jobs::AsioTimers timers(io);
  // [cluster]: this node announces itself in Redis and shares its pools' queues through Redis
  // Streams (cli/cluster_node.h); the jobs service then runs jobs through the cluster's runner.
  std::unique_ptr<cli::ClusterNode> clusterNode;
  if (config->cluster) {
    try {
      clusterNode =
          std::make_unique<cli::ClusterNode>(io, *config, supervisor, localRunner, timers);
    } catch (const std::exception& e) {
      logAt(LogLevel::kError, e.what());
      return kExitBadConfig;
    }
  }
  jobs::PoolRunner& runner =
      clusterNode ? static_cast<jobs::PoolRunner&>(clusterNode->runner()) : localRunner;
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
  serverOptions.memfdThreshold = config->server.memfdThreshold;
  if (clusterNode)
    serverOptions.cluster = {&clusterNode->membership(), &clusterNode->runner(),
                             &clusterNode->records()};
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
      if (clusterNode) clusterNode->runner().abandonWaiting();
      server.stopAccepting();
      logAt(LogLevel::kInfo, "all workers stopped, exiting", {{"event", "stopped"}});
      // The last outcomes must reach their callers before the loop ends.
      server.whenResponsesWritten([&] {
        heapTimer.cancel();
        if (clusterNode) clusterNode->stop();
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
  if (clusterNode) clusterNode->start(address, *jobs);
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

}  // namespace

int main(int argc, char** argv) {
  cli::CommandLine line;
  cli::defineCommands(line);
  if (auto exitCode = cli::parseCommandLine(line, argc, argv)) return *exitCode;
  try {
    if (*line.serve) {
      return serve(line.configPath, line.listen, line.logFormat, line.logLevel,
                   line.stopWhenStdinCloses);
    }
    if (*line.check) return cli::checkConfig(line.configPath, line.imports);
    if (*line.call) return cli::callJob(line.url, line.pool, line.payload, line.timeout);
    if (*line.status) return line.cluster ? cli::showCluster(line.url) : cli::showStatus(line.url);
    if (*line.events) return cli::followEvents(line.url, line.since);
    if (*line.env) return cli::printWorkerEnvironment(line.configPath, line.pool, line.slot);
    if (cli::runChosen(*line.run)) return cli::executeRun(*line.run);
    if (cli::topChosen(*line.top)) return cli::executeTop(*line.top);
    if (*line.version) {
      std::printf("%s\n", cli::versionText().c_str());
      return cli::kExitOk;
    }
    if (*line.man) {
      std::fputs(cli::manPage(line.app, cli::versionText()).c_str(), stdout);
      return cli::kExitOk;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bulkhead: %s\n", e.what());
    return cli::kExitJobFailed;
  }
  return cli::kExitOk;
}
