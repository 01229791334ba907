// api::serviceStatusOf: when READY=1 may be sent and what STATUS= says.

#include "api/service_status.h"

#include <gtest/gtest.h>

namespace bulkhead::api {
namespace {

using nlohmann::json;
using std::chrono::seconds;

json pool(const std::string& name, int ready, int target, bool unavailable = false) {
  return {{"name", name},           {"ready_workers", ready}, {"workers_target", target},
          {"queue_length", 2},      {"in_flight", 1},         {"unavailable", unavailable},
          {"counters", {{"ok", 5}}}};
}

TEST(ServiceStatus, SettledOnlyWhenEveryPoolHasAReadyWorker) {
  json snapshot = {{"pools", {pool("faces", 1, 2), pool("clip", 0, 1)}}};
  std::map<std::string, std::chrono::nanoseconds> timeouts{{"faces", seconds(60)},
                                                           {"clip", seconds(60)}};
  auto status = serviceStatusOf(snapshot, seconds(1), timeouts);
  EXPECT_FALSE(status.settled);
  EXPECT_EQ(status.line, "2 pools, 1/3 workers ready, 4 queued, 2 running, 10 ok; starting: clip");
  snapshot["pools"][1]["ready_workers"] = 1;
  status = serviceStatusOf(snapshot, seconds(1), timeouts);
  EXPECT_TRUE(status.settled);
  EXPECT_EQ(status.line, "2 pools, 2/3 workers ready, 4 queued, 2 running, 10 ok");
}

TEST(ServiceStatus, APoolStillStartingIsWaitedForUpToItsOwnStartupTimeout) {
  json snapshot = {{"pools", {pool("slow", 0, 1), pool("fast", 1, 1)}}};
  std::map<std::string, std::chrono::nanoseconds> timeouts{{"slow", seconds(30)},
                                                           {"fast", seconds(5)}};
  EXPECT_FALSE(serviceStatusOf(snapshot, seconds(29), timeouts).settled);
  EXPECT_TRUE(serviceStatusOf(snapshot, seconds(30), timeouts).settled);
}

TEST(ServiceStatus, APoolThatGaveUpStartingDoesNotHoldReadyBack) {
  json snapshot = {{"pools", {pool("broken", 0, 2, /*unavailable=*/true)}}};
  auto status = serviceStatusOf(snapshot, seconds(1), {{"broken", seconds(60)}});
  EXPECT_TRUE(status.settled);
  EXPECT_EQ(status.line, "1 pool, 0/2 workers ready, 2 queued, 1 running, 5 ok");
}

TEST(ServiceStatus, NoPoolsIsSettledAtOnce) {
  EXPECT_TRUE(serviceStatusOf({{"pools", json::array()}}, seconds(0), {}).settled);
}

}  // namespace
}  // namespace bulkhead::api
