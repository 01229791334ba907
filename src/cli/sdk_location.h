#pragma once
// Where the worker SDK (the `bulkhead` Python package put on every worker's PYTHONPATH) lives.

#include <string>

namespace bulkhead::cli {

// In order: $BULKHEAD_SDK_DIR; the installed layout, relative to this binary (/usr/bin/bulkhead
// -> /usr/lib/python3/dist-packages, /usr/local/bin -> /usr/local/lib/python3.X/dist-packages); the
// checkout this binary was built from (build/bulkhead -> python/). The first that holds
// bulkhead/worker.py; "" when none does.
std::string locateSdkDirectory();

}  // namespace bulkhead::cli
