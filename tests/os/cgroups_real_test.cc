// cgroups: the real manager on this machine's hierarchy (v1 here; v2 where the host has it) with
// real OOM kills, pids limits, leftover processes and stale directories. Skipped where this
// process cannot make cgroups. Every wait is bounded.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "os/cgroups.h"
#include "testlib/child_wait.h"
#include "testlib/fixtures.h"

namespace bulkhead::os {
namespace {

namespace fs = std::filesystem;

// ---- the real hierarchy ----

using namespace std::chrono_literals;

// Waits for pid to end, at most limitMs; on timeout SIGKILLs it, reaps it and reports failure.
::testing::AssertionResult waitWithin(pid_t pid, int limitMs, int* status) {
  if (testlib::reapWithin(pid, limitMs, status)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "child " << pid << " ran past " << limitMs << " ms";
}

// Reads one byte from fd, waiting at most limitMs.
bool readByteWithin(int fd, int limitMs, char* out) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, limitMs) != 1) return false;
  return ::read(fd, out, 1) == 1;
}

// Joins the cgroup the way a worker does: between fork and exec, async-signal-safe writes only.
void joinCgroup(const std::vector<int>& procsFds) {
  for (int fd : procsFds) {
    if (::write(fd, "0", 1) != 1) ::_exit(120);
  }
}

class RealCgroups : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    cgroups_ = detectCgroups("/proc/self/cgroup", "/proc/self/mountinfo", &why);
    if (cgroups_->mode() == CgroupMode::kNone) {
      GTEST_SKIP() << "no writable cgroup hierarchy with memory and pids here: " << why;
    }
    own_ = locateOwnCgroups(readWhole("/proc/self/cgroup"), readWhole("/proc/self/mountinfo"));
    base_ = "bulkhead-" + std::to_string(::getpid());
  }

  void TearDown() override {
    if (!cgroups_ || cgroups_->mode() == CgroupMode::kNone) return;
    cgroups_.reset();
    // Nothing may be left behind: our base directories are gone with the manager.
    for (const auto& own : ownDirs()) {
      EXPECT_FALSE(fs::exists(own + "/" + base_)) << own + "/" + base_ << " left behind";
    }
  }

  static std::string readWhole(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  std::vector<std::string> ownDirs() const {
    if (cgroups_ && cgroups_->mode() == CgroupMode::kV2) return {*own_.v2};
    return {*own_.v1Memory, *own_.v1Pids};
  }

  void expectGone(const WorkerCgroup& w) {
    for (const auto& d : w.directories()) EXPECT_FALSE(fs::exists(d)) << d;
  }

  std::unique_ptr<Cgroups> cgroups_;
  OwnCgroupDirs own_;
  std::string base_;
};

TEST_F(RealCgroups, OomKillHitsTheWorkerOnlyAndIsCounted) {
  if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "no /usr/bin/python3";
  constexpr std::uint64_t kLimit = 64u << 20;
  std::string error;
  auto w = cgroups_->create("oom", {kLimit, 64}, &error);
  ASSERT_TRUE(w) << error;
  std::fprintf(stderr, "%s\n", cgroups_->describe().c_str());
  if (cgroups_->mode() == CgroupMode::kV1 &&
      fs::exists(w->memoryDir() + "/memory.memsw.limit_in_bytes")) {
    // No escape into swap: memory+swap is limited to the same value.
    EXPECT_EQ(readWhole(w->memoryDir() + "/memory.memsw.limit_in_bytes"),
              std::to_string(kLimit) + "\n");
  }

  // Built before fork: the child may only make async-signal-safe calls.
  const char* argv[] = {"python3", "-c", "b=[]\nwhile True: b.append(bytearray(1<<20))", nullptr};
  const char* envp[] = {"PATH=/usr/bin:/bin", nullptr};
  std::vector<int> fds = w->procsFds();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // ---- child: async-signal-safe region until execve ----
    joinCgroup(fds);
    ::execve("/usr/bin/python3", const_cast<char* const*>(argv), const_cast<char* const*>(envp));
    ::_exit(127);
  }
  int status = 0;
  ASSERT_TRUE(waitWithin(pid, 30000, &status));
  ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status;
  EXPECT_EQ(WTERMSIG(status), SIGKILL);

  auto c = cgroups_->counters(*w);
  EXPECT_EQ(c.oomKills, 1u);
  EXPECT_GE(c.memoryPeakBytes, kLimit * 3 / 4);
  EXPECT_LE(c.memoryPeakBytes, kLimit);
  EXPECT_EQ(c.pidsCurrent, 0u);
  std::fprintf(stderr, "oom: oomKills %llu, peak %llu bytes, current %llu bytes\n",
               static_cast<unsigned long long>(c.oomKills),
               static_cast<unsigned long long>(c.memoryPeakBytes),
               static_cast<unsigned long long>(c.memoryCurrentBytes));
  ASSERT_TRUE(cgroups_->remove(*w, &error)) << error;
  expectGone(*w);
}

