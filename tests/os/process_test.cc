// Real processes: fd layout, exec failures, process groups, reaping.

#include "os/process.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>

namespace bulkhead::os {
namespace {

using namespace std::chrono_literals;

// Reads fd until EOF or the deadline; fails the test on timeout.
std::string readAll(int fd, std::chrono::milliseconds limit = 5000ms) {
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      ADD_FAILURE() << "timed out reading; got so far: " << out;
      return out;
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      out.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EAGAIN) continue;
    return out;
  }
}

int waitFor(pid_t pid) {
  int status = 0;
  // The child is bounded by what it runs (each test's script ends by itself or is killed).
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

SpawnSpec shell(const std::string& script) {
  SpawnSpec spec;
  spec.executable = "/bin/sh";
  spec.argv = {"sh", "-c", script};
  spec.env = {"PATH=/usr/bin:/bin"};
  return spec;
}

TEST(Spawn, ChildSeesExactlyTheDocumentedFds) {
  auto r =
      spawnWorker(shell("ls /proc/self/fd | sort -n | tr '\\n' ' '; readlink /proc/self/fd/0"));
  ASSERT_TRUE(std::holds_alternative<WorkerProcess>(r));
  auto& p = std::get<WorkerProcess>(r);
  std::string out = readAll(p.stdoutRead.get());
  // ls itself opens one directory fd (the highest number); everything else is ours.
  EXPECT_EQ(out.substr(0, 10), "0 1 2 3 4 ") << out;
  EXPECT_NE(out.find("/dev/null"), std::string::npos) << out;
  EXPECT_TRUE(WIFEXITED(waitFor(p.pid)));
}

TEST(SpawnCommand, ACommandSeesOnlyStdinStdoutStderr) {
  auto r = spawnCommand(
      shell("ls /proc/self/fd | sort -n | tr '\\n' ' '; readlink /proc/self/fd/0; echo e >&2"));
  ASSERT_TRUE(std::holds_alternative<CommandProcess>(r));
  auto& p = std::get<CommandProcess>(r);
  std::string out = readAll(p.stdoutRead.get());
  // ls's own directory fd is 3: no control socket or stacks pipe leaks into a plain command.
  EXPECT_EQ(out.substr(0, 8), "0 1 2 3 ") << out;
  EXPECT_EQ(out.find(" 4 "), std::string::npos) << out;
  EXPECT_NE(out.find("/dev/null"), std::string::npos) << out;
  EXPECT_EQ(readAll(p.stderrRead.get()), "e\n");
  EXPECT_EQ(::getpgid(p.pid), p.pid) << "its own process group";
  EXPECT_TRUE(WIFEXITED(waitFor(p.pid)));
}

TEST(SpawnCommand, AMissingExecutableIsASpawnError) {
  SpawnSpec spec = shell("true");
  spec.executable = "/no/such/program";
  auto r = spawnCommand(spec);
  ASSERT_TRUE(std::holds_alternative<SpawnError>(r));
  EXPECT_EQ(std::get<SpawnError>(r).stage, "exec");
}

TEST(Spawn, ControlSocketAndStacksPipeReachTheChild) {
  auto r = spawnWorker(shell("echo hi >&3; echo stack >&4; echo err >&2"));
  ASSERT_TRUE(std::holds_alternative<WorkerProcess>(r));
  auto& p = std::get<WorkerProcess>(r);
  EXPECT_EQ(readAll(p.control.get()), "hi\n");
  EXPECT_EQ(readAll(p.stacksRead.get()), "stack\n");
  EXPECT_EQ(readAll(p.stderrRead.get()), "err\n");
  waitFor(p.pid);
}

TEST(Spawn, ExecFailureIsReportedWithItsErrno) {
  SpawnSpec spec;
  spec.executable = "/nonexistent/python";
  spec.argv = {"python"};
  auto r = spawnWorker(spec);
  ASSERT_TRUE(std::holds_alternative<SpawnError>(r));
  EXPECT_EQ(std::get<SpawnError>(r).stage, "exec");
  EXPECT_EQ(std::get<SpawnError>(r).error, ENOENT);
}

TEST(Spawn, ChildLeadsItsOwnProcessGroup) {
  auto r = spawnWorker(shell("cut -d' ' -f5 /proc/self/stat; echo $$"));
  ASSERT_TRUE(std::holds_alternative<WorkerProcess>(r));
  auto& p = std::get<WorkerProcess>(r);
  std::string out = readAll(p.stdoutRead.get());
  // cut's pgid (field 5) is the shell's pid: the shell leads the group.
  EXPECT_EQ(out, std::to_string(p.pid) + "\n" + std::to_string(p.pid) + "\n");
  waitFor(p.pid);
}

TEST(Spawn, KillingTheGroupTakesGrandchildrenHoldingThePipes) {
  // The grandchild keeps stdout open; it writes its pid first so we can check it is gone.
  auto r = spawnWorker(shell("sleep 1000 & echo $!; exec sleep 1000"));
  ASSERT_TRUE(std::holds_alternative<WorkerProcess>(r));
  auto& p = std::get<WorkerProcess>(r);
  std::string line;
  char c;
  pollfd pfd{p.stdoutRead.get(), POLLIN, 0};
  while (line.find('\n') == std::string::npos) {
    ASSERT_GT(::poll(&pfd, 1, 5000), 0) << "no grandchild pid";
    if (::read(p.stdoutRead.get(), &c, 1) == 1) line.push_back(c);
  }
  pid_t grandchild = std::stoi(line);
  ASSERT_EQ(::kill(grandchild, 0), 0);
  ASSERT_TRUE(signalProcessGroup(p.pid, SIGKILL));
  EXPECT_TRUE(WIFSIGNALED(waitFor(p.pid)));
  // EOF arrives only once every holder of the pipe is dead: readAll fails the test on timeout
  // if the grandchild survived the group kill.
  EXPECT_EQ(readAll(p.stdoutRead.get()), "");
}

TEST(Spawn, PidfdSignalsTheRightProcess) {
  auto r = spawnWorker(shell("exec sleep 1000"));
  ASSERT_TRUE(std::holds_alternative<WorkerProcess>(r));
  auto& p = std::get<WorkerProcess>(r);
  ASSERT_TRUE(p.pidfd.valid());
  EXPECT_TRUE(signalViaPidfd(p.pidfd.get(), SIGTERM));
  int status = waitFor(p.pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
}

TEST(Spawn, SignalProcessUsesThePidfd) {
  auto r = spawnWorker(shell("exec sleep 1000"));
  ASSERT_TRUE(std::holds_alternative<WorkerProcess>(r));
  auto& p = std::get<WorkerProcess>(r);
  ASSERT_TRUE(p.pidfd.valid());
  EXPECT_TRUE(signalProcess(p.pid, p.pidfd.get(), SIGTERM));
  int status = waitFor(p.pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
}

// A kernel without pidfds leaves the handle invalid: the unreaped child is signalled by pid.
TEST(Spawn, SignalProcessWithoutAPidfdUsesThePid) {
  auto r = spawnWorker(shell("exec sleep 1000"));
  ASSERT_TRUE(std::holds_alternative<WorkerProcess>(r));
  auto& p = std::get<WorkerProcess>(r);
  EXPECT_TRUE(signalProcess(p.pid, -1, SIGTERM));
  int status = waitFor(p.pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
}

TEST(Spawn, SignalProcessNeverSignalsEveryProcessOrInit) {
  EXPECT_FALSE(signalProcess(-1, -1, 0));
  EXPECT_FALSE(signalProcess(0, -1, 0));
  EXPECT_FALSE(signalProcess(1, -1, 0));
}

TEST(Reap, ReturnsEveryExitedChildWithItsStatus) {
  auto a = spawnWorker(shell("exit 7"));
  auto b = spawnWorker(shell("kill -ABRT $$"));
  ASSERT_TRUE(std::holds_alternative<WorkerProcess>(a));
  ASSERT_TRUE(std::holds_alternative<WorkerProcess>(b));
  pid_t pa = std::get<WorkerProcess>(a).pid, pb = std::get<WorkerProcess>(b).pid;
  // Wait for both to exit without reaping them (WNOWAIT), then reap through the loop.
  siginfo_t info;
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(pa), &info, WEXITED | WNOWAIT), 0);
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(pb), &info, WEXITED | WNOWAIT), 0);
  auto reaped = reapExitedChildren();
  int found = 0;
  for (const auto& e : reaped) {
    if (e.pid == pa) {
      EXPECT_EQ(WEXITSTATUS(e.rawStatus), 7);
      ++found;
    }
    if (e.pid == pb) {
      EXPECT_EQ(WTERMSIG(e.rawStatus), SIGABRT);
      ++found;
    }
  }
  EXPECT_EQ(found, 2);
}

