// Containment without a cgroup (os/orphans.h) with real processes: a child subreaper like the
// supervisor, a "worker" that starts a process in a session of its own and dies, and a sweep over
// the real /proc; plus the cost of one walk of this machine's process table. Every wait is
// bounded.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "os/orphans.h"
#include "testlib/child_wait.h"

namespace bulkhead::os {
namespace {

constexpr const char* kTag = "BULKHEAD_WORKER_ID";

// Not a check: the price of one lineage walk, printed for docs/operations.md.
TEST(ReadProcTable, CostOfOneWalkOfThisMachinesProc) {
  constexpr int kRounds = 50;
  std::size_t processes = 0;
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kRounds; ++i) processes = readProcTable("/proc").size();
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                  start)
                .count() /
            kRounds;
  EXPECT_GT(processes, 1u);
  std::fprintf(stderr, "process table walk: %zu processes in %lld us\n", processes,
               static_cast<long long>(us));
}

// ---- real processes under a real child subreaper ----

// Runs body in a forked child that is a child subreaper, like the supervisor, and returns its
// exit code (gtest assertions do not cross fork: the body returns 0 or a code naming the check
// that failed). The child is SIGKILLed if it runs past limitMs.
int inSubreaper(const std::function<int()>& body, int limitMs = 30000) {
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) ::_exit(90);
    ::_exit(body());
  }
  int status = 0;
  if (!testlib::reapWithin(pid, limitMs, &status)) return -2;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -3;
}

bool readByte(int fd, int limitMs) {
  pollfd p{fd, POLLIN, 0};
  char c;
  return ::poll(&p, 1, limitMs) == 1 && ::read(fd, &c, 1) == 1;
}

// Forks a process that runs `sh -c script` in a new session with exactly env. Returns its pid.
pid_t startSession(const char* script, std::vector<std::string> env, int stdoutFd = -1) {
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const char* argv[] = {"sh", "-c", script, nullptr};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setsid();
    if (stdoutFd >= 0) ::dup2(stdoutFd, 1);
    ::execve("/bin/sh", const_cast<char* const*>(argv), envp.data());
    ::_exit(127);
  }
  return pid;
}

// Reaps children until pid's status is seen (others are collected too); its status or -1.
int reap(pid_t pid) {
  for (int i = 0; i < 1000; ++i) {
    int status = 0;
    pid_t got = ::waitpid(-1, &status, 0);
    if (got == pid) return status;
    if (got < 0 && errno != EINTR) return -1;
  }
  return -1;
}

bool killedBySigkill(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL; }

TEST(KillOrphansReal, ASetsidGrandchildTaggedWithTheDeadWorkerDiesTheSpareLives) {
  int code = inSubreaper([] {
    int ready[2], report[2];
    if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(report, O_CLOEXEC) != 0) return 10;
    // A "spare": our child with the zygote's tag. It must survive.
    pid_t spare = startSession("exec sleep 1000", {"PATH=/usr/bin:/bin", "BULKHEAD_WORKER_ID=z-0"});
    pid_t worker = ::fork();
    if (worker == 0) {
      // The worker starts a setsid'd shell that starts a sleeper of its own, then crashes.
      pid_t g = startSession("sleep 1000 & echo r; exec sleep 1000",
                             {"PATH=/usr/bin:/bin", "BULKHEAD_WORKER_ID=w-1"}, ready[1]);
      if (!readByte(ready[0], 10000)) ::_exit(2);
      if (::write(report[1], &g, sizeof g) != sizeof g) ::_exit(3);
      ::abort();
    }
    pid_t grandchild = 0;
    if (::read(report[0], &grandchild, sizeof grandchild) != sizeof grandchild) return 11;
    int status = reap(worker);
    if (!WIFSIGNALED(status)) return 12;
    OrphanQuery q;
    q.self = ::getpid();
    q.tagName = kTag;
    q.tags = {"w-1"};
    auto host = makeLinuxProcessHost("/proc");
    SweepResult r = killOrphans(*host, q);
    if (!r.settled || r.killed.size() != 2) return 20 + static_cast<int>(r.killed.size());
    if (!killedBySigkill(reap(grandchild))) return 13;
    if (::kill(spare, 0) != 0) return 14;
    ::kill(spare, SIGKILL);
    if (!killedBySigkill(reap(spare))) return 15;
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {  // the grandchild's own sleeper
    }
    return 0;
  });
  EXPECT_EQ(code, 0);
}

TEST(KillOrphansReal, AnUntaggedGrandchildInTheRecordedLineageDies) {
  int code = inSubreaper([] {
    int report[2], go[2];
    if (::pipe2(report, O_CLOEXEC) != 0 || ::pipe2(go, O_CLOEXEC) != 0) return 10;
    pid_t worker = ::fork();
    if (worker == 0) {
      pid_t g = startSession("exec sleep 1000", {"PATH=/usr/bin:/bin"});  // no tag at all
      if (::write(report[1], &g, sizeof g) != sizeof g) ::_exit(3);
      if (!readByte(go[0], 10000)) ::_exit(4);
      ::_exit(0);
    }
    pid_t grandchild = 0;
    if (::read(report[0], &grandchild, sizeof grandchild) != sizeof grandchild) return 11;
    // The lineage walk of a sample tick, while the worker lives.
    std::set<ProcessKey> lineage = updateLineage(readProcTable("/proc"), worker, {});
    bool recorded = false;
    for (const auto& k : lineage) recorded = recorded || k.pid == grandchild;
    if (!recorded) return 12;
    // An untagged orphan that is not in the lineage (someone else's): it must survive.
    pid_t stranger = startSession("exec sleep 1000", {"PATH=/usr/bin:/bin"});
    if (::write(go[1], "g", 1) != 1) return 13;
    if (reap(worker) < 0) return 14;
    OrphanQuery q;
    q.self = ::getpid();
    q.tagName = kTag;
    q.tags = {"w-1"};
    q.lineage = lineage;
    SweepResult r = killOrphans(*makeLinuxProcessHost("/proc"), q);
    if (r.killed.size() != 1 || r.killed[0].pid != grandchild) return 15;
    if (!killedBySigkill(reap(grandchild))) return 16;
    if (::kill(stranger, 0) != 0) return 17;
    ::kill(stranger, SIGKILL);
    reap(stranger);
    return 0;
  });
  EXPECT_EQ(code, 0);
}

}  // namespace
}  // namespace bulkhead::os
