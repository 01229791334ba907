#pragma once
// Pure parsers for the config's human units: durations ("250ms", "30s", "2m", "1h") and sizes
// ("512MiB", "4GiB", "100KB", "4096").

#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace bulkhead::config {

std::optional<std::chrono::nanoseconds> parseDuration(std::string_view text);

// What "off" means for a timeout that may be turned off (job_timeout, queue_timeout): a century,
// so deadline arithmetic (now + timeout) stays plain and cannot overflow.
inline constexpr std::chrono::nanoseconds kTimeoutOff = std::chrono::hours(24 * 365 * 100);
std::optional<std::uint64_t> parseSize(std::string_view text);

}  // namespace bulkhead::config
