#pragma once
// The service manager's notification socket (systemd's sd_notify protocol, without libsystemd):
// one datagram of newline-separated KEY=VALUE assignments to the AF_UNIX socket named by
// $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace), and the watchdog interval
// from $WATCHDOG_USEC when $WATCHDOG_PID is unset or ours. See man 3 sd_notify, man 5
// systemd.service (Type=notify, WatchdogSec=).

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "os/unique_fd.h"

namespace bulkhead::os {

class ServiceNotifier {
 public:
  // Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID, then removes them from the environment:
  // they are meant for this process, not for the commands it starts. Without NOTIFY_SOCKET the
  // notifier is disabled and send() does nothing.
  static ServiceNotifier fromEnvironment();
  // For tests: a notifier for an explicit socket address ("" = disabled).
  explicit ServiceNotifier(std::string address,
                           std::optional<std::chrono::microseconds> watchdog = std::nullopt);

  bool enabled() const { return !address_.empty(); }
  const std::string& address() const { return address_; }
  // The interval the service manager expects WATCHDOG=1 within; nullopt when no watchdog is set.
  std::optional<std::chrono::microseconds> watchdogInterval() const { return watchdog_; }

  // Sends one notification ("READY=1\nSTATUS=..."). Returns "" on success or the error; a
  // disabled notifier succeeds without sending. Never blocks (MSG_DONTWAIT): a manager that does
  // not read its socket must not stall the event loop.
  std::string send(std::string_view state);

 private:
  std::string address_;
  std::optional<std::chrono::microseconds> watchdog_;
  UniqueFd socket_;
};

}  // namespace bulkhead::os
