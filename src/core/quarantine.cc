#include "core/quarantine.h"

#include <cstdio>

namespace bulkhead::core {

std::string payloadFingerprint(std::string_view payload) {
  std::uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : payload) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  char text[48];
  std::snprintf(text, sizeof text, "fnv1a64:%016llx:%zu", static_cast<unsigned long long>(hash),
                payload.size());
  return text;
}

}  // namespace bulkhead::core
