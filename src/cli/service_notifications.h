#pragma once
// The daemon's side of Type=notify (docs/install.md): READY=1 once it listens and start-up has
// settled (api/service_status.h), STATUS= when the one-line summary changes, WATCHDOG=1 from the
// event loop itself at half the manager's WatchdogSec (a stuck loop stops the pings and systemd
// restarts the service), STOPPING=1 when draining starts. Disabled without $NOTIFY_SOCKET.

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <string>

#include "os/service_notify.h"

namespace bulkhead::runtime {
class Supervisor;
}

namespace bulkhead::cli {

class ServiceNotifications {
 public:
  ServiceNotifications(boost::asio::io_context& io, const runtime::Supervisor& supervisor,
                       std::map<std::string, std::chrono::nanoseconds> startupTimeouts,
                       os::ServiceNotifier notifier);

  // Call once the server listens and the supervisor has started.
  void start();
  // Draining began: STOPPING=1; the watchdog keeps pinging until the loop ends.
  void stopping();
  void cancel();

 private:
  void tick();
  void pingWatchdog();
  void send(const std::string& state);

  const runtime::Supervisor& supervisor_;
  std::map<std::string, std::chrono::nanoseconds> startupTimeouts_;
  os::ServiceNotifier notifier_;
  boost::asio::steady_timer statusTimer_;
  boost::asio::steady_timer watchdogTimer_;
  std::chrono::steady_clock::time_point startedAt_;
  bool ready_ = false;
  bool stopping_ = false;
  std::string lastStatus_;
  std::string lastError_;
};

}  // namespace bulkhead::cli
