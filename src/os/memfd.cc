#include "os/memfd.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "core/quarantine.h"

namespace bulkhead::os {

int finalSeals() { return F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL; }

UniqueFd createMemfd(const char* name) {
  return UniqueFd(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
}

bool writeAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

bool sealFinal(int fd) { return ::fcntl(fd, F_ADD_SEALS, finalSeals()) == 0; }

std::optional<std::string> checkSealedBlob(int fd, std::uint64_t size) {
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0) return "the file descriptor is not a sealable memfd";
  const int needed = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW;
  if ((seals & needed) != needed) {
    return "the memfd is not sealed against write, shrink and grow";
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) return "fstat of the memfd failed";
  if (static_cast<std::uint64_t>(st.st_size) != size) {
    return "the memfd holds " + std::to_string(st.st_size) + " bytes, the frame says " +
           std::to_string(size);
  }
  return std::nullopt;
}

std::optional<std::string> readWhole(int fd, std::uint64_t size) {
  std::string out;
  out.resize(static_cast<std::size_t>(size));
  std::size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;  // shorter than said: sealed files cannot shrink, so never here
      return std::nullopt;
    }
    done += static_cast<std::size_t>(n);
  }
  return out;
}

namespace {

// payloadFingerprint of the file's bytes, read in 1 MiB pieces. A read error (never expected
// on a sealed memfd) gives a fingerprint no payload has, so nothing is refused by mistake.
std::string fingerprintOfFile(int fd, std::uint64_t size) {
  core::FingerprintBuilder builder;
  std::string piece(1 << 20, '\0');
  for (std::uint64_t at = 0; at < size;) {
    const std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(piece.size(), size - at));
    ssize_t n = ::pread(fd, piece.data(), want, static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return "unreadable:" + std::to_string(fd) + ":" + std::to_string(size);
    builder.add(std::string_view(piece.data(), static_cast<std::size_t>(n)));
    at += static_cast<std::uint64_t>(n);
  }
  return builder.finish();
}

}  // namespace

std::shared_ptr<const core::Blob> fileBlob(UniqueFd fd, std::uint64_t size) {
  std::shared_ptr<const int> file(new int(fd.release()), [](const int* owned) {
    ::close(*owned);
    delete owned;
  });
  return fileBlobOver(std::move(file), size);
}

std::shared_ptr<const core::Blob> fileBlobOver(std::shared_ptr<const int> handle,
                                               std::uint64_t size) {
  // The function captures the number, not the handle: the blob owns both, so the fd outlives it.
  const int raw = *handle;
  return std::make_shared<const core::Blob>(std::move(handle), size,
                                            [raw, size] { return fingerprintOfFile(raw, size); });
}

std::optional<std::string> blobBytes(const core::Blob& blob) {
  if (!blob.inFile()) return std::string(blob.bytes());
  return readWhole(blob.fd(), blob.size());
}

}  // namespace bulkhead::os
