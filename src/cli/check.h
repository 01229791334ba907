#pragma once
// `bulkhead check` beyond parsing: each pool's interpreter is an executable file, and with
// `--import` each pool's handler, preload and init import in a throwaway process started like a
// worker (same interpreter, environment and spawn path), so an ImportError shows here rather than
// as a pool that never gets ready.

#include <string>
#include <vector>

#include "config/config.h"

namespace bulkhead::cli {

// Checks every pool of a loaded config; prints each problem as "file:line: pool.NAME.KEY: ..."
// on stderr. `environment` and `sdkDirectory` are what workers would get (as for `bulkhead env`).
bool checkPools(const std::string& path, const config::Config& config, bool imports,
                const std::vector<std::string>& environment, const std::string& sdkDirectory);

}  // namespace bulkhead::cli
