#pragma once
// Sealed memfds: how large payloads and results cross between the daemon, its workers and the
// HTTP socket without living in the daemon's heap (docs/protocol.md, "Large payloads by memfd").
// Owns: creating, filling, sealing and checking them, reading one back where bytes are needed
// (the journal), and wrapping one as a core::Blob whose last holder closes it.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/blob.h"
#include "os/unique_fd.h"

namespace bulkhead::os {

// The seals that make a memfd's bytes final: no write, no shrink, no grow, no further seal
// changes. A sender adds them before handing the fd over; a receiver checks them.
int finalSeals();

// A fresh memfd that can be sealed (close-on-exec); invalid with errno set on failure.
UniqueFd createMemfd(const char* name);

// Appends all of `bytes` at the file's offset (write(2) loops over short writes and EINTR).
// False with errno set on failure (ENOSPC, EFBIG, a memory cgroup's limit...).
bool writeAll(int fd, std::string_view bytes);

// Adds finalSeals(); false with errno set on failure.
bool sealFinal(int fd);

// Why `fd` may not be trusted as a final `size`-byte blob from a worker: not a memfd, missing one
// of the write/shrink/grow seals, or another size. nullopt when it is fine.
std::optional<std::string> checkSealedBlob(int fd, std::uint64_t size);

// The whole file (pread from offset 0); nullopt with errno set on failure.
std::optional<std::string> readWhole(int fd, std::uint64_t size);

// A core::Blob over `fd` (closed when its last holder lets go); its fingerprint is read from the
// file when first asked for.
std::shared_ptr<const core::Blob> fileBlob(UniqueFd fd, std::uint64_t size);
// The same over a handle whose deleter decides what becomes of the file (os/payload_files.h
// gives it back to its cache); the payload is the file's first `size` bytes.
std::shared_ptr<const core::Blob> fileBlobOver(std::shared_ptr<const int> handle,
                                               std::uint64_t size);

// The bytes of any blob: read back from its file when it is in one (nullopt if that fails).
std::optional<std::string> blobBytes(const core::Blob& blob);

}  // namespace bulkhead::os