TEST_F(RealCgroups, PidsLimitRefusesThreadsAndIsCounted) {
  constexpr int kMax = 8;
  std::string error;
  auto w = cgroups_->create("pids", {std::nullopt, kMax}, &error);
  ASSERT_TRUE(w) << error;
  int report[2], hold[2];
  ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(hold, O_CLOEXEC), 0);
  std::vector<int> fds = w->procsFds();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    joinCgroup(fds);
    ::close(hold[1]);  // so the threads see EOF once the parent closes its end
    ::close(report[0]);
    // Start threads that block on `hold` until pthread_create fails; report how many started.
    int started = 0;
    for (int i = 0; i < 64; ++i) {
      pthread_t t;
      pthread_attr_t attr;
      pthread_attr_init(&attr);
      pthread_attr_setstacksize(&attr, 64 * 1024);
      int rc = pthread_create(
          &t, &attr,
          [](void* fd) -> void* {
            char c;
            while (::read(static_cast<int>(reinterpret_cast<intptr_t>(fd)), &c, 1) > 0) {
            }
            return nullptr;
          },
          reinterpret_cast<void*>(static_cast<intptr_t>(hold[0])));
      pthread_attr_destroy(&attr);
      if (rc != 0) break;
      ++started;
    }
    unsigned char n = static_cast<unsigned char>(started);
    if (::write(report[1], &n, 1) != 1) ::_exit(2);
    char c;
    while (::read(hold[0], &c, 1) > 0) {
    }
    ::_exit(0);
  }
  ::close(report[1]);
  ::close(hold[0]);
  char n = 0;
  bool reported = readByteWithin(report[0], 10000, &n);
  auto whileRunning = cgroups_->counters(*w);
  ::close(hold[1]);  // lets the child and its threads end
  ::close(report[0]);
  int status = 0;
  ASSERT_TRUE(waitWithin(pid, 10000, &status));
  ASSERT_TRUE(reported) << "child did not report";
  EXPECT_EQ(static_cast<int>(n), kMax - 1);  // the main thread is the 8th task
  EXPECT_EQ(whileRunning.pidsCurrent, static_cast<std::uint64_t>(kMax));
  EXPECT_GE(whileRunning.pidsMaxEvents, 1u);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(cgroups_->counters(*w).oomKills, 0u);
  ASSERT_TRUE(cgroups_->remove(*w, &error)) << error;
  expectGone(*w);
}

TEST_F(RealCgroups, RemoveKillsTheWholeTreeIncludingOrphans) {
  std::string error;
  auto w = cgroups_->create("tree", {512u << 20, 32}, &error);
  ASSERT_TRUE(w) << error;
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  // The shell starts two sleepers, says so, then waits; the sleepers outlive nothing on their own.
  const char* argv[] = {"sh", "-c", "sleep 1000 & sleep 1000 & echo r; wait", nullptr};
  const char* envp[] = {"PATH=/usr/bin:/bin", nullptr};
  std::vector<int> fds = w->procsFds();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // ---- child: async-signal-safe region until execve ----
    joinCgroup(fds);
    if (::dup2(out[1], 1) != 1) ::_exit(121);
    ::execve("/bin/sh", const_cast<char* const*>(argv), const_cast<char* const*>(envp));
    ::_exit(127);
  }
  ::close(out[1]);
  char c = 0;
  bool ready = readByteWithin(out[0], 10000, &c);
  ::close(out[0]);
  EXPECT_TRUE(ready);
  EXPECT_EQ(cgroups_->counters(*w).pidsCurrent, 3u);
  ASSERT_TRUE(cgroups_->remove(*w, &error)) << error;
  expectGone(*w);
  int status = 0;
  ASSERT_TRUE(waitWithin(pid, 10000, &status));
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
}