// Zygote mode: the worker's ends travel over a socket with SCM_RIGHTS and still work there.
TEST(Channels, FdsSentWithAFrameArriveWithItsFirstByteAndStayConnected) {
  auto made = makeWorkerChannels();
  ASSERT_TRUE(std::holds_alternative<WorkerChannels>(made));
  auto& channels = std::get<WorkerChannels>(made);
  int carrier[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, carrier), 0);
  UniqueFd sender(carrier[0]), receiver(carrier[1]);
  const std::string frame = "FORK-frame-bytes";
  ASSERT_EQ(
      sendWithFds(sender.get(), frame, {channels.controlTheirs.get(), channels.stderrWrite.get()}),
      static_cast<long>(frame.size()));
  channels.controlTheirs.reset();  // the message in flight holds its own references
  channels.stderrWrite.reset();

  char data[64];
  iovec iov{data, sizeof data};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n = ::recvmsg(receiver.get(), &msg, MSG_CMSG_CLOEXEC);
  ASSERT_EQ(std::string(data, static_cast<std::size_t>(n)), frame);
  cmsghdr* header = CMSG_FIRSTHDR(&msg);
  ASSERT_NE(header, nullptr);
  ASSERT_EQ(header->cmsg_type, SCM_RIGHTS);
  ASSERT_EQ(header->cmsg_len, CMSG_LEN(sizeof(int) * 2));
  int fds[2];
  std::memcpy(fds, CMSG_DATA(header), sizeof fds);
  UniqueFd control0(fds[0]), stderr0(fds[1]);

  ASSERT_EQ(::write(control0.get(), "hi", 2), 2);
  control0.reset();  // our end then reads "hi" and EOF
  EXPECT_EQ(readAll(channels.ours.control.get()), "hi");
  ASSERT_EQ(::write(stderr0.get(), "boom", 4), 4);
  stderr0.reset();  // the last write end: our read end sees EOF
  EXPECT_EQ(readAll(channels.ours.stderrRead.get()), "boom");
}

TEST(Channels, SendingToAPeerThatIsGoneFailsWithoutSigpipe) {
  int carrier[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, carrier), 0);
  UniqueFd sender(carrier[0]);
  ::close(carrier[1]);
  EXPECT_EQ(sendWithFds(sender.get(), "x", {}), -1);
  EXPECT_EQ(errno, EPIPE);
}

TEST(Pidfd, OpensForALiveChildAndNotForAReapedOne) {
  auto r = spawnWorker(shell("exit 0"));
  ASSERT_TRUE(std::holds_alternative<WorkerProcess>(r));
  pid_t pid = std::get<WorkerProcess>(r).pid;
  siginfo_t info;
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT), 0);
  EXPECT_TRUE(openPidfd(pid).valid());  // a zombie still has its pid
  waitFor(pid);
  EXPECT_FALSE(openPidfd(pid).valid());
}

TEST(Signal, NeverSignalsEveryProcess) {
  EXPECT_FALSE(signalProcessGroup(0, 0));
  EXPECT_FALSE(signalProcessGroup(1, 0));
}

}  // namespace
}  // namespace bulkhead::os
