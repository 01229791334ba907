#include "os/fd_limits.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

namespace bulkhead::os {

namespace {

std::uint64_t fromRlim(rlim_t value) {
  return value == RLIM_INFINITY ? std::numeric_limits<std::uint64_t>::max()
                                : static_cast<std::uint64_t>(value);
}

}  // namespace

FdLimit currentFdLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return {};
  return {fromRlim(limit.rlim_cur), fromRlim(limit.rlim_max)};
}

FdLimitRaise raiseFdLimitToHard() {
  FdLimitRaise result;
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    result.error = std::string("getrlimit(RLIMIT_NOFILE): ") + std::strerror(errno);
    return result;
  }
  result.before = {fromRlim(limit.rlim_cur), fromRlim(limit.rlim_max)};
  result.after = result.before;
  if (limit.rlim_cur == limit.rlim_max) return result;
  limit.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    result.error = std::string("setrlimit(RLIMIT_NOFILE): ") + std::strerror(errno);
    return result;
  }
  result.after.soft = result.after.hard;
  return result;
}

std::uint64_t fdReserve(std::uint64_t workerSlots) { return 64 + 16 * workerSlots; }

std::uint64_t connectionCap(std::uint64_t maxConnections, std::uint64_t softLimit,
                            std::uint64_t reserve) {
  const std::uint64_t left = softLimit > reserve ? softLimit - reserve : 0;
  return std::min(maxConnections, std::max(left, kMinConnectionCap));
}

bool SpareFd::open() {
  fd_.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  return fd_.valid();
}

bool SpareFd::shedOne(int listenFd) {
  // Single-threaded: nothing else can take the fd freed here before accept4 does.
  fd_.reset();
  int client = ::accept4(listenFd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (client >= 0) ::close(client);
  open();
  return client >= 0;
}

}  // namespace bulkhead::os
