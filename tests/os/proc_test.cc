// /proc parsers on fixture files (tests/data/proc/), ProcReader on a fake /proc in a temp dir, and
// ProcReader against real children that start threads, map regions and open fds on command.

#include "os/proc.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "testlib/fixtures.h"

namespace bulkhead::os {
namespace {

namespace fs = std::filesystem;

std::string fixture(const std::string& name) { return testlib::readFixture("proc", name); }

// ---- parsers on fixtures ----

TEST(ParseProcStatus, PythonWithThreads) {
  auto s = parseProcStatus(fixture("status_python_4threads.txt"));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->rssBytes, 62424u * 1024);
  EXPECT_EQ(s->threads, 4);
  EXPECT_FALSE(s->exited);
}

TEST(ParseProcStatus, ZombieHasNoRssAndIsExited) {
  auto s = parseProcStatus(fixture("status_zombie.txt"));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->rssBytes, 0u);
  EXPECT_EQ(s->threads, 1);
  EXPECT_TRUE(s->exited);
}

TEST(ParseProcStatus, KernelThreadHasNoRss) {
  auto s = parseProcStatus(fixture("status_kthread.txt"));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->rssBytes, 0u);
  EXPECT_EQ(s->threads, 1);
  EXPECT_FALSE(s->exited);
}

TEST(ParseProcStatus, MalformedIsNullopt) {
  EXPECT_FALSE(parseProcStatus(""));
  EXPECT_FALSE(parseProcStatus("VmRSS:\t 12 kB\n"));
  EXPECT_FALSE(parseProcStatus("Threads:\tmany\n"));
  EXPECT_FALSE(parseProcStatus("Threads:\t-3\n"));
  EXPECT_FALSE(parseProcStatus("Threads:\t3\nVmRSS:\t lots kB\n"));
  // A key must match the whole name before the colon.
  EXPECT_FALSE(parseProcStatus("Threadsx:\t3\n"));
  auto s = parseProcStatus("Threads:\t3");  // no final newline
  ASSERT_TRUE(s);
  EXPECT_EQ(s->threads, 3);
}

TEST(ParseProcStat, PythonCpuSeconds) {
  auto cpu = parseProcStatCpuSeconds(fixture("stat_python.txt"), 100);
  ASSERT_TRUE(cpu);
  EXPECT_DOUBLE_EQ(*cpu, 0.23);  // utime 21 + stime 2 ticks
}

TEST(ParseProcStat, CommWithSpacesAndParenthesesIsSkippedFromTheLastParenthesis) {
  // comm is "a) (b c) d": splitting on spaces or on the first ')' would read the wrong fields.
  auto cpu = parseProcStatCpuSeconds(fixture("stat_weird_comm.txt"), 100);
  ASSERT_TRUE(cpu);
  EXPECT_DOUBLE_EQ(*cpu, 12.9);  // 1234 + 56 ticks
  auto other = parseProcStatCpuSeconds(fixture("stat_weird_comm.txt"), 1000);
  ASSERT_TRUE(other);
  EXPECT_DOUBLE_EQ(*other, 1.29);
}

TEST(ParseProcStat, Zombie) {
  auto cpu = parseProcStatCpuSeconds(fixture("stat_zombie.txt"), 100);
  ASSERT_TRUE(cpu);
  EXPECT_DOUBLE_EQ(*cpu, 0.0);
}

TEST(ParseProcStat, ParentAndGroupComeFromFieldsFourAndFive) {
  auto ids = parseProcStatIds(fixture("stat_weird_comm.txt"));
  ASSERT_TRUE(ids);
  EXPECT_EQ(ids->parent, 22924);
  EXPECT_EQ(ids->group, 22924);
  EXPECT_FALSE(parseProcStatIds("1 (x) R 7\n"));
  EXPECT_FALSE(parseProcStatIds("1 (x) R 7 -1 0\n"));
}

TEST(ProcReaderIds, OfThisProcessAndOfNone) {
  ProcReader reader;
  auto ids = reader.ids(::getpid());
  ASSERT_TRUE(ids);
  EXPECT_EQ(ids->parent, ::getppid());
  EXPECT_EQ(ids->group, ::getpgrp());
  EXPECT_FALSE(reader.ids(0));
  EXPECT_FALSE(reader.ids(4194304 + 1));  // above pid_max's ceiling: never a process
}

