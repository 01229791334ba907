// os/payload_files: reused payload memfds, against the real kernel. A reused file holds exactly
// its new payload and zeros after it, nobody but the daemon's own mapping can write it, a file a
// worker kept is never lent again, and idle files go.
#include "os/payload_files.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "os/memfd.h"

namespace bulkhead::os {
namespace {

constexpr std::uint64_t kMiB = 1 << 20;

struct FakeClock {
  core::Time now{};
  std::function<core::Time()> fn() {
    return [this] { return now; };
  }
};

UniqueFd filled(const std::string& bytes) {
  UniqueFd fd = createMemfd("payload-files-test");
  EXPECT_TRUE(fd.valid());
  EXPECT_TRUE(writeAll(fd.get(), bytes));
  return fd;
}

std::string readAt(int fd, std::uint64_t offset, std::uint64_t length) {
  std::string out(length, '\0');
  EXPECT_EQ(::pread(fd, out.data(), length, static_cast<off_t>(offset)),
            static_cast<ssize_t>(length));
  return out;
}

ino_t inodeOf(int fd) {
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0);
  return st.st_ino;
}

off_t sizeOf(int fd) {
  struct stat st {};
  EXPECT_EQ(::fstat(fd, &st), 0);
  return st.st_size;
}

TEST(PayloadFiles, CapacityRoundsUpToAnEighthOfThePowerOfTwoAndAtLeastOneMiB) {
  EXPECT_EQ(payloadFileCapacity(1), kMiB);
  EXPECT_EQ(payloadFileCapacity(300 * 1024), kMiB);
  EXPECT_EQ(payloadFileCapacity(kMiB + 1), 2 * kMiB);
  EXPECT_EQ(payloadFileCapacity(64 * kMiB), 64 * kMiB);
  EXPECT_EQ(payloadFileCapacity(64 * kMiB + 1), 72 * kMiB);
}

TEST(PayloadFiles, AnAdoptedFileHoldsThePayloadThenZerosAndOnlyTheDaemonMappingWrites) {
  FakeClock clock;
  auto files = PayloadFiles::make({}, clock.fn());
  UniqueFd fd = filled("hello");
  auto blob = files->adopt("echo", fd, 5);
  ASSERT_NE(blob, nullptr);
  EXPECT_FALSE(fd.valid());  // taken
  const int file = blob->fd();
  EXPECT_EQ(blob->size(), 5u);
  EXPECT_EQ(sizeOf(file), static_cast<off_t>(kMiB));
  EXPECT_EQ(readAt(file, 0, 5), "hello");
  EXPECT_EQ(readAt(file, 5, 4096), std::string(4096, '\0'));
  // What a worker could try with the fd it gets: write, resize, map writable, or remap a read-only
  // mapping writable.
  EXPECT_EQ(::pwrite(file, "x", 1, 0), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_NE(::ftruncate(file, 5), 0);
  EXPECT_NE(::ftruncate(file, 4 * kMiB), 0);
  EXPECT_EQ(::mmap(nullptr, 5, PROT_READ | PROT_WRITE, MAP_SHARED, file, 0), MAP_FAILED);
  void* view = ::mmap(nullptr, 5, PROT_READ, MAP_SHARED, file, 0);
  ASSERT_NE(view, MAP_FAILED);
  EXPECT_NE(::mprotect(view, 5, PROT_READ | PROT_WRITE), 0);
  ::munmap(view, 5);
  // Reopened through /proc for writing: the seal is the inode's, not the fd's.
  const std::string path = "/proc/self/fd/" + std::to_string(file);
  const int again = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(again, 0);
  EXPECT_EQ(::pwrite(again, "x", 1, 0), -1);
  ::close(again);
  EXPECT_EQ(blobBytes(*blob), "hello");
}

TEST(PayloadFiles, TheSameFileComesBackForTheNextPayloadOfItsPoolWithTheOldTailWiped) {
  FakeClock clock;
  auto files = PayloadFiles::make({}, clock.fn());
  UniqueFd fd = filled(std::string(kMiB, 'a'));
  auto first = files->adopt("echo", fd, kMiB);
  ASSERT_NE(first, nullptr);
  const ino_t inode = inodeOf(first->fd());
  EXPECT_FALSE(files->take("echo", 1000).has_value());  // lent: not to be had
  first.reset();
  EXPECT_EQ(files->idleFiles(), 1u);
  EXPECT_EQ(files->idleBytes(), kMiB);

  EXPECT_FALSE(files->take("other", 1000).has_value());     // another pool's
  EXPECT_FALSE(files->take("echo", kMiB + 1).has_value());  // too small
  auto filling = files->take("echo", 600 * 1024);
  ASSERT_TRUE(filling.has_value());
  EXPECT_EQ(files->idleFiles(), 0u);
  for (std::uint64_t at = 0; at < filling->size();) {
    auto room = filling->room(at);
    ASSERT_FALSE(room.empty());
    std::memset(room.data(), 'b', room.size());
    at += room.size();
  }
  auto second = filling->finish();
  ASSERT_NE(second, nullptr);
  EXPECT_EQ(inodeOf(second->fd()), inode);
  EXPECT_EQ(second->size(), 600u * 1024);
  EXPECT_EQ(blobBytes(*second), std::string(600 * 1024, 'b'));
  EXPECT_EQ(readAt(second->fd(), 600 * 1024, kMiB - 600 * 1024),
            std::string(kMiB - 600 * 1024, '\0'));
  EXPECT_EQ(files->reuses(), 1u);
}

// Filled a window at a time (the daemon's RSS grows by a window, not by the payload): every byte
// lands where it belongs across window edges, and the old tail is wiped across them too.
TEST(PayloadFiles, ALargeFileIsFilledAndWipedAWindowAtATime) {
  FakeClock clock;
  auto files = PayloadFiles::make({}, clock.fn());
  UniqueFd fd = filled(std::string(9 * kMiB + 3, 'a'));
  files->adopt("echo", fd, 9 * kMiB + 3).reset();
  const std::uint64_t size = 5 * kMiB + 7;
  auto filling = files->take("echo", size);
  ASSERT_TRUE(filling.has_value());
  std::uint64_t rooms = 0;
  for (std::uint64_t at = 0; at < size;) {
    // Odd-sized writes, as reads from a socket come: never past a window's end.
    auto room = filling->room(at);
    ASSERT_FALSE(room.empty());
    ASSERT_LE(room.size(), PayloadFiles::kFillWindow);
    ASSERT_LE((at % PayloadFiles::kFillWindow) + room.size(), PayloadFiles::kFillWindow);
    const std::size_t n = std::min<std::size_t>(room.size(), 1000003);
    for (std::size_t i = 0; i < n; ++i) room[i] = static_cast<char>('0' + (at + i) % 10);
    at += n;
    ++rooms;
  }
  EXPECT_GT(rooms, 5u);
  auto blob = filling->finish();
  auto bytes = blobBytes(*blob);
  ASSERT_TRUE(bytes);
  ASSERT_EQ(bytes->size(), size);
  for (std::uint64_t i = 0; i < size; i += 4099) {
    ASSERT_EQ((*bytes)[i], static_cast<char>('0' + i % 10)) << i;
  }
  EXPECT_EQ((*bytes)[size - 1], static_cast<char>('0' + (size - 1) % 10));
  EXPECT_EQ(readAt(blob->fd(), size, 9 * kMiB + 3 - size), std::string(9 * kMiB + 3 - size, '\0'));
}

TEST(PayloadFiles, AFileWithAMuchLongerOldPayloadIsNotWipedForASmallOne) {
  FakeClock clock;
  auto files = PayloadFiles::make({}, clock.fn());
  UniqueFd fd = filled(std::string(8 * kMiB, 'a'));
  files->adopt("echo", fd, 8 * kMiB).reset();
  EXPECT_FALSE(files->take("echo", kMiB).has_value());  // 7 MiB to wipe: a fresh file is cheaper
  EXPECT_TRUE(files->take("echo", 5 * kMiB).has_value());
}

TEST(PayloadFiles, AFileAWorkerKeptIsNeverLentAgain) {
  FakeClock clock;
  auto files = PayloadFiles::make({}, clock.fn());
  UniqueFd fd = filled("kept");
  auto blob = files->adopt("echo", fd, 4);
  files->keep(blob->fd());
  blob.reset();
  EXPECT_EQ(files->idleFiles(), 0u);
  EXPECT_FALSE(files->take("echo", 4).has_value());
}

TEST(PayloadFiles, WithNoBytesToKeepNothingIsAdoptedAndTheFileStaysTheCallers) {
  FakeClock clock;
  PayloadFileLimits limits;
  limits.maxIdleBytes = 0;
  auto files = PayloadFiles::make(limits, clock.fn());
  UniqueFd fd = filled("abc");
  EXPECT_EQ(files->adopt("echo", fd, 3), nullptr);
  ASSERT_TRUE(fd.valid());  // unchanged: the caller seals it final as before
  EXPECT_EQ(sizeOf(fd.get()), 3);
  EXPECT_TRUE(sealFinal(fd.get()));
}

TEST(PayloadFiles, ABodyCutShortGivesItsFileBackUnlent) {
  FakeClock clock;
  auto files = PayloadFiles::make({}, clock.fn());
  UniqueFd fd = filled("abc");
  files->adopt("echo", fd, 3).reset();
  { auto filling = files->take("echo", 3); }
  EXPECT_EQ(files->idleFiles(), 1u);
}

TEST(PayloadFiles, IdleFilesGoAfterIdleForAndTrimSaysWhenToLookAgain) {
  FakeClock clock;
  PayloadFileLimits limits;
  limits.idleFor = std::chrono::seconds(2);
  auto files = PayloadFiles::make(limits, clock.fn());
  EXPECT_EQ(files->trim(), std::nullopt);  // nothing lent or kept
  UniqueFd fd = filled("x");
  auto blob = files->adopt("echo", fd, 1);
  EXPECT_EQ(files->trim(), clock.now + std::chrono::seconds(2));  // lent: look again later
  clock.now += std::chrono::seconds(1);
  blob.reset();
  clock.now += std::chrono::seconds(1);
  EXPECT_EQ(files->trim(), core::Time{} + std::chrono::seconds(3));
  EXPECT_EQ(files->idleFiles(), 1u);
  clock.now += std::chrono::seconds(1);
  EXPECT_EQ(files->trim(), std::nullopt);
  EXPECT_EQ(files->idleFiles(), 0u);
  EXPECT_EQ(files->idleBytes(), 0u);
}

TEST(PayloadFiles, TheOldestGoPastThePoolLimitAndPastTheByteLimit) {
  FakeClock clock;
  PayloadFileLimits limits;
  limits.maxIdlePerPool = 2;
  limits.maxIdleBytes = 5 * kMiB;
  auto files = PayloadFiles::make(limits, clock.fn());
  auto lendOne = [&](const std::string& pool, std::uint64_t size) {
    UniqueFd fd = filled(std::string(size, 'z'));
    return files->adopt(pool, fd, size);
  };
  auto a1 = lendOne("a", 1);
  auto a2 = lendOne("a", 2);
  auto a3 = lendOne("a", 3);
  a1.reset();
  a2.reset();
  a3.reset();
  EXPECT_EQ(files->idleFiles(), 2u);  // a1 went
  EXPECT_EQ(files->idleBytes(), 2 * kMiB);
  auto b = lendOne("b", 4 * kMiB);  // 6 MiB together: the oldest of all (a2) goes
  b.reset();
  EXPECT_EQ(files->idleBytes(), 5 * kMiB);
  EXPECT_EQ(files->idleFiles(), 2u);
  EXPECT_TRUE(files->take("b", 4 * kMiB).has_value());
}

TEST(PayloadFiles, ABlobOutlivingItsCacheClosesItsFile) {
  FakeClock clock;
  auto files = PayloadFiles::make({}, clock.fn());
  UniqueFd fd = filled("late");
  auto blob = files->adopt("echo", fd, 4);
  const int number = blob->fd();
  files.reset();
  EXPECT_EQ(blobBytes(*blob), "late");
  blob.reset();
  EXPECT_EQ(::fcntl(number, F_GETFD), -1);
}

TEST(PayloadFiles, SameFileKnowsAFileByItsInodeNotItsNumber) {
  UniqueFd fd = filled("x");
  const int copy = ::dup(fd.get());
  UniqueFd other = filled("x");
  EXPECT_TRUE(sameFile(fd.get(), copy));
  EXPECT_FALSE(sameFile(fd.get(), other.get()));
  EXPECT_FALSE(sameFile(fd.get(), -1));
  ::close(copy);
}

}  // namespace
}  // namespace bulkhead::os
