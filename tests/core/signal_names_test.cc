// The core names signals by their Linux numbers without including an OS header: the numbers it
// wrote down must be the ones this machine's <csignal> defines.

#include "core/signal_names.h"

#include <gtest/gtest.h>

#include <csignal>

namespace bulkhead::core {
namespace {

TEST(SignalNames, MatchTheNumbersOfThisMachine) {
  EXPECT_EQ(signalName(SIGHUP), "SIGHUP");
  EXPECT_EQ(signalName(SIGINT), "SIGINT");
  EXPECT_EQ(signalName(SIGQUIT), "SIGQUIT");
  EXPECT_EQ(signalName(SIGILL), "SIGILL");
  EXPECT_EQ(signalName(SIGTRAP), "SIGTRAP");
  EXPECT_EQ(signalName(SIGABRT), "SIGABRT");
  EXPECT_EQ(signalName(SIGBUS), "SIGBUS");
  EXPECT_EQ(signalName(SIGFPE), "SIGFPE");
  EXPECT_EQ(signalName(SIGKILL), "SIGKILL");
  EXPECT_EQ(signalName(SIGUSR1), "SIGUSR1");
  EXPECT_EQ(signalName(SIGSEGV), "SIGSEGV");
  EXPECT_EQ(signalName(SIGUSR2), "SIGUSR2");
  EXPECT_EQ(signalName(SIGPIPE), "SIGPIPE");
  EXPECT_EQ(signalName(SIGALRM), "SIGALRM");
  EXPECT_EQ(signalName(SIGTERM), "SIGTERM");
  EXPECT_EQ(signalName(SIGCHLD), "SIGCHLD");
  EXPECT_EQ(signalName(SIGCONT), "SIGCONT");
  EXPECT_EQ(signalName(SIGSTOP), "SIGSTOP");
  EXPECT_EQ(signalName(SIGTSTP), "SIGTSTP");
  EXPECT_EQ(signalName(SIGXCPU), "SIGXCPU");
  EXPECT_EQ(signalName(SIGXFSZ), "SIGXFSZ");
  EXPECT_EQ(signalName(SIGSYS), "SIGSYS");
  EXPECT_EQ(signalName(64), "SIG64");
}

}  // namespace
}  // namespace bulkhead::core
