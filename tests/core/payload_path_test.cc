// core/payload_path.h: from which size a job's payload travels to its worker as a memfd.

#include "core/payload_path.h"

#include <gtest/gtest.h>

namespace bulkhead::core {
namespace {

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * kKiB;

TEST(PayloadPath, AMemoryviewHandlerGetsMemfdsFromMemfdThreshold) {
  EXPECT_EQ(payloadMemfdFrom(256 * kKiB, 16 * kMiB, true), 256 * kKiB);
}

TEST(PayloadPath, UnknownHandlersKeepTheConfiguredThreshold) {
  // No READY said it yet (none READY, an older SDK): as configured, as before payload_view.
  EXPECT_EQ(payloadMemfdFrom(256 * kKiB, 16 * kMiB, std::nullopt), 256 * kKiB);
}

TEST(PayloadPath, ABytesHandlerGetsPayloadsInlineBelowTheResultThreshold) {
  EXPECT_EQ(payloadMemfdFrom(256 * kKiB, 16 * kMiB, false), 16 * kMiB);
  // A result threshold under memfd_threshold does not bring memfds earlier than configured.
  EXPECT_EQ(payloadMemfdFrom(4 * kMiB, 1 * kMiB, false), 4 * kMiB);
}

TEST(PayloadPath, ZeroThresholdsMeanNever) {
  // memfd_threshold = 0 turns memfds off both ways, whatever the handler takes.
  EXPECT_EQ(payloadMemfdFrom(0, 16 * kMiB, false), 0u);
  EXPECT_EQ(payloadMemfdFrom(0, 16 * kMiB, true), 0u);
  // memfd_result_threshold = 0 (no result memfds) leaves a bytes handler's payloads as
  // configured, so large ones still stay out of the daemon's heap.
  EXPECT_EQ(payloadMemfdFrom(256 * kKiB, 0, false), 256 * kKiB);
}

}  // namespace
}  // namespace bulkhead::core
