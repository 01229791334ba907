// os/memfd: the sealed files that carry large payloads and results (docs/protocol.md, "Large
// payloads by memfd"), against the real kernel: seals hold, a receiver's check refuses what a
// lying worker could send, and a blob's file closes with its last holder.
#include "os/memfd.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "core/quarantine.h"

namespace bulkhead::os {
namespace {

bool isOpen(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

UniqueFd filled(const std::string& bytes) {
  UniqueFd fd = createMemfd("memfd-test");
  EXPECT_TRUE(fd.valid());
  EXPECT_TRUE(writeAll(fd.get(), bytes));
  return fd;
}

TEST(Memfd, ASealedFileIsFinalAndPassesTheCheck) {
  UniqueFd fd = filled("hello");
  ASSERT_TRUE(sealFinal(fd.get()));
  EXPECT_EQ(checkSealedBlob(fd.get(), 5), std::nullopt);
  EXPECT_EQ(::write(fd.get(), "x", 1), -1);  // the seal holds against its own creator
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::ftruncate(fd.get(), 1), -1);
  EXPECT_EQ(::mmap(nullptr, 5, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0), MAP_FAILED);
  auto back = readWhole(fd.get(), 5);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, "hello");
}

TEST(Memfd, TheCheckRefusesAnUnsealedFileAWrongSizeAndAPlainFile) {
  UniqueFd unsealed = filled("abc");
  EXPECT_EQ(checkSealedBlob(unsealed.get(), 3),
            "the memfd is not sealed against write, shrink and grow");
  UniqueFd onlyWrite = filled("abc");
  ASSERT_EQ(::fcntl(onlyWrite.get(), F_ADD_SEALS, F_SEAL_WRITE), 0);
  EXPECT_TRUE(checkSealedBlob(onlyWrite.get(), 3));  // may still shrink or grow
  UniqueFd sealed = filled("abc");
  ASSERT_TRUE(sealFinal(sealed.get()));
  EXPECT_EQ(checkSealedBlob(sealed.get(), 4), "the memfd holds 3 bytes, the frame says 4");
  int pipeFds[2];
  ASSERT_EQ(::pipe(pipeFds), 0);
  UniqueFd readEnd(pipeFds[0]), writeEnd(pipeFds[1]);
  EXPECT_EQ(checkSealedBlob(readEnd.get(), 0), "the file descriptor is not a sealable memfd");
}

TEST(Memfd, ABlobClosesItsFileWithItsLastHolder) {
  UniqueFd fd = filled(std::string(300000, 'z'));
  ASSERT_TRUE(sealFinal(fd.get()));
  const int raw = fd.get();
  core::Payload blob = fileBlob(std::move(fd), 300000);
  EXPECT_TRUE(blob->inFile());
  EXPECT_EQ(blob->fd(), raw);
  EXPECT_EQ(blob->size(), 300000u);
  // Read from the file when first asked for: the same as the bytes' own.
  EXPECT_EQ(core::payloadFingerprint(*blob), core::payloadFingerprint(std::string(300000, 'z')));
  auto bytes = blobBytes(*blob);
  ASSERT_TRUE(bytes);
  EXPECT_EQ(*bytes, std::string(300000, 'z'));
  core::Payload second = blob;
  blob.reset();
  EXPECT_TRUE(isOpen(raw));
  second.reset();
  EXPECT_FALSE(isOpen(raw));
}

TEST(Memfd, AnInMemoryBlobIsItsOwnBytes) {
  core::Payload blob = core::makePayload("inline");
  EXPECT_FALSE(blob->inFile());
  EXPECT_EQ(blob->fd(), -1);
  EXPECT_EQ(*blobBytes(*blob), "inline");
  EXPECT_EQ(core::payloadFingerprint(*blob), core::payloadFingerprint(std::string_view("inline")));
}

TEST(Fingerprint, BytesInPiecesFingerprintAsTheWhole) {
  const std::string whole = "a payload that arrives in pieces of uneven size";
  core::FingerprintBuilder pieces;
  pieces.add(whole.substr(0, 1));
  pieces.add(whole.substr(1, 0));
  pieces.add(whole.substr(1, 20));
  pieces.add(whole.substr(21));
  EXPECT_EQ(pieces.finish(), core::payloadFingerprint(whole));
  EXPECT_EQ(core::FingerprintBuilder().finish(), core::payloadFingerprint(std::string_view()));
}

}  // namespace
}  // namespace bulkhead::os
