#include "os/payload_files.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include "os/memfd.h"

namespace bulkhead::os {

struct PayloadFiles::File {
  UniqueFd fd;
  int number = -1;  // fd.get(), the address a blob's handle points to
  char* map = nullptr;
  std::uint64_t capacity = 0;
  std::uint64_t highWater = 0;  // bytes past this were never written: they read as zeros
  std::string pool;
  bool kept = false;
  core::Time lastUsed{};

  ~File() {
    if (map != nullptr) ::munmap(map, capacity);
  }
  // One call maps every page of [from, to) (older kernels: EINVAL, they fault in as written).
  // False when pages could not be had (ENOMEM: a memory cgroup's limit): nothing may write there.
  bool mapPages(std::uint64_t from, std::uint64_t to) const {
    if (to <= from) return true;
    return ::madvise(map + from, to - from, MADV_POPULATE_WRITE) == 0 || errno == EINVAL;
  }
  // The daemon's page-table entries go; the pages stay in the file. The daemon's RSS then holds
  // no payload.
  void unmapPages(std::uint64_t from, std::uint64_t to) const {
    if (to > from) ::madvise(map + from, to - from, MADV_DONTNEED);
  }
  // Zeros over [from, to), a window at a time; false when its pages could not be had.
  bool wipe(std::uint64_t from, std::uint64_t to) const {
    for (std::uint64_t at = from; at < to;) {
      const std::uint64_t end = std::min(to, (at / kFillWindow + 1) * kFillWindow);
      if (!mapPages(at / 4096 * 4096, end)) return false;
      std::memset(map + at, 0, end - at);
      unmapPages(at / 4096 * 4096, end);
      at = end;
    }
    return true;
  }
};

namespace {

constexpr std::uint64_t kMiB = 1 << 20;
// Wiping an earlier, larger payload's tail costs a memset of it: a file is only reused for a
// payload at least about half its high-water mark.
bool worthReusing(std::uint64_t highWater, std::uint64_t size) {
  return highWater <= size + std::max(size, kMiB);
}

}  // namespace

std::uint64_t payloadFileCapacity(std::uint64_t size) {
  const std::uint64_t step = std::max(kMiB, std::bit_floor(std::max<std::uint64_t>(size, 1)) / 8);
  return (size + step - 1) / step * step;
}

bool sameFile(int a, int b) {
  struct stat x {};
  struct stat y {};
  if (::fstat(a, &x) != 0 || ::fstat(b, &y) != 0) return false;
  return x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

PayloadFiles::Filling::Filling(std::shared_ptr<PayloadFiles> owner, std::unique_ptr<File> file,
                               std::uint64_t size)
    : owner_(std::move(owner)), file_(std::move(file)), size_(size) {}

PayloadFiles::Filling::Filling(Filling&&) noexcept = default;

PayloadFiles::Filling::~Filling() {
  if (!file_) return;
  file_->unmapPages(windowStart_, windowEnd_);  // a body cut short: back, never lent
  owner_->giveBack(std::move(file_));
}

std::span<char> PayloadFiles::Filling::room(std::uint64_t at) {
  if (at < windowStart_ || at >= windowEnd_) {
    file_->unmapPages(windowStart_, windowEnd_);
    windowStart_ = at / kFillWindow * kFillWindow;
    windowEnd_ = std::min(size_, windowStart_ + kFillWindow);
    if (!file_->mapPages(windowStart_, windowEnd_)) {
      windowEnd_ = windowStart_;
      return {};
    }
  }
  return {file_->map + at, static_cast<std::size_t>(windowEnd_ - at)};
}

std::shared_ptr<const core::Blob> PayloadFiles::Filling::finish() {
  file_->unmapPages(windowStart_, windowEnd_);
  return owner_->lend(std::move(file_), size_);
}

std::shared_ptr<PayloadFiles> PayloadFiles::make(PayloadFileLimits limits,
                                                 std::function<core::Time()> clock) {
  return std::shared_ptr<PayloadFiles>(new PayloadFiles(limits, std::move(clock)));
}

PayloadFiles::PayloadFiles(PayloadFileLimits limits, std::function<core::Time()> clock)
    : limits_(limits), clock_(std::move(clock)) {}

PayloadFiles::~PayloadFiles() = default;

std::optional<PayloadFiles::Filling> PayloadFiles::take(std::string_view pool, std::uint64_t size) {
  std::unique_ptr<File> file;
  {
    std::lock_guard lock(mutex_);
    auto best = idle_.end();
    for (auto it = idle_.begin(); it != idle_.end(); ++it) {
      const File& f = **it;
      if (f.pool != pool || f.capacity < size || !worthReusing(f.highWater, size)) continue;
      if (best == idle_.end() || f.capacity < (*best)->capacity) best = it;
    }
    if (best == idle_.end()) return std::nullopt;
    file = std::move(*best);
    idle_.erase(best);
    idleBytes_ -= file->capacity;
    ++reuses_;
  }
  if (file->highWater > size && !file->wipe(size, file->highWater)) return std::nullopt;  // dropped
  file->highWater = size;  // also right for a body cut short: it wrote below `size` only
  return Filling(shared_from_this(), std::move(file), size);
}

std::shared_ptr<const core::Blob> PayloadFiles::adopt(std::string_view pool, UniqueFd& fd,
                                                      std::uint64_t size) {
  if (size == 0 || !fd.valid() || limits_.maxIdleBytes == 0) return nullptr;  // 0: reuse off
  const std::uint64_t capacity = payloadFileCapacity(size);
  if (::ftruncate(fd.get(), static_cast<off_t>(capacity)) != 0) return nullptr;
  void* map = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  const int seals = F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
  if (map == MAP_FAILED || ::fcntl(fd.get(), F_ADD_SEALS, seals) != 0) {
    if (map != MAP_FAILED) ::munmap(map, capacity);
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) fd.reset();  // cannot be trusted
    return nullptr;
  }
  auto file = std::make_unique<File>();
  file->fd = std::move(fd);
  file->number = file->fd.get();
  file->map = static_cast<char*>(map);
  file->capacity = capacity;
  file->highWater = size;
  file->pool = std::string(pool);
  return lend(std::move(file), size);
}

std::shared_ptr<const core::Blob> PayloadFiles::lend(std::unique_ptr<File> file,
                                                     std::uint64_t size) {
  File* raw = file.release();
  {
    std::lock_guard lock(mutex_);
    lent_[raw->number] = raw;
  }
  std::weak_ptr<PayloadFiles> owner = weak_from_this();
  std::shared_ptr<const int> handle(&raw->number, [owner, raw](const int*) {
    std::unique_ptr<File> back(raw);
    if (auto files = owner.lock()) files->giveBack(std::move(back));
  });
  return fileBlobOver(std::move(handle), size);
}

void PayloadFiles::giveBack(std::unique_ptr<File> file) {
  std::vector<std::unique_ptr<File>> dropped;  // closed after the lock is let go
  std::lock_guard lock(mutex_);
  lent_.erase(file->number);
  if (file->kept) {
    dropped.push_back(std::move(file));
    return;
  }
  file->lastUsed = clock_();
  idleBytes_ += file->capacity;
  const std::string pool = file->pool;
  idle_.push_back(std::move(file));
  std::size_t ofPool = 0;
  for (const auto& f : idle_) ofPool += f->pool == pool ? 1 : 0;
  // Over a limit, the oldest go: first this pool's past maxIdlePerPool, then any past the bytes.
  for (auto it = idle_.begin(); it != idle_.end() && ofPool > limits_.maxIdlePerPool;) {
    if ((*it)->pool != pool) {
      ++it;
      continue;
    }
    --ofPool;
    it = dropIdle(it, dropped);
  }
  while (idleBytes_ > limits_.maxIdleBytes && !idle_.empty()) dropIdle(idle_.begin(), dropped);
}

std::vector<std::unique_ptr<PayloadFiles::File>>::iterator PayloadFiles::dropIdle(
    std::vector<std::unique_ptr<File>>::iterator it, std::vector<std::unique_ptr<File>>& dropped) {
  idleBytes_ -= (*it)->capacity;
  dropped.push_back(std::move(*it));
  return idle_.erase(it);
}

void PayloadFiles::keep(int fd) {
  std::lock_guard lock(mutex_);
  if (auto it = lent_.find(fd); it != lent_.end()) it->second->kept = true;
}

std::optional<core::Time> PayloadFiles::trim() {
  std::vector<std::unique_ptr<File>> dropped;
  std::lock_guard lock(mutex_);
  const core::Time now = clock_();
  std::optional<core::Time> next;
  for (auto it = idle_.begin(); it != idle_.end();) {
    const core::Time expires = (*it)->lastUsed + limits_.idleFor;
    if (expires <= now) {
      it = dropIdle(it, dropped);
      continue;
    }
    if (!next || expires < *next) next = expires;
    ++it;
  }
  if (!next && !lent_.empty()) next = now + limits_.idleFor;
  return next;
}

std::uint64_t PayloadFiles::idleBytes() const {
  std::lock_guard lock(mutex_);
  return idleBytes_;
}

std::size_t PayloadFiles::idleFiles() const {
  std::lock_guard lock(mutex_);
  return idle_.size();
}

std::uint64_t PayloadFiles::reuses() const {
  std::lock_guard lock(mutex_);
  return reuses_;
}

}  // namespace bulkhead::os
