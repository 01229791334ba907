#pragma once
// Pure parsers for the config's human units: durations ("250ms", "30s", "2m", "1h") and sizes
// ("512MiB", "4GiB", "100KB", "4096").

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace bulkhead::config {

std::optional<std::chrono::nanoseconds> parseDuration(std::string_view text);
std::optional<std::uint64_t> parseSize(std::string_view text);

}  // namespace bulkhead::config
