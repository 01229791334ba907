#pragma once
// Payloads that crashed `poison_after` different workers, remembered by content hash so that a
// resubmission is refused at once instead of killing more workers. Bounded: the oldest entries
// are forgotten first.

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/outcome.h"
#include "core/time.h"

namespace bulkhead::core {

// 64-bit FNV-1a over the bytes, hex, with the length: an identity for refusals, not security.
std::string payloadFingerprint(std::string_view payload);
// The same for a blob: a file blob's was computed as its bytes were written (FingerprintBuilder).
std::string payloadFingerprint(const Blob& payload);

// payloadFingerprint of bytes that arrive in pieces.
class FingerprintBuilder {
 public:
  void add(std::string_view bytes);
  std::string finish() const;

 private:
  std::uint64_t hash_ = 1469598103934665603ull;
  std::uint64_t size_ = 0;
};

struct QuarantineEntry {
  std::string fingerprint;
  std::string pool;
  std::uint64_t jobId = 0;
  Time at;
  std::string detail;
  std::vector<AttemptRecord> attempts;
};

class Quarantine {
 public:
  explicit Quarantine(std::size_t capacity = 10000) : capacity_(capacity) {}

  void add(QuarantineEntry entry) {
    if (byFingerprint_.count(entry.fingerprint)) return;
    order_.push_back(entry.fingerprint);
    byFingerprint_.emplace(entry.fingerprint, std::move(entry));
    if (order_.size() > capacity_) {
      byFingerprint_.erase(order_.front());
      order_.pop_front();
    }
  }
  const QuarantineEntry* find(const std::string& fingerprint) const {
    auto it = byFingerprint_.find(fingerprint);
    return it == byFingerprint_.end() ? nullptr : &it->second;
  }
  bool empty() const { return order_.empty(); }
  std::size_t size() const { return order_.size(); }
  std::vector<const QuarantineEntry*> entries() const {
    std::vector<const QuarantineEntry*> out;
    for (const auto& f : order_) out.push_back(&byFingerprint_.at(f));
    return out;
  }

 private:
  std::size_t capacity_;
  std::deque<std::string> order_;
  std::map<std::string, QuarantineEntry> byFingerprint_;
};

}  // namespace bulkhead::core