TEST(ParseProcStat, MalformedIsNullopt) {
  EXPECT_FALSE(parseProcStatCpuSeconds("", 100));
  EXPECT_FALSE(parseProcStatCpuSeconds("1 (x R 1 2 3", 100));               // no ')'
  EXPECT_FALSE(parseProcStatCpuSeconds("1 (x) R 1 2 3 4 5 6 7 8\n", 100));  // too short
  EXPECT_FALSE(parseProcStatCpuSeconds("1 (x) R 1 1 1 0 -1 0 0 0 0 0 ab 2 0\n", 100));
  EXPECT_FALSE(parseProcStatCpuSeconds(fixture("stat_python.txt"), 0));
}

TEST(CountLines, CountsAnUnterminatedLastLine) {
  EXPECT_EQ(countLines(""), 0u);
  EXPECT_EQ(countLines("a"), 1u);
  EXPECT_EQ(countLines("a\n"), 1u);
  EXPECT_EQ(countLines("a\nb"), 2u);
  EXPECT_EQ(countLines("\n\n"), 2u);
  EXPECT_EQ(countLines(fixture("maps_python.txt")), 79u);
}

// ---- ProcReader on a fake /proc ----

class FakeProc : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bulkhead-proc-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { fs::remove_all(root_); }

  void write(const fs::path& p, const std::string& text) {
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
  }

  fs::path root_;
};

TEST_F(FakeProc, ReadsEveryFieldAndCountsLargeMapsAcrossChunks) {
  write(root_ / "4242" / "status", fixture("status_python_4threads.txt"));
  write(root_ / "4242" / "stat", fixture("stat_weird_comm.txt"));
  // Far more than the reader's 64 KiB buffer, so the count spans several read() calls.
  std::string maps = fixture("maps_python.txt");
  std::string big;
  for (int i = 0; i < 40; ++i) big += maps;
  ASSERT_GT(big.size(), 3u * 64 * 1024);
  write(root_ / "4242" / "maps", big);
  for (int fd = 0; fd < 7; ++fd) write(root_ / "4242" / "fd" / std::to_string(fd), "");

  ProcReader reader(root_.string());
  auto s = reader.sample(4242, true);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->rssBytes, 62424u * 1024);
  EXPECT_EQ(s->threads, 4);
  EXPECT_EQ(s->maps, 79 * 40);
  EXPECT_EQ(s->fds, 7);
  EXPECT_NEAR(s->cpuSeconds, 1290.0 / ::sysconf(_SC_CLK_TCK), 1e-9);

  auto noMaps = reader.sample(4242, false);
  ASSERT_TRUE(noMaps);
  EXPECT_EQ(noMaps->maps, -1);
}

TEST_F(FakeProc, MissingPidOrFileOrZombieIsGone) {
  ProcReader reader(root_.string());
  EXPECT_FALSE(reader.sample(4242, false));
  EXPECT_FALSE(reader.sample(0, false));
  EXPECT_FALSE(reader.sample(-1, false));

  write(root_ / "7" / "status", fixture("status_python_4threads.txt"));  // no stat: exited midway
  EXPECT_FALSE(reader.sample(7, false));

  write(root_ / "8" / "status", fixture("status_zombie.txt"));
  write(root_ / "8" / "stat", fixture("stat_zombie.txt"));
  fs::create_directories(root_ / "8" / "fd");
  EXPECT_FALSE(reader.sample(8, true));

  write(root_ / "9" / "status", fixture("status_python_4threads.txt"));
  write(root_ / "9" / "stat", fixture("stat_python.txt"));
  write(root_ / "9" / "maps", fixture("maps_python.txt"));  // no fd dir: gone between reads
  EXPECT_FALSE(reader.sample(9, true));
}

TEST(ProcReaderRoot, MissingRootSamplesNothing) {
  ProcReader reader("/nonexistent/proc");
  EXPECT_FALSE(reader.sample(::getpid(), true));
}

// ---- ProcReader against real processes ----

using namespace std::chrono_literals;

