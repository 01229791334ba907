#include "cli/service_notifications.h"

#include "api/pool_views.h"
#include "api/service_status.h"
#include "runtime/operator_log.h"
#include "runtime/supervisor.h"

namespace bulkhead::cli {

namespace {
// Until READY, look often so a warm pool is announced promptly; after it, STATUS is a summary
// for `systemctl status` and once a second is plenty.
constexpr auto kStartingTick = std::chrono::milliseconds(100);
constexpr auto kRunningTick = std::chrono::seconds(1);
}  // namespace

ServiceNotifications::ServiceNotifications(
    boost::asio::io_context& io, const runtime::Supervisor& supervisor,
    std::map<std::string, std::chrono::nanoseconds> startupTimeouts, os::ServiceNotifier notifier)
    : supervisor_(supervisor),
      startupTimeouts_(std::move(startupTimeouts)),
      notifier_(std::move(notifier)),
      statusTimer_(io),
      watchdogTimer_(io),
      startedAt_(std::chrono::steady_clock::now()) {}

void ServiceNotifications::start() {
  if (!notifier_.enabled()) return;
  startedAt_ = std::chrono::steady_clock::now();
  tick();
  if (notifier_.watchdogInterval()) pingWatchdog();
}

void ServiceNotifications::stopping() {
  if (!notifier_.enabled() || std::exchange(stopping_, true)) return;
  statusTimer_.cancel();
  send("STOPPING=1\nSTATUS=draining: finishing jobs and stopping workers");
}

void ServiceNotifications::cancel() {
  statusTimer_.cancel();
  watchdogTimer_.cancel();
}

void ServiceNotifications::tick() {
  if (stopping_) return;
  auto status = api::serviceStatusOf(
      api::poolsJson(supervisor_), std::chrono::steady_clock::now() - startedAt_, startupTimeouts_);
  std::string message;
  if (status.line != lastStatus_) message = "STATUS=" + status.line;
  if (status.settled && !ready_) {
    ready_ = true;
    message = "READY=1\n" + message;
    runtime::logAt(runtime::LogLevel::kInfo, "ready (notified " + notifier_.address() + ")",
                   {{"event", "service_ready"}});
  }
  if (!message.empty()) send(message);
  lastStatus_ = status.line;
  statusTimer_.expires_after(ready_ ? std::chrono::nanoseconds(kRunningTick) : kStartingTick);
  statusTimer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) tick();
  });
}

void ServiceNotifications::pingWatchdog() {
  send("WATCHDOG=1");
  watchdogTimer_.expires_after(*notifier_.watchdogInterval() / 2);
  watchdogTimer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) pingWatchdog();
  });
}

void ServiceNotifications::send(const std::string& state) {
  std::string error = notifier_.send(state);
  // Said once per distinct error: a manager that went away must not flood the log every tick.
  if (!error.empty() && error != lastError_) {
    runtime::logAt(runtime::LogLevel::kWarning, "service notification failed: " + error);
  }
  lastError_ = error;
}

}  // namespace bulkhead::cli
