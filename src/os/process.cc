#include "os/process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <initializer_list>

namespace bulkhead::os {

namespace {

int pidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

bool makePipe(UniqueFd& readEnd, UniqueFd& writeEnd) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return false;
  readEnd.reset(fds[0]);
  writeEnd.reset(fds[1]);
  return true;
}

void setNonBlocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Runs in the child between fork and exec: async-signal-safe calls only (man 7 signal-safety).
[[noreturn]] void execChild(const char* executable, char* const* argv, char* const* envp,
                            const char* workdir, pid_t parent, int* sources, int sourceCount,
                            int errorFd, const int* cgroupFds, std::size_t cgroupFdCount,
                            std::uint64_t addressSpaceLimit) {
  auto fail = [&](int stage) {
    int report[2] = {stage, errno};
    ssize_t ignored = ::write(errorFd, report, sizeof report);
    (void)ignored;
    ::_exit(127);
  };
  if (::setpgid(0, 0) != 0) fail(1);
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail(2);
  if (::getppid() != parent) ::_exit(1);  // the supervisor died before prctl took effect
  // Join the worker's cgroup(s) before exec, so the interpreter's first allocation is counted.
  for (std::size_t i = 0; i < cgroupFdCount; ++i) {
    if (::write(cgroupFds[i], "0", 1) != 1) fail(7);
  }
  if (addressSpaceLimit > 0) {
    rlimit limit{addressSpaceLimit, addressSpaceLimit};
    if (::setrlimit(RLIMIT_AS, &limit) != 0) fail(8);
  }

  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::signal(sig, SIG_DFL);
  }

  // Move every source above the target range first so no dup2 clobbers a later source.
  for (int i = 0; i < sourceCount; ++i) {
    sources[i] = ::fcntl(sources[i], F_DUPFD_CLOEXEC, 16);
    if (sources[i] < 0) fail(3);
  }
  int highError = ::fcntl(errorFd, F_DUPFD_CLOEXEC, 16);
  if (highError >= 0) errorFd = highError;
  for (int target = 0; target < sourceCount; ++target) {
    if (::dup2(sources[target], target) != target) fail(4);
  }
  ::close_range(static_cast<unsigned>(sourceCount), ~0u, CLOSE_RANGE_CLOEXEC);
  if (workdir && ::chdir(workdir) != 0) fail(5);
  ::execve(executable, argv, envp);
  fail(6);
  ::_exit(127);  // not reached: fail() exits
}

const char* stageName(int stage) {
  switch (stage) {
    case 1:
      return "setpgid";
    case 2:
      return "prctl(PR_SET_PDEATHSIG)";
    case 3:
      return "fcntl(F_DUPFD)";
    case 4:
      return "dup2";
    case 5:
      return "chdir";
    case 6:
      return "exec";
    case 7:
      return "join cgroup";
    case 8:
      return "setrlimit(RLIMIT_AS)";
    default:
      return "child setup";
  }
}

}  // namespace

std::string SpawnError::describe() const { return stage + ": " + std::strerror(error); }

namespace {

// fork + exec of `spec`; the child's fds are /dev/null (0), then `childFds` in order (1, 2, ...).
// Returns the pid once the exec succeeded, or the stage and errno that failed (the child reaped).
// The caller still holds its copies of childFds: it closes them after this returns.
std::variant<pid_t, SpawnError> forkExec(const SpawnSpec& spec,
                                         std::initializer_list<int> childFds) {
  // Everything the child needs is built before fork: the child may only make async-signal-safe
  // calls.
  std::vector<std::string> argvStrings = spec.argv;
  std::vector<std::string> envStrings = spec.env;
  std::vector<char*> argv = pointers(argvStrings);
  std::vector<char*> envp = pointers(envStrings);
  const char* workdir = spec.workingDirectory.empty() ? nullptr : spec.workingDirectory.c_str();

  UniqueFd devNull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!devNull.valid()) return SpawnError{"open /dev/null", errno};
  UniqueFd execErrRead, execErrWrite;
  if (!makePipe(execErrRead, execErrWrite)) return SpawnError{"pipe2", errno};
  int sources[8] = {devNull.get()};
  int count = 1;
  for (int fd : childFds) sources[count++] = fd;

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return SpawnError{"fork", errno};
  if (pid == 0) {
    // ---- child: async-signal-safe region until execve ----
    execChild(spec.executable.c_str(), argv.data(), envp.data(), workdir, parent, sources, count,
              execErrWrite.get(), spec.joinCgroupFds.data(), spec.joinCgroupFds.size(),
              spec.addressSpaceLimit);
  }
  // The child is in its own group from its first instruction on only after setpgid; set it from
  // this side too so a signal to the group sent right now cannot miss it (man 2 setpgid).
  ::setpgid(pid, pid);

  execErrWrite.reset();
  int report[2] = {0, 0};
  ssize_t got;
  do {
    got = ::read(execErrRead.get(), report, sizeof report);
  } while (got < 0 && errno == EINTR);
  if (got == static_cast<ssize_t>(sizeof report)) {
    int status;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return SpawnError{stageName(report[0]), report[1]};
  }
  return pid;
}

}  // namespace

