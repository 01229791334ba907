#pragma once
// The event stream behind GET /v1/events: every pool's events with one global, increasing id, the
// last kEventsKept of them kept for subscribers that reconnect with ?since. Owns: ids, the bounded
// log and the subscribers. May not touch: pools, workers or the clock; the supervisor renders each
// event and publishes it here.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <utility>

namespace bulkhead::runtime {

class EventFeed {
 public:
  using Sink = std::function<void(std::uint64_t id, const nlohmann::json& event)>;
  static constexpr std::size_t kEventsKept = 1024;

  // Gives the event the next id, keeps it and hands it to every subscriber.
  std::uint64_t publish(nlohmann::json event);
  // A subscriber first gets the kept events with id > since, then each new one as it happens.
  int subscribe(std::uint64_t since, Sink sink);
  void unsubscribe(int subscription) { sinks_.erase(subscription); }

 private:
  std::deque<std::pair<std::uint64_t, nlohmann::json>> log_;
  std::uint64_t nextId_ = 1;
  std::map<int, Sink> sinks_;
  int nextSubscription_ = 1;
};

}  // namespace bulkhead::runtime
