#include "core/quarantine.h"

#include <cstdio>

namespace bulkhead::core {

void FingerprintBuilder::add(std::string_view bytes) {
  std::uint64_t hash = hash_;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  hash_ = hash;
  size_ += bytes.size();
}

std::string FingerprintBuilder::finish() const {
  char text[48];
  std::snprintf(text, sizeof text, "fnv1a64:%016llx:%llu", static_cast<unsigned long long>(hash_),
                static_cast<unsigned long long>(size_));
  return text;
}

std::string payloadFingerprint(std::string_view payload) {
  FingerprintBuilder builder;
  builder.add(payload);
  return builder.finish();
}

std::string payloadFingerprint(const Blob& payload) {
  return payload.inFile() ? payload.fileFingerprint() : payloadFingerprint(payload.bytes());
}

}  // namespace bulkhead::core
