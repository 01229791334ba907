#pragma once
#include <string>

namespace bulkhead::core {
// "SIGABRT" for 6, "SIG37" for numbers without a name.
std::string signalName(int signal);
}  // namespace bulkhead::core
