#pragma once
// Reused payload memfds (docs/protocol.md, "Large payloads by memfd"): the files request bodies
// are read into, kept per pool after their job so that the next large payload of that pool lands
// in pages that already exist. Owns: making a file reusable, choosing a cached one for a size
// (and wiping what an earlier payload left past the new one), giving files back when their last
// holder lets go, and dropping idle ones.
//
// Why: a fresh memfd pays for its pages. 64 MiB written into a new memfd took 37 ms on the
// reference VM, into one already written 16 ms, and a reused file is filled straight from the
// socket through the daemon's mapping (one copy instead of two).
//
// Why F_SEAL_FUTURE_WRITE and not F_SEAL_WRITE: the daemon writes the next payload into the same
// file through the mapping it made before sealing. Nobody can write(2) to the file, map it
// writable or resize it after that, the daemon's other fds included. A file is larger than its
// payload (it keeps its size for larger payloads later): past the payload's size a worker reads
// zeros, since an earlier payload's bytes there are wiped before the file is lent again.
//
// When a file is reused: only once every holder let go (the job is over, the result sent, the
// worker answered or was reaped: runtime/worker_channel.cc holds it until then), and only if no
// worker said it still maps it (PAYLOAD_KEPT: a handler kept a view past its job). Thread-safe:
// the last holder may be a cluster thread.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/blob.h"
#include "core/time.h"
#include "os/unique_fd.h"

namespace bulkhead::os {

struct PayloadFileLimits {
  std::size_t maxIdlePerPool = 4;             // files kept per pool while unused
  std::uint64_t maxIdleBytes = 512ull << 20;  // all pools' unused files together; 0: reuse off
  core::Duration idleFor = std::chrono::seconds(2);  // an unused file is dropped after this
};

class PayloadFiles : public std::enable_shared_from_this<PayloadFiles> {
  struct File;

 public:
  // A cached file being filled, `size` bytes in order: room(at) is where the bytes from `at` on
  // go. finish() makes it the payload; dropped unfinished, the file goes back to the cache unlent.
  //
  // The daemon maps one window of the file at a time (kFillWindow): its pages are mapped in one
  // call before they are written and unmapped after, so the daemon's RSS grows by a window, not
  // by the payload, however large.
  class Filling {
   public:
    Filling(Filling&&) noexcept;
    Filling& operator=(Filling&&) = delete;
    ~Filling();
    std::uint64_t size() const { return size_; }
    // Writable memory for the bytes from `at` (< size) on, at most to the end of the window `at`
    // is in; empty when its pages could not be had (ENOMEM: a memory cgroup's limit).
    std::span<char> room(std::uint64_t at);
    std::shared_ptr<const core::Blob> finish();

   private:
    friend class PayloadFiles;
    Filling(std::shared_ptr<PayloadFiles> owner, std::unique_ptr<File> file, std::uint64_t size);
    std::shared_ptr<PayloadFiles> owner_;
    std::unique_ptr<File> file_;
    std::uint64_t size_ = 0;
    std::uint64_t windowStart_ = 0;
    std::uint64_t windowEnd_ = 0;  // mapped: [windowStart_, windowEnd_)
  };
  static constexpr std::uint64_t kFillWindow = 4 << 20;

  static std::shared_ptr<PayloadFiles> make(PayloadFileLimits limits,
                                            std::function<core::Time()> clock);
  ~PayloadFiles();

  // A cached file of `pool` for a `size`-byte payload, its bytes past `size` wiped; nullopt when
  // none fits (the caller reads the body into a fresh memfd and adopt()s it).
  std::optional<Filling> take(std::string_view pool, std::uint64_t size);

  // `fd`, a fresh memfd (unsealed, its file offset at `size`) holding a whole `size`-byte payload
  // of `pool`: grown to a reusable size, mapped, sealed. Null when any step fails: the caller
  // seals it final instead (sealFinal + fileBlob), as before reuse.
  std::shared_ptr<const core::Blob> adopt(std::string_view pool, UniqueFd& fd, std::uint64_t size);

  // A worker said it still maps the file open as `fd` (PAYLOAD_KEPT): it is never reused.
  void keep(int fd);

  // Drops files unused for idleFor. Returns when to call again: the next expiry, idleFor from now
  // while files are lent, nullopt when nothing is lent or cached.
  std::optional<core::Time> trim();

  std::uint64_t idleBytes() const;
  std::size_t idleFiles() const;
  std::uint64_t reuses() const;  // files taken from the cache, for tests and /metrics

 private:
  PayloadFiles(PayloadFileLimits limits, std::function<core::Time()> clock);
  std::shared_ptr<const core::Blob> lend(std::unique_ptr<File> file, std::uint64_t size);
  void giveBack(std::unique_ptr<File> file);
  // Moves an idle file (the lock held) to `dropped`, closed once the lock is let go; the next one.
  std::vector<std::unique_ptr<File>>::iterator dropIdle(
      std::vector<std::unique_ptr<File>>::iterator it, std::vector<std::unique_ptr<File>>& dropped);

  PayloadFileLimits limits_;
  std::function<core::Time()> clock_;
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<File>> idle_;  // oldest first
  std::map<int, File*> lent_;                // by fd, for keep()
  std::uint64_t idleBytes_ = 0;
  std::uint64_t reuses_ = 0;
};

// The capacity a payload of `size` bytes gets: rounded up to an eighth of its power of two (at
// least 1 MiB), so that payloads of about the same size share files.
std::uint64_t payloadFileCapacity(std::uint64_t size);

// Whether two fds are the same file (a worker giving back its job's own payload as its result).
bool sameFile(int a, int b);

}  // namespace bulkhead::os
