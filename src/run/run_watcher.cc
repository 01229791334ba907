// RunWatcher: see run_watcher.h. The child is forked before any thread exists, so it may
// allocate; it reads its pipe, then kills and removes what it was told about, and exits.

#include "run/run_watcher.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <set>

#include "os/cgroup_kill.h"

namespace bulkhead::run {

namespace {

[[noreturn]] void watch(int readFd) {
  // Ctrl-C and a closing terminal reach our whole process group: the watcher outlives them and
  // acts only on EOF.
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGTERM, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  ::prctl(PR_SET_NAME, "bulkhead-watch");
  std::set<pid_t> groups;
  std::set<std::string> cgroups;
  std::string pending;
  char buffer[1024];
  for (;;) {
    ssize_t n = ::read(readFd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buffer, static_cast<std::size_t>(n));
    std::size_t newline;
    while ((newline = pending.find('\n')) != std::string::npos) {
      std::string line = pending.substr(0, newline);
      pending.erase(0, newline + 1);
      if (line.size() < 3) continue;
      std::string arg = line.substr(3);
      if (line[0] == '+' && line[1] == 'G')
        groups.insert(static_cast<pid_t>(std::atol(arg.c_str())));
      if (line[0] == '-' && line[1] == 'G')
        groups.erase(static_cast<pid_t>(std::atol(arg.c_str())));
      if (line[0] == '+' && line[1] == 'C') cgroups.insert(arg);
      if (line[0] == '-' && line[1] == 'C') cgroups.erase(arg);
    }
  }
  for (pid_t g : groups) {
    if (g > 1) ::kill(-g, SIGKILL);
  }
  // The same bounded kill-until-empty rounds as a worker's cgroup (os/cgroup_kill.h).
  auto host = os::makeLinuxCgroupHost();
  for (const auto& dir : cgroups) os::emptyAndRemoveCgroup(*host, dir, nullptr);
  ::_exit(0);
}

}  // namespace

RunWatcher::~RunWatcher() { stop(); }

bool RunWatcher::start(std::string* error) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    if (error) *error = std::string("watcher pipe: ") + std::strerror(errno);
    return false;
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    if (error) *error = std::string("watcher fork: ") + std::strerror(errno);
    ::close(fds[0]);
    ::close(fds[1]);
    return false;
  }
  if (pid == 0) {
    ::close(fds[1]);
    // stdin and stdout to /dev/null (a caller reading our stdout to EOF must not wait on the
    // watcher); stderr kept; every other inherited fd dropped.
    int devNull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devNull >= 0) {
      ::dup2(devNull, 0);
      ::dup2(devNull, 1);
    }
    int keep = ::fcntl(fds[0], F_DUPFD_CLOEXEC, 3);
    if (keep < 0) ::_exit(1);
    ::close_range(3, static_cast<unsigned>(keep) - 1, 0);
    ::close_range(static_cast<unsigned>(keep) + 1, ~0u, 0);
    watch(keep);
  }
  ::close(fds[0]);
  write_.reset(fds[1]);
  pid_ = pid;
  return true;
}

void RunWatcher::send(const std::string& line) {
  if (!write_.valid()) return;
  std::string text = line + "\n";
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(write_.get(), text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

void RunWatcher::watchGroup(pid_t pgid) { send("+G " + std::to_string(pgid)); }
void RunWatcher::forgetGroup(pid_t pgid) { send("-G " + std::to_string(pgid)); }
void RunWatcher::watchCgroup(const std::string& dir) { send("+C " + dir); }
void RunWatcher::forgetCgroup(const std::string& dir) { send("-C " + dir); }

void RunWatcher::stop() {
  write_.reset();
  if (pid_ > 0) {
    int status;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }
}

}  // namespace bulkhead::run