// A forked child that runs a script of steps. Before each step it waits for a byte from the parent;
// after it, it writes one byte back. Closing the parent's end (or a missing byte) makes it exit.
// Pipes, not sleeps, tell the parent when the child is ready.
class ScriptedChild {
 public:
  explicit ScriptedChild(std::vector<std::function<void()>> steps) {
    int down[2], up[2];
    if (::pipe2(down, O_CLOEXEC) != 0 || ::pipe2(up, O_CLOEXEC) != 0) std::abort();
    pid_ = ::fork();
    if (pid_ < 0) std::abort();
    if (pid_ == 0) {
      ::close(down[1]);
      ::close(up[0]);
      if (::write(up[1], "r", 1) != 1) ::_exit(1);  // set up: the parent may start sampling
      for (auto& step : steps) {
        char c;
        if (::read(down[0], &c, 1) != 1) ::_exit(0);
        step();
        if (::write(up[1], "k", 1) != 1) ::_exit(1);
      }
      char c;
      while (::read(down[0], &c, 1) > 0) {
      }
      ::_exit(0);
    }
    ::close(down[0]);
    ::close(up[1]);
    down_ = down[1];
    up_ = up[0];
    started_ = awaitByte();
  }
  ~ScriptedChild() {
    if (down_ >= 0) ::close(down_);
    if (up_ >= 0) ::close(up_);
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      reap();
    }
  }

  pid_t pid() const { return pid_; }
  // Whether the child came up; each test asserts this first.
  ::testing::AssertionResult started() const { return started_; }

  // Runs the next step and waits (bounded) until the child reports it done.
  ::testing::AssertionResult step() {
    if (::write(down_, "g", 1) != 1) return ::testing::AssertionFailure() << "write failed";
    return awaitByte();
  }

  // Lets the child exit and waits until it is a zombie (exited, not reaped), bounded.
  ::testing::AssertionResult exitAndWaitUnreaped() {
    ::close(down_);
    down_ = -1;
    siginfo_t info{};
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    if (pidfd < 0) return ::testing::AssertionFailure() << "pidfd_open failed";
    pollfd p{pidfd, POLLIN, 0};
    int ready = ::poll(&p, 1, 10000);
    ::close(pidfd);
    if (ready != 1) return ::testing::AssertionFailure() << "child did not exit in 10s";
    if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOWAIT) != 0) {
      return ::testing::AssertionFailure() << "waitid failed";
    }
    return ::testing::AssertionSuccess();
  }

  void reap() {
    int status;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
  }

 private:
  ::testing::AssertionResult awaitByte() {
    pollfd p{up_, POLLIN, 0};
    if (::poll(&p, 1, 10000) != 1) return ::testing::AssertionFailure() << "child not ready in 10s";
    char c;
    if (::read(up_, &c, 1) != 1) return ::testing::AssertionFailure() << "child died";
    return ::testing::AssertionSuccess();
  }

  pid_t pid_ = -1;
  int down_ = -1;
  int up_ = -1;
  bool reaped_ = false;
  ::testing::AssertionResult started_ = ::testing::AssertionFailure();
};

int countMapsSlowly(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/maps");
  std::string line;
  int n = 0;
  while (std::getline(in, line)) ++n;
  return n;
}

int countFdsSlowly(pid_t pid) {
  int n = 0;
  for ([[maybe_unused]] auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    ++n;
  }
  return n;
}

TEST(ProcReaderReal, CountsThreads) {
  constexpr int kThreads = 5;
  int gate[2];
  ASSERT_EQ(::pipe2(gate, O_CLOEXEC), 0);
  ScriptedChild child({[&] {
    // Threads block on the gate pipe; they end with the child's _exit.
    for (int i = 0; i < kThreads; ++i) {
      std::thread([fd = gate[0]] {
        char c;
        while (::read(fd, &c, 1) != 0) {
        }
      }).detach();
    }
  }});
  ASSERT_TRUE(child.started());
  ::close(gate[0]);
  ::close(gate[1]);
  ProcReader reader;
  auto before = reader.sample(child.pid(), false);
  ASSERT_TRUE(before);
  EXPECT_EQ(before->threads, 1);
  ASSERT_TRUE(child.step());
  auto after = reader.sample(child.pid(), false);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->threads, kThreads + 1);
}

