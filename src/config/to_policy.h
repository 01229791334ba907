#pragma once
// The one place a pool's configuration becomes the policy the core runs (core::PoolPolicy).
// Owns: the field-by-field mapping from config to policy. May not touch: anything at run time;
// whoever needs a pool's limits later (the API views, metrics) reads them from the policy, so the
// two can never disagree.

#include "config/config.h"
#include "core/pool.h"

namespace bulkhead::config {

// `pools`: how many pools the daemon runs (a job's fallback hops are bounded by it).
core::PoolPolicy toPolicy(const PoolConfig& pool, const ServerConfig& server,
                          std::size_t pools = 1);

}  // namespace bulkhead::config
