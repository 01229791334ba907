// os::ServiceNotifier against a real AF_UNIX datagram socket, path and abstract, as systemd
// listens on (man 3 sd_notify).

#include "os/service_notify.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "os/unique_fd.h"

namespace bulkhead::os {
namespace {

// A datagram socket bound to `address` ("@name" = abstract), as the service manager's.
UniqueFd listenOn(const std::string& address) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, address.data(), address.size());
  if (address[0] == '@') addr.sun_path[0] = '\0';
  auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size());
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), length), 0) << strerror(errno);
  return fd;
}

std::string receive(const UniqueFd& fd) {
  char buffer[4096];
  ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
  return n < 0 ? std::string("error: ") + strerror(errno) : std::string(buffer, n);
}

TEST(ServiceNotifier, SendsOneDatagramToAPathSocket) {
  std::string path = "/tmp/bulkhead-notify-test-" + std::to_string(::getpid());
  ::unlink(path.c_str());
  UniqueFd manager = listenOn(path);
  ServiceNotifier notifier(path);
  ASSERT_TRUE(notifier.enabled());
  EXPECT_EQ(notifier.send("READY=1\nSTATUS=1 pool"), "");
  EXPECT_EQ(receive(manager), "READY=1\nSTATUS=1 pool");
  ::unlink(path.c_str());
}

TEST(ServiceNotifier, SendsToAnAbstractSocket) {
  std::string name = "@bulkhead-notify-test-" + std::to_string(::getpid());
  UniqueFd manager = listenOn(name);
  ServiceNotifier notifier(name);
  EXPECT_EQ(notifier.send("STOPPING=1"), "");
  EXPECT_EQ(receive(manager), "STOPPING=1");
}

TEST(ServiceNotifier, DisabledWithoutAnAddressAndSendingIsANoOp) {
  ServiceNotifier notifier("");
  EXPECT_FALSE(notifier.enabled());
  EXPECT_EQ(notifier.send("READY=1"), "");
  EXPECT_FALSE(ServiceNotifier("vsock:2:1234").enabled());
}

TEST(ServiceNotifier, AnAbsentManagerIsAnErrorNotACrash) {
  ServiceNotifier notifier("/tmp/bulkhead-notify-test-nobody-listens");
  EXPECT_NE(notifier.send("READY=1"), "");
}

TEST(ServiceNotifier, ReadsAndClearsItsEnvironment) {
  ::setenv("NOTIFY_SOCKET", "@x", 1);
  ::setenv("WATCHDOG_USEC", "3000000", 1);
  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  auto notifier = ServiceNotifier::fromEnvironment();
  EXPECT_EQ(notifier.address(), "@x");
  ASSERT_TRUE(notifier.watchdogInterval());
  EXPECT_EQ(notifier.watchdogInterval()->count(), 3000000);
  EXPECT_EQ(std::getenv("NOTIFY_SOCKET"), nullptr);  // not passed on to what we start
  EXPECT_EQ(std::getenv("WATCHDOG_USEC"), nullptr);
}

TEST(ServiceNotifier, AWatchdogMeantForAnotherProcessIsIgnored) {
  ::setenv("NOTIFY_SOCKET", "@x", 1);
  ::setenv("WATCHDOG_USEC", "3000000", 1);
  ::setenv("WATCHDOG_PID", "1", 1);
  EXPECT_FALSE(ServiceNotifier::fromEnvironment().watchdogInterval());
}

}  // namespace
}  // namespace bulkhead::os
