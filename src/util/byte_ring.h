#pragma once
// A bounded tail of a byte stream: keeps the last `capacity` bytes and counts what it dropped, so a
// worker flooding stderr costs a fixed amount of memory while its last words are kept.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bulkhead::util {

class ByteRing {
 public:
  explicit ByteRing(std::size_t capacity) : capacity_(capacity) {}

  void append(std::string_view bytes) {
    total_ += bytes.size();
    if (bytes.size() >= capacity_) {
      data_.assign(bytes.substr(bytes.size() - capacity_));
      return;
    }
    data_.append(bytes);
    // Trim in chunks so appends stay amortised O(1) under a flood.
    if (data_.size() > 2 * capacity_) data_.erase(0, data_.size() - capacity_);
  }

  std::string tail() const {
    return data_.size() > capacity_ ? data_.substr(data_.size() - capacity_) : data_;
  }
  std::uint64_t droppedBytes() const {
    return total_ - std::min<std::uint64_t>(total_, tail().size());
  }
  std::uint64_t totalBytes() const { return total_; }
  void clear() {
    data_.clear();
    total_ = 0;
  }

 private:
  std::size_t capacity_;
  std::string data_;
  std::uint64_t total_ = 0;
};

}  // namespace bulkhead::util
