#pragma once
// Waiting for a forked child in the OS tests: through its pidfd, at most a bound; past the bound
// the child is SIGKILLed, and it is reaped either way, so no test leaves a process behind.

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace bulkhead::testlib {

// Waits for `pid` (a child of this process) to end, at most limitMs, and reaps it: its wait
// status in *status. False if it ran past the limit or no pidfd could be had (it was SIGKILLed
// then, before it was reaped).
inline bool reapWithin(pid_t pid, int limitMs, int* status) {
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  int ready = -1;
  if (pidfd >= 0) {
    pollfd p{pidfd, POLLIN, 0};
    do {
      ready = ::poll(&p, 1, limitMs);
    } while (ready < 0 && errno == EINTR);
    ::close(pidfd);
  }
  const bool ended = ready == 1;
  if (!ended) ::kill(pid, SIGKILL);
  while (::waitpid(pid, status, 0) < 0 && errno == EINTR) {
  }
  return ended;
}

}  // namespace bulkhead::testlib
