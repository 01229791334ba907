#pragma once
// File descriptor budget of the daemon: raising RLIMIT_NOFILE, how many client connections fit
// beside the workers' fds, and the spare fd that lets a full process still turn a client away.
//
// Why a reserve: client sockets and worker pipes come out of the same per-process table. Without
// one, 300 idle clients under a limit of 256 left no fd to replace a crashed worker
// ("open /dev/null: Too many open files"). The HTTP server admits at most
// connectionCap(max_connections, soft limit, reserve) clients, so workers always find fds.
//
// Why a spare: when accept(2) fails with EMFILE the pending connection stays in the backlog and
// the listening socket stays readable, so an event loop that simply accepts again spins at full
// CPU. Closing the spare frees exactly one fd to accept that client and close it at once (it sees
// a close instead of hanging), then the spare is reopened (nginx and libuv do the same).

#include <cstdint>
#include <string>

#include "os/unique_fd.h"

namespace bulkhead::os {

// RLIMIT_NOFILE; RLIM_INFINITY is reported as UINT64_MAX.
struct FdLimit {
  std::uint64_t soft = 0;
  std::uint64_t hard = 0;
};

FdLimit currentFdLimit();

struct FdLimitRaise {
  FdLimit before;
  FdLimit after;
  std::string error;  // empty: raised (or already at the hard limit)
};

// Raises the soft limit to the hard one (man 2 setrlimit: an unprivileged process may).
FdLimitRaise raiseFdLimitToHard();

// Fds kept out of reach of client connections, for `workerSlots` workers (a zygote counts as
// one): 64 for the daemon's own (stdio, epoll, timers, signal pipe, listening socket, the
// journal's three SQLite files, the spare, /proc and cgroup files read while sampling, clients
// being turned away) plus 16 per worker (its socket, three pipes and pidfd, the child's ends and
// the exec-error pipe while it spawns, and its replacement's while it is being replaced).
std::uint64_t fdReserve(std::uint64_t workerSlots);

// Clients below this many are admitted even when the reserve takes the whole limit: a daemon
// that cannot answer /healthz is worse than one whose next spawn may meet EMFILE (and says so).
inline constexpr std::uint64_t kMinConnectionCap = 16;

// The connection cap the server applies: max_connections, lowered to what the soft limit leaves
// after the reserve (never below kMinConnectionCap, never above max_connections).
std::uint64_t connectionCap(std::uint64_t maxConnections, std::uint64_t softLimit,
                            std::uint64_t reserve);

// One fd held open on /dev/null, given up to drain one connection when accept(2) hits
// EMFILE/ENFILE.
class SpareFd {
 public:
  // Opens the spare; false (errno set) if it cannot.
  bool open();
  bool valid() const { return fd_.valid(); }
  // Closes the spare, accepts one pending connection on the non-blocking listening socket
  // `listenFd` and closes it, reopens the spare. True if a connection was shed.
  bool shedOne(int listenFd);

 private:
  UniqueFd fd_;
};

}  // namespace bulkhead::os
