#pragma once
// The --steps argument of `bulkhead run`: ranges and lists ("1-3", "a,b,c", "1-3,7") turned into
// the ordered step names. Pure; errors come back as text for a usage message (exit 2).

#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace bulkhead::core {

inline constexpr std::size_t kMaxSteps = 10000;

struct StepListError {
  std::string message;
};

// Items are separated by ','. An item "A-B" with A and B decimal integers (A <= B) is the range
// A..B; any other item is one step name of 1-64 characters from [A-Za-z0-9_.-], not starting
// with '.' or '-' (a name is used in file and cgroup names). Duplicates, empty items and more
// than kMaxSteps steps are errors.
std::variant<std::vector<std::string>, StepListError> parseStepList(std::string_view text);

// True for a valid single step name (see above).
bool isValidStepName(std::string_view name);

}  // namespace bulkhead::core
