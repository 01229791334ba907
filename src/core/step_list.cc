// parseStepList: see step_list.h.

#include "core/step_list.h"

#include <charconv>
#include <optional>
#include <set>

namespace bulkhead::core {

namespace {

std::optional<long long> decimal(std::string_view text) {
  if (text.empty() || text.size() > 9) return std::nullopt;
  long long value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

bool isValidStepName(std::string_view name) {
  if (name.empty() || name.size() > 64 || name[0] == '.' || name[0] == '-') return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::variant<std::vector<std::string>, StepListError> parseStepList(std::string_view text) {
  std::vector<std::string> steps;
  std::set<std::string> seen;
  auto add = [&](std::string name) -> std::optional<StepListError> {
    if (!seen.insert(name).second) return StepListError{"step '" + name + "' is listed twice"};
    if (steps.size() >= kMaxSteps) {
      return StepListError{"more than " + std::to_string(kMaxSteps) + " steps"};
    }
    steps.push_back(std::move(name));
    return std::nullopt;
  };
  if (text.empty()) return StepListError{"no steps given"};
  std::size_t begin = 0;
  while (begin <= text.size()) {
    std::size_t comma = text.find(',', begin);
    std::string_view item = text.substr(
        begin, comma == std::string_view::npos ? std::string_view::npos : comma - begin);
    begin = comma == std::string_view::npos ? text.size() + 1 : comma + 1;
    if (item.empty()) return StepListError{"empty item in step list '" + std::string(text) + "'"};
    auto dash = item.find('-');
    if (dash != std::string_view::npos && dash > 0) {
      auto from = decimal(item.substr(0, dash));
      auto to = decimal(item.substr(dash + 1));
      if (from && to) {
        if (*from > *to) {
          return StepListError{"range '" + std::string(item) + "' goes backwards"};
        }
        if (*to - *from >= static_cast<long long>(kMaxSteps)) {
          return StepListError{"range '" + std::string(item) + "' has more than " +
                               std::to_string(kMaxSteps) + " steps"};
        }
        for (long long i = *from; i <= *to; ++i) {
          if (auto error = add(std::to_string(i))) return *error;
        }
        continue;
      }
    }
    if (!isValidStepName(item)) {
      return StepListError{"bad step name '" + std::string(item) +
                           "' (1-64 of A-Z a-z 0-9 _ . -, not starting with '.' or '-')"};
    }
    if (auto error = add(std::string(item))) return *error;
  }
  return steps;
}

}  // namespace bulkhead::core
