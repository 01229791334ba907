#pragma once
// The one list of configuration keys the parser accepts, per section. The loader rejects any key
// not listed here, and tests/config/config_docs_test.cc checks docs/config.md against it, so a key
// added to the parser without documentation (or documented without existing) fails a test.

#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::config {

struct KnownKey {
  std::string_view section;  // "server", "pool" (any [pool.NAME]) or "pool.breaker"
  std::string_view key;
};

// Every key of every section, in the order docs/config.md lists them. `pool.env` is not here: its
// keys are the worker's environment variable names, whatever they are.
const std::vector<KnownKey>& knownKeys();

// The keys of one section, for rejecting unknown ones.
std::set<std::string> knownKeysOf(std::string_view section);

}  // namespace bulkhead::config
