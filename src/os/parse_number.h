#pragma once
// Numbers in kernel text (/proc, cgroup files): the whole field or nothing, so "12abc" or an
// empty field is refused instead of read as 12 or 0.

#include <charconv>
#include <optional>
#include <string_view>

namespace bulkhead::os {

template <typename T>
std::optional<T> parseWhole(std::string_view s) {
  T value{};
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return value;
}

}  // namespace bulkhead::os