std::variant<WorkerProcess, SpawnError> spawnWorker(const SpawnSpec& spec) {
  auto made = makeWorkerChannels();
  if (auto* error = std::get_if<SpawnError>(&made)) return *error;
  auto& channels = std::get<WorkerChannels>(made);
  auto started = forkExec(spec, {channels.stdoutWrite.get(), channels.stderrWrite.get(),
                                 channels.controlTheirs.get(), channels.stacksWrite.get()});
  if (auto* error = std::get_if<SpawnError>(&started)) return *error;
  WorkerProcess p = std::move(channels.ours);
  p.pid = std::get<pid_t>(started);
  p.pidfd = openPidfd(p.pid);
  return p;  // the child's ends close with `channels`
}

std::variant<CommandProcess, SpawnError> spawnCommand(const SpawnSpec& spec) {
  // As spawnWorker, but the child gets only fds 0-2: stdin /dev/null, stdout and stderr pipes.
  UniqueFd outRead, outWrite, errRead, errWrite;
  if (!makePipe(outRead, outWrite) || !makePipe(errRead, errWrite)) {
    return SpawnError{"pipe2", errno};
  }
  auto started = forkExec(spec, {outWrite.get(), errWrite.get()});
  if (auto* error = std::get_if<SpawnError>(&started)) return *error;
  setNonBlocking(outRead.get());
  setNonBlocking(errRead.get());
  CommandProcess p;
  p.pid = std::get<pid_t>(started);
  p.pidfd = openPidfd(p.pid);
  p.stdoutRead = std::move(outRead);
  p.stderrRead = std::move(errRead);
  return p;
}

std::variant<WorkerChannels, SpawnError> makeWorkerChannels() {
  WorkerChannels c;
  if (!makePipe(c.ours.stdoutRead, c.stdoutWrite) || !makePipe(c.ours.stderrRead, c.stderrWrite) ||
      !makePipe(c.ours.stacksRead, c.stacksWrite)) {
    return SpawnError{"pipe2", errno};
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return SpawnError{"socketpair", errno};
  }
  c.ours.control.reset(sv[0]);
  c.controlTheirs.reset(sv[1]);
  for (int fd : {c.ours.control.get(), c.ours.stdoutRead.get(), c.ours.stderrRead.get(),
                 c.ours.stacksRead.get()}) {
    setNonBlocking(fd);
  }
  return c;
}

UniqueFd openPidfd(pid_t pid) {
  UniqueFd fd(pidfdOpen(pid));
  if (fd.valid()) ::fcntl(fd.get(), F_SETFD, FD_CLOEXEC);
  return fd;
}

long sendWithFds(int socket, const std::string& bytes, const std::vector<int>& fds) {
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* header = CMSG_FIRSTHDR(&msg);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(header), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t sent;
  do {
    sent = ::sendmsg(socket, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  return static_cast<long>(sent);
}

long receiveWithFds(int socket, char* into, std::size_t room, std::vector<UniqueFd>& fds,
                    bool& truncated, std::size_t maxFds) {
  iovec iov{into, room};
  // On the stack: this runs for every read of a worker's frames.
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerReceive)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * std::min(maxFds, kMaxFdsPerReceive));
  ssize_t n;
  do {
    n = ::recvmsg(socket, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return -1;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds.emplace_back(fd);
    }
  }
  truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
  return static_cast<long>(n);
}

std::vector<ExitStatus> reapExitedChildren() {
  std::vector<ExitStatus> out;
  for (;;) {
    int status = 0;
    struct rusage usage {};
    pid_t pid = ::wait4(-1, &status, WNOHANG, &usage);
    if (pid > 0) {
      out.push_back({pid, status, static_cast<std::uint64_t>(usage.ru_maxrss) * 1024});  // KiB
      continue;
    }
    if (pid < 0 && errno == EINTR) continue;
    break;  // 0: children remain but none changed; ECHILD: none left
  }
  return out;
}

bool signalProcessGroup(pid_t pgid, int signal) {
  if (pgid <= 1) return false;  // never signal "every process" or init's group
  return ::kill(-pgid, signal) == 0 || errno == ESRCH;
}

bool signalViaPidfd(int pidfd, int signal) {
  if (pidfd < 0) return false;
  return ::syscall(SYS_pidfd_send_signal, pidfd, signal, nullptr, 0) == 0 || errno == ESRCH;
}

bool signalProcess(pid_t pid, int pidfd, int signal) {
  if (pidfd >= 0) {
    if (::syscall(SYS_pidfd_send_signal, pidfd, signal, nullptr, 0) == 0 || errno == ESRCH) {
      return true;
    }
    if (errno != ENOSYS) return false;
  }
  if (pid <= 1) return false;  // never "every process" or init
  return ::kill(pid, signal) == 0 || errno == ESRCH;
}

bool becomeChildSubreaper() { return ::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0; }

}  // namespace bulkhead::os
