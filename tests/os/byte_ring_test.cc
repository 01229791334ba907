#include "util/byte_ring.h"

#include <gtest/gtest.h>

namespace bulkhead::util {
namespace {

TEST(ByteRing, KeepsTheTailAndCountsDroppedBytes) {
  ByteRing ring(8);
  ring.append("hello ");
  EXPECT_EQ(ring.tail(), "hello ");
  EXPECT_EQ(ring.droppedBytes(), 0u);
  ring.append("world!");
  EXPECT_EQ(ring.tail(), "o world!");
  EXPECT_EQ(ring.droppedBytes(), 4u);
  ring.append(std::string(100, 'x') + "END");
  EXPECT_EQ(ring.tail(), "xxxxxEND");
  EXPECT_EQ(ring.totalBytes(), 115u);
}

TEST(ByteRing, FloodCostsBoundedMemory) {
  ByteRing ring(1024);
  std::string chunk(4096, 'a');
  for (int i = 0; i < 12800; ++i) ring.append(chunk);  // 50 MiB
  EXPECT_EQ(ring.tail().size(), 1024u);
  EXPECT_EQ(ring.droppedBytes(), 50ull * 1024 * 1024 - 1024);
}

}  // namespace
}  // namespace bulkhead::util