TEST_F(RealCgroups, CleanupStaleRemovesADeadSupervisorsDirectoriesAndKillsItsWorker) {
  // A pid that is certainly dead: a child we have already reaped.
  pid_t dead = ::fork();
  ASSERT_GE(dead, 0);
  if (dead == 0) ::_exit(0);
  int status = 0;
  ASSERT_TRUE(waitWithin(dead, 10000, &status));
  const std::string stale = "bulkhead-" + std::to_string(dead);
  std::vector<std::string> workerDirs;
  for (const auto& own : ownDirs()) {
    ASSERT_EQ(::mkdir((own + "/" + stale).c_str(), 0755), 0) << own << ": " << std::strerror(errno);
    if (cgroups_->mode() == CgroupMode::kV2) {
      std::ofstream(own + "/" + stale + "/cgroup.subtree_control") << "+memory +pids";
    }
    ASSERT_EQ(::mkdir((own + "/" + stale + "/w0").c_str(), 0755), 0);
    workerDirs.push_back(own + "/" + stale + "/w0");
  }
  // A leftover worker still running inside.
  std::vector<UniqueFd> procs;
  std::vector<int> fds;
  for (const auto& d : workerDirs) {
    procs.emplace_back(::open((d + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_TRUE(procs.back().valid());
    fds.push_back(procs.back().get());
  }
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  pid_t orphan = ::fork();
  ASSERT_GE(orphan, 0);
  if (orphan == 0) {
    joinCgroup(fds);
    if (::write(ready[1], "r", 1) != 1) ::_exit(2);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c;
  EXPECT_TRUE(readByteWithin(ready[0], 10000, &c));
  ::close(ready[0]);
  procs.clear();

  std::string error;
  EXPECT_GE(cgroups_->cleanupStale(&error), 1) << error;
  for (const auto& own : ownDirs()) EXPECT_FALSE(fs::exists(own + "/" + stale)) << own;
  ASSERT_TRUE(waitWithin(orphan, 10000, &status));
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
  // Our own base survives cleanup.
  auto w = cgroups_->create("after-cleanup", {}, &error);
  ASSERT_TRUE(w) << error;
  ASSERT_TRUE(cgroups_->remove(*w, &error)) << error;
}

TEST_F(RealCgroups, WithoutLimitsASetsidGrandchildIsStillInsideAndDiesWithIt) {
  std::string error;
  auto w = cgroups_->create("nolimits", {}, &error);
  ASSERT_TRUE(w) << error;
  EXPECT_EQ(w->directories().size(), 1u);
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  // The worker starts a sleeper in a session of its own (start_new_session=True), says so, and
  // exits: the sleeper is out of its process group, but not out of its cgroup.
  const char* argv[] = {"sh", "-c", "setsid sleep 1000 & echo r", nullptr};
  const char* envp[] = {"PATH=/usr/bin:/bin", nullptr};
  std::vector<int> fds = w->procsFds();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // ---- child: async-signal-safe region until execve ----
    joinCgroup(fds);
    if (::dup2(out[1], 1) != 1) ::_exit(121);
    ::execve("/bin/sh", const_cast<char* const*>(argv), const_cast<char* const*>(envp));
    ::_exit(127);
  }
  ::close(out[1]);
  char c = 0;
  EXPECT_TRUE(readByteWithin(out[0], 10000, &c));
  ::close(out[0]);
  int status = 0;
  ASSERT_TRUE(waitWithin(pid, 10000, &status));
  std::vector<pid_t> left = parsePidList(readWhole(w->pidsDir() + "/cgroup.procs"));
  ASSERT_EQ(left.size(), 1u) << "the setsid'd sleeper";
  ASSERT_TRUE(cgroups_->remove(*w, &error)) << error;
  expectGone(*w);
  // It was reparented to init (or a subreaper above us), so only /proc tells it is gone.
  bool gone = false;
  for (int i = 0; i < 500 && !gone; ++i) {
    std::string stat = readWhole("/proc/" + std::to_string(left[0]) + "/stat");
    gone = stat.empty() || stat.substr(stat.rfind(')') + 2, 1) == "Z";
    if (!gone) ::usleep(10000);
  }
  EXPECT_TRUE(gone) << left[0];
}

// Not a check: the price of a cgroup per worker, printed for docs/operations.md.
TEST_F(RealCgroups, CostOfCreatingAndRemovingAWorkerCgroup) {
  constexpr int kRounds = 200;
  for (const bool limited : {false, true}) {
    CgroupLimits limits;
    if (limited) limits = {256u << 20, 64};
    std::string error;
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kRounds; ++i) {
      auto w = cgroups_->create("cost", limits, &error);
      ASSERT_TRUE(w) << error;
      ASSERT_TRUE(cgroups_->remove(*w, &error)) << error;
    }
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count() /
              kRounds;
    std::fprintf(stderr, "cgroup create+remove (%s, %s): %lld us\n",
                 cgroupModeName(cgroups_->mode()), limited ? "memory and pids limits" : "no limits",
                 static_cast<long long>(us));
  }
}

TEST_F(RealCgroups, ManagerLeavesNothingBehind) {
  std::string error;
  auto a = cgroups_->create("a", {128u << 20, 16}, &error);
  ASSERT_TRUE(a) << error;
  auto b = cgroups_->create("b", {128u << 20, 16}, &error);
  ASSERT_TRUE(b) << error;
  for (const auto& d : a->directories()) EXPECT_TRUE(fs::is_directory(d)) << d;
  ASSERT_TRUE(cgroups_->remove(*a, &error)) << error;
  expectGone(*a);
  // b is never removed: the manager's destructor removes it (it holds no process); TearDown
  // checks the base directories are gone.
}

}  // namespace
}  // namespace bulkhead::os
