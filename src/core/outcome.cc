#include "core/outcome.h"

namespace bulkhead::core {

std::string_view outcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kOk:
      return "ok";
    case Outcome::kHandlerError:
      return "handler_error";
    case Outcome::kCrashed:
      return "crashed";
    case Outcome::kTimedOut:
      return "timed_out";
    case Outcome::kHung:
      return "hung";
    case Outcome::kOomKilled:
      return "oom_killed";
    case Outcome::kResourceExhausted:
      return "resource_exhausted";
    case Outcome::kPoison:
      return "poison";
    case Outcome::kOverloaded:
      return "overloaded";
    case Outcome::kUnavailable:
      return "unavailable";
    case Outcome::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

bool isInfrastructureFailure(Outcome outcome) {
  switch (outcome) {
    case Outcome::kCrashed:
    case Outcome::kHung:
    case Outcome::kOomKilled:
    case Outcome::kResourceExhausted:
      return true;
    case Outcome::kOk:
    case Outcome::kHandlerError:
    case Outcome::kTimedOut:
    case Outcome::kPoison:
    case Outcome::kOverloaded:
    case Outcome::kUnavailable:
    case Outcome::kCancelled:
      return false;
  }
  return false;
}

}  // namespace bulkhead::core
