#pragma once
// Fallback routing: where a job goes when its pool's breaker is open (a simpler model behind a
// fragile one). Pure policy: core::Pool answers Resubmit where this says go; the shell submits.
//
// The bound, stated truthfully: a job makes at most as many hops as there are pools, counted over
// its whole route. It is not "at most once per pool": with a -> b -> a configured, a job whose
// pools all have open breakers may pass through a pool again, but a route can never loop forever.

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace bulkhead::core {

struct FallbackRoute {
  std::string pool;  // the pool to resubmit the job to
};

// `fallback` is the finishing pool's configured fallback ("" for none); `hops` how many times this
// job was rerouted already; `pools` how many pools the daemon runs.
inline std::optional<FallbackRoute> fallbackRoute(bool breakerOpen, const std::string& fallback,
                                                  int hops, std::size_t pools) {
  if (!breakerOpen || fallback.empty()) return std::nullopt;
  if (hops < 0 || static_cast<std::size_t>(hops) >= pools) return std::nullopt;
  return FallbackRoute{fallback};
}

}  // namespace bulkhead::core