TEST(ProcReaderReal, CountsMapsExactly) {
  constexpr int kRegions = 200;
  const long page = ::sysconf(_SC_PAGESIZE);
  ScriptedChild child({[&] {
    // One reservation, with its first and last page unmapped again so it touches no neighbour
    // it could merge with, then split by mprotect into 2*kRegions alternating VMAs (neighbours
    // with different protections never merge): the map count grows by exactly 2*kRegions.
    char* base = static_cast<char*>(::mmap(nullptr, (2 * kRegions + 2) * page, PROT_NONE,
                                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (base == MAP_FAILED) ::_exit(2);
    if (::munmap(base, page) != 0 || ::munmap(base + (2 * kRegions + 1) * page, page) != 0) {
      ::_exit(3);
    }
    for (int i = 0; i < kRegions; ++i) {
      if (::mprotect(base + (1 + 2 * i) * page, page, PROT_READ) != 0) ::_exit(4);
    }
  }});
  ASSERT_TRUE(child.started());
  ProcReader reader;
  auto before = reader.sample(child.pid(), true);
  ASSERT_TRUE(before);
  EXPECT_EQ(before->maps, countMapsSlowly(child.pid()));
  ASSERT_TRUE(child.step());
  auto after = reader.sample(child.pid(), true);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->maps - before->maps, 2 * kRegions);
  EXPECT_EQ(after->maps, countMapsSlowly(child.pid()));
  EXPECT_EQ(reader.sample(child.pid(), false)->maps, -1);
}

TEST(ProcReaderReal, CountsFds) {
  constexpr int kFds = 20;
  ScriptedChild child({[&] {
    for (int i = 0; i < kFds; ++i) {
      if (::open("/dev/null", O_RDONLY) < 0) ::_exit(2);
    }
  }});
  ASSERT_TRUE(child.started());
  ProcReader reader;
  auto before = reader.sample(child.pid(), false);
  ASSERT_TRUE(before);
  EXPECT_EQ(before->fds, countFdsSlowly(child.pid()));
  ASSERT_TRUE(child.step());
  auto after = reader.sample(child.pid(), false);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->fds - before->fds, kFds);
  EXPECT_EQ(after->fds, countFdsSlowly(child.pid()));
}

double processCpuSeconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

TEST(ProcReaderReal, RssAndCpuTime) {
  constexpr std::size_t kBytes = 64u << 20;
  ScriptedChild child({[&] {
    char* p = static_cast<char*>(
        ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (p == MAP_FAILED) ::_exit(2);
    for (std::size_t i = 0; i < kBytes; i += 4096) p[i] = 1;
    // Burn CPU until the child itself has used 0.3 s (its own clock, not the wall clock).
    volatile unsigned long sink = 0;
    while (processCpuSeconds() < 0.3) {
      for (int i = 0; i < 100000; ++i) sink = sink + static_cast<unsigned long>(i);
    }
  }});
  ASSERT_TRUE(child.started());
  ProcReader reader;
  auto before = reader.sample(child.pid(), false);
  ASSERT_TRUE(before);
  ASSERT_TRUE(child.step());
  auto after = reader.sample(child.pid(), false);
  ASSERT_TRUE(after);
  EXPECT_GE(after->rssBytes, before->rssBytes + kBytes);
  EXPECT_GE(after->cpuSeconds, 0.25);  // tick granularity (10 ms at CLK_TCK 100)
  EXPECT_LT(after->cpuSeconds, 30.0);
}

TEST(ProcReaderReal, ExitedButUnreapedAndReapedAreGone) {
  ScriptedChild child({});
  ASSERT_TRUE(child.started());
  ProcReader reader;
  ASSERT_TRUE(reader.sample(child.pid(), true));
  ASSERT_TRUE(child.exitAndWaitUnreaped());
  EXPECT_FALSE(reader.sample(child.pid(), true));  // zombie
  child.reap();
  EXPECT_FALSE(reader.sample(child.pid(), true));  // no such pid (until it is reused)
}

TEST(ProcReaderReal, SamplesItself) {
  ProcReader reader;
  auto s = reader.sample(::getpid(), true);
  ASSERT_TRUE(s);
  EXPECT_GT(s->rssBytes, 0u);
  EXPECT_GE(s->threads, 1);
  EXPECT_GT(s->maps, 5);
  EXPECT_GE(s->fds, 3);
}

}  // namespace
}  // namespace bulkhead::os
