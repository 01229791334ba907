#include "runtime/event_feed.h"

#include <gtest/gtest.h>

#include <vector>

namespace bulkhead::runtime {
namespace {

using nlohmann::json;

TEST(EventFeed, IdsIncreaseAndSubscribersGetEachNewEvent) {
  EventFeed feed;
  std::vector<std::uint64_t> seen;
  feed.subscribe(0, [&](std::uint64_t id, const json&) { seen.push_back(id); });
  EXPECT_EQ(feed.publish({{"kind", "a"}}), 1u);
  EXPECT_EQ(feed.publish({{"kind", "b"}}), 2u);
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{1, 2}));
}

TEST(EventFeed, ASubscriberFirstGetsTheKeptEventsAfterSince) {
  EventFeed feed;
  for (int i = 0; i < 3; ++i) feed.publish({{"n", i}});
  std::vector<int> seen;
  feed.subscribe(1, [&](std::uint64_t, const json& e) { seen.push_back(e["n"].get<int>()); });
  EXPECT_EQ(seen, (std::vector<int>{1, 2}));
}

TEST(EventFeed, KeepsOnlyTheLastEvents) {
  EventFeed feed;
  for (std::size_t i = 0; i < EventFeed::kEventsKept + 5; ++i) feed.publish(json::object());
  std::uint64_t first = 0;
  std::size_t count = 0;
  feed.subscribe(0, [&](std::uint64_t id, const json&) {
    if (count++ == 0) first = id;
  });
  EXPECT_EQ(count, EventFeed::kEventsKept);
  EXPECT_EQ(first, 6u);
}

TEST(EventFeed, ASinkMayUnsubscribeItselfWhileBeingCalled) {
  EventFeed feed;
  int calls = 0, others = 0;
  int self = 0;
  self = feed.subscribe(0, [&](std::uint64_t, const json&) {
    ++calls;
    feed.unsubscribe(self);
  });
  feed.subscribe(0, [&](std::uint64_t, const json&) { ++others; });
  feed.publish(json::object());
  feed.publish(json::object());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(others, 2);
}

}  // namespace
}  // namespace bulkhead::runtime
