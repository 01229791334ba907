#include "config/units.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <string>

namespace bulkhead::config {

namespace {

// Splits "1.5s" into 1.5 and "s"; false when the number part is missing or malformed.
bool splitNumber(std::string_view text, double& number, std::string_view& unit) {
  std::size_t i = 0;
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  std::size_t start = i;
  bool digits = false, dot = false;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) {
    if (text[i] == '.') {
      if (dot) return false;
      dot = true;
    } else {
      digits = true;
    }
    ++i;
  }
  if (!digits) return false;
  // strtod, not stod: a thousand digits must be a refusal, not an out_of_range exception.
  number = std::strtod(std::string(text.substr(start, i - start)).c_str(), nullptr);
  while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
  unit = text.substr(i);
  while (!unit.empty() && std::isspace(static_cast<unsigned char>(unit.back()))) {
    unit.remove_suffix(1);
  }
  return true;
}

}  // namespace

std::optional<std::chrono::nanoseconds> parseDuration(std::string_view text) {
  double number = 0;
  std::string_view unit;
  if (!splitNumber(text, number, unit)) return std::nullopt;
  double nanos = 0;
  if (unit == "ns")
    nanos = number;
  else if (unit == "us")
    nanos = number * 1e3;
  else if (unit == "ms")
    nanos = number * 1e6;
  else if (unit == "s")
    nanos = number * 1e9;
  else if (unit == "m" || unit == "min")
    nanos = number * 60e9;
  else if (unit == "h")
    nanos = number * 3600e9;
  else
    return std::nullopt;
  if (!std::isfinite(nanos) || nanos > 1e18) return std::nullopt;
  return std::chrono::nanoseconds(static_cast<std::int64_t>(nanos));
}

std::optional<std::uint64_t> parseSize(std::string_view text) {
  double number = 0;
  std::string_view unit;
  if (!splitNumber(text, number, unit)) return std::nullopt;
  double factor = 0;
  if (unit.empty() || unit == "B")
    factor = 1;
  else if (unit == "KiB")
    factor = 1024.0;
  else if (unit == "MiB")
    factor = 1024.0 * 1024;
  else if (unit == "GiB")
    factor = 1024.0 * 1024 * 1024;
  else if (unit == "TiB")
    factor = 1024.0 * 1024 * 1024 * 1024;
  else if (unit == "KB" || unit == "kB")
    factor = 1e3;
  else if (unit == "MB")
    factor = 1e6;
  else if (unit == "GB")
    factor = 1e9;
  else if (unit == "TB")
    factor = 1e12;
  else
    return std::nullopt;
  double bytes = number * factor;
  if (!std::isfinite(bytes) || bytes > 1.8e19) return std::nullopt;
  return static_cast<std::uint64_t>(bytes);
}

}  // namespace bulkhead::config
