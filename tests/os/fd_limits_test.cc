// The fd budget: the connection cap beside the workers' reserve (pure), raising RLIMIT_NOFILE,
// and the spare fd that sheds a connection when accept(2) fails with EMFILE (real sockets).

#include "os/fd_limits.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <cerrno>
#include <limits>
#include <vector>

namespace bulkhead::os {
namespace {

constexpr std::uint64_t kUnlimited = std::numeric_limits<std::uint64_t>::max();

TEST(FdLimits, CapIsMaxConnectionsWhenTheLimitLeavesRoom) {
  EXPECT_EQ(connectionCap(1024, 1'048'576, fdReserve(8)), 1024u);
  EXPECT_EQ(connectionCap(1024, kUnlimited, fdReserve(8)), 1024u);
}

TEST(FdLimits, CapLeavesTheReserveToWorkers) {
  // The measured case: 256 fds, one worker. 64 + 16 kept, 176 for clients.
  EXPECT_EQ(fdReserve(1), 80u);
  EXPECT_EQ(connectionCap(1024, 256, fdReserve(1)), 176u);
  // The default soft limit of many systems, 8 workers: 1024 - 192.
  EXPECT_EQ(connectionCap(1024, 1024, fdReserve(8)), 832u);
}

TEST(FdLimits, CapNeverFallsBelowTheFloorNorRisesAboveMaxConnections) {
  EXPECT_EQ(connectionCap(1024, 100, fdReserve(8)), kMinConnectionCap);
  EXPECT_EQ(connectionCap(1024, 0, fdReserve(0)), kMinConnectionCap);
  EXPECT_EQ(connectionCap(4, 100, fdReserve(8)), 4u);
  EXPECT_EQ(connectionCap(1, kUnlimited, 0), 1u);
}

TEST(FdLimits, RaiseSetsTheSoftLimitToTheHardOne) {
  auto raised = raiseFdLimitToHard();
  ASSERT_TRUE(raised.error.empty()) << raised.error;
  EXPECT_EQ(raised.after.soft, raised.after.hard);
  EXPECT_EQ(currentFdLimit().soft, raised.after.hard);
  EXPECT_GE(raised.after.soft, raised.before.soft);
}

// Restores RLIMIT_NOFILE and closes the fds that filled the table, whatever the test's outcome.
class FdExhaustion {
 public:
  FdExhaustion() { ::getrlimit(RLIMIT_NOFILE, &saved_); }
  ~FdExhaustion() {
    for (int fd : fillers_) ::close(fd);
    ::setrlimit(RLIMIT_NOFILE, &saved_);
  }
  // Lowers the soft limit to 128 (a test process holds a handful) and opens /dev/null until
  // EMFILE.
  bool exhaust() {
    rlimit low = saved_;
    low.rlim_cur = 128;
    if (::setrlimit(RLIMIT_NOFILE, &low) != 0) return false;
    for (;;) {
      int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) return errno == EMFILE;
      fillers_.push_back(fd);
    }
  }

 private:
  rlimit saved_{};
  std::vector<int> fillers_;
};

TEST(SpareFd, ShedsOneWaitingConnectionWhenOutOfFds) {
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(listener.valid());
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener.get(), 16), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);

  SpareFd spare;
  ASSERT_TRUE(spare.open());
  FdExhaustion exhaustion;
  ASSERT_TRUE(exhaustion.exhaust());
  // The state that made the accept loop spin: the connection waits, accept fails at once.
  ASSERT_LT(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC), 0);
  ASSERT_EQ(errno, EMFILE);

  EXPECT_TRUE(spare.shedOne(listener.get()));
  EXPECT_TRUE(spare.valid());  // reopened: the next EMFILE can shed again
  // The client sees its connection closed rather than waiting in the backlog.
  pollfd p{client.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10'000), 1);
  char byte = 0;
  EXPECT_LE(::recv(client.get(), &byte, 1, 0), 0);
  // Nothing else was waiting: a second shed finds no connection and still keeps the spare.
  EXPECT_FALSE(spare.shedOne(listener.get()));
  EXPECT_TRUE(spare.valid());
}

}  // namespace
}  // namespace bulkhead::os
