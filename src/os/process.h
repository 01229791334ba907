#pragma once
// Starting and ending worker processes: fork+exec without a shell, each in its own process group,
// bound to the supervisor's life with PR_SET_PDEATHSIG, and held by a pidfd so signals never hit
// a recycled pid.

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "os/unique_fd.h"

namespace bulkhead::os {

struct SpawnSpec {
  std::string executable;               // absolute path, exec'd directly
  std::vector<std::string> argv;        // argv[0] included
  std::vector<std::string> env;         // "KEY=value"
  std::string workingDirectory;         // empty: inherit
  std::vector<int> joinCgroupFds;       // cgroup.procs files the child writes "0" to before exec
  std::uint64_t addressSpaceLimit = 0;  // RLIMIT_AS for the child; 0: none (no-cgroup fallback)
};

// The supervisor's ends of a started worker. All are non-blocking and close-on-exec.
struct WorkerProcess {
  pid_t pid = -1;
  UniqueFd pidfd;
  UniqueFd control;  // socketpair end; the worker has the other at fd 3
  UniqueFd stdoutRead;
  UniqueFd stderrRead;
  UniqueFd stacksRead;  // the worker writes faulthandler dumps to fd 4
};

struct SpawnError {
  std::string stage;  // "pipe", "fork", "exec", ...
  int error = 0;      // errno
  std::string describe() const;
};

// Worker fds as the child sees them.
inline constexpr int kControlFd = 3;
inline constexpr int kStacksFd = 4;

std::variant<WorkerProcess, SpawnError> spawnWorker(const SpawnSpec& spec);

// A plain command (a `bulkhead run` step): like spawnWorker (own process group, PDEATHSIG,
// cgroups joined before exec, signals reset) but with no control socket or stacks pipe: the child
// has stdin on /dev/null and stdout/stderr on pipes, and nothing else open.
struct CommandProcess {
  pid_t pid = -1;
  UniqueFd pidfd;
  UniqueFd stdoutRead;  // non-blocking, close-on-exec
  UniqueFd stderrRead;
};
std::variant<CommandProcess, SpawnError> spawnCommand(const SpawnSpec& spec);

// A worker's pipes and control socket, made before the worker exists. spawnWorker hands the
// child's ends to a fresh exec; in zygote mode they travel to the zygote with SCM_RIGHTS and the
// process it forks takes them as its fds 1-4.
struct WorkerChannels {
  WorkerProcess ours;  // pid -1, no pidfd yet; our ends are non-blocking
  UniqueFd controlTheirs;
  UniqueFd stdoutWrite;
  UniqueFd stderrWrite;
  UniqueFd stacksWrite;
};
std::variant<WorkerChannels, SpawnError> makeWorkerChannels();

// A pidfd for a process that is our child (or was reparented to us): nothing else may reap it,
// so its pid cannot have been reused. Invalid if it is gone already.
UniqueFd openPidfd(pid_t pid);

// One sendmsg() of `bytes` with `fds` attached (SCM_RIGHTS), never blocking and never raising
// SIGPIPE. Returns the bytes sent (the fds went with the first of them) or -1 with errno set.
long sendWithFds(int socket, const std::string& bytes, const std::vector<int>& fds);
// The other side: one recvmsg() of up to `room` bytes, never blocking (EINTR retried). The fds
// that came with them are appended to `fds` (close-on-exec, at most maxFds, itself at most
// kMaxFdsPerReceive, taken per call);
// `truncated` is set when the kernel dropped some for lack of room (MSG_CTRUNC). Returns the
// bytes read (0 at EOF) or -1 with errno set.
inline constexpr std::size_t kMaxFdsPerReceive = 16;
long receiveWithFds(int socket, char* into, std::size_t room, std::vector<UniqueFd>& fds,
                    bool& truncated, std::size_t maxFds = 16);

struct ExitStatus {
  pid_t pid;
  int rawStatus;                  // as from waitpid
  std::uint64_t maxRssBytes = 0;  // wait4's ru_maxrss: the largest RSS it (or a child it
                                  // reaped) ever had, exact where sampling can miss a short peak
};

// Reaps every child that has changed state (tini's loop): wait4(-1, WNOHANG) until nothing is
// left. As a child subreaper the supervisor also reaps orphaned grandchildren here.
std::vector<ExitStatus> reapExitedChildren();

// Signal the whole process group of a worker (its pgid is its pid). ESRCH is not an error.
bool signalProcessGroup(pid_t pgid, int signal);
// Signal one process through its pidfd (immune to pid reuse).
bool signalViaPidfd(int pidfd, int signal);
// The one place the shell signals a single process: through its pidfd, or by pid only where the
// kernel has no pidfds (pidfd_open and pidfd_send_signal came in Linux 5.3 and 5.1: openPidfd
// returned an invalid fd, or the send failed with ENOSYS). The pid is then that of our own child,
// not yet reaped, so it cannot have been reused. ESRCH is not an error.
bool signalProcess(pid_t pid, int pidfd, int signal);

bool becomeChildSubreaper();

}  // namespace bulkhead::os
