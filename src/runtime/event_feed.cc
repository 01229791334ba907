#include "runtime/event_feed.h"

#include <vector>

namespace bulkhead::runtime {

std::uint64_t EventFeed::publish(nlohmann::json event) {
  const std::uint64_t id = nextId_++;
  log_.emplace_back(id, std::move(event));
  if (log_.size() > kEventsKept) log_.pop_front();
  const nlohmann::json& kept = log_.back().second;
  // A sink may unsubscribe itself (its connection failed): iterate over a copy of the keys.
  std::vector<int> subscribers;
  for (const auto& [sub, sink] : sinks_) subscribers.push_back(sub);
  for (int sub : subscribers) {
    auto it = sinks_.find(sub);
    if (it != sinks_.end()) it->second(id, kept);
  }
  return id;
}

int EventFeed::subscribe(std::uint64_t since, Sink sink) {
  for (const auto& [id, event] : log_) {
    if (id > since) sink(id, event);
  }
  const int subscription = nextSubscription_++;
  sinks_.emplace(subscription, std::move(sink));
  return subscription;
}

}  // namespace bulkhead::runtime
