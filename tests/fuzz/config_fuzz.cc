// libFuzzer target: config files are untrusted input. Any text yields a config or errors that
// name the file; never a crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto result = bulkhead::config::loadConfigText(text, "/fuzz/bulkhead.toml");
  if (!result.config && result.errors.empty()) __builtin_trap();  // a refusal always says why
  for (const auto& e : result.errors) {
    if (e.describe().rfind("/fuzz/bulkhead.toml", 0) != 0) __builtin_trap();
  }
  return 0;
}
