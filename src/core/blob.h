#pragma once
// A job's payload or result as the core sees it: bytes in memory, or bytes in a file that the
// shell owns (a sealed memfd, docs/protocol.md "Large payloads by memfd"). The core only asks
// for the size and the fingerprint and hands the blob on; the shell reads or passes the file.
//
// The file is kept open by `file`, a shared handle whose deleter (made by the shell, os/memfd.h)
// closes it, and its fingerprint is read by a function the shell gives: the core never makes a
// system call, not even close(). The fingerprint is computed once, when first asked for (only a
// pool with a quarantined payload asks), not for every large job: hashing 64 MiB costs ~90 ms.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace bulkhead::core {

class Blob {
 public:
  explicit Blob(std::string bytes) : bytes_(std::move(bytes)), size_(bytes_.size()) {}
  // `fingerprinter`: payloadFingerprint of the file's bytes, read from the file.
  Blob(std::shared_ptr<const int> file, std::uint64_t size,
       std::function<std::string()> fingerprinter)
      : file_(std::move(file)), size_(size), fingerprinter_(std::move(fingerprinter)) {}

  std::uint64_t size() const { return size_; }
  bool inFile() const { return file_ != nullptr; }
  int fd() const { return file_ ? *file_ : -1; }
  // The bytes of an in-memory blob; empty for one in a file (read it through the shell).
  std::string_view bytes() const { return bytes_; }
  // Single-threaded like the rest of the core: the cache is filled on the event loop's thread.
  const std::string& fileFingerprint() const {
    if (fingerprint_.empty() && fingerprinter_) fingerprint_ = fingerprinter_();
    return fingerprint_;
  }

 private:
  std::string bytes_;
  std::shared_ptr<const int> file_;
  std::uint64_t size_ = 0;
  std::function<std::string()> fingerprinter_;
  mutable std::string fingerprint_;
};

}  // namespace bulkhead::core
