#include "os/service_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "os/parse_number.h"

namespace bulkhead::os {

namespace {

std::string takeEnvironment(const char* name) {
  const char* value = std::getenv(name);
  std::string out = value ? value : "";
  ::unsetenv(name);
  return out;
}

}  // namespace

ServiceNotifier ServiceNotifier::fromEnvironment() {
  std::string address = takeEnvironment("NOTIFY_SOCKET");
  std::string usec = takeEnvironment("WATCHDOG_USEC");
  std::string pid = takeEnvironment("WATCHDOG_PID");
  std::optional<std::chrono::microseconds> watchdog;
  // WATCHDOG_PID names the process the watchdog is for; another one's (a wrapper's) is not ours.
  auto forPid = parseWhole<long long>(pid);
  bool ours = pid.empty() || (forPid && *forPid == static_cast<long long>(::getpid()));
  if (auto micros = parseWhole<long long>(usec); micros && *micros > 0 && ours) {
    watchdog = std::chrono::microseconds(*micros);
  }
  return ServiceNotifier(std::move(address), watchdog);
}

ServiceNotifier::ServiceNotifier(std::string address,
                                 std::optional<std::chrono::microseconds> watchdog)
    : address_(std::move(address)), watchdog_(watchdog) {
  // Only a path or an abstract name ("@...") is a socket we can reach; anything else (a
  // vsock: address from a VM manager) is not supported and disables notification.
  if (!address_.empty() && address_[0] != '/' && address_[0] != '@') address_.clear();
  if (address_.size() >= sizeof(sockaddr_un{}.sun_path)) address_.clear();
}

std::string ServiceNotifier::send(std::string_view state) {
  if (!enabled()) return "";
  if (!socket_.valid()) {
    socket_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!socket_.valid()) return std::string("socket: ") + std::strerror(errno);
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, address_.data(), address_.size());
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace (man 7 unix)
  auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address_.size());
  ssize_t sent;
  do {
    sent = ::sendto(socket_.get(), state.data(), state.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
                    reinterpret_cast<const sockaddr*>(&addr), length);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return "sendto " + address_ + ": " + std::strerror(errno);
  return "";
}

}  // namespace bulkhead::os
