// isPassingError: which error replies mean "write it again later" (an outcome kept) rather than
// "this command is wrong" (logged and dropped).

#include <gtest/gtest.h>

#include "cluster/redis_connection.h"

namespace bulkhead::cluster {
namespace {

TEST(RedisErrors, AServerLoadingBusyOrFullRefusesForNow) {
  EXPECT_TRUE(isPassingError("LOADING Redis is loading the dataset in memory"));
  EXPECT_TRUE(isPassingError("BUSY Redis is busy running a script."));
  EXPECT_TRUE(isPassingError("OOM command not allowed when used memory > 'maxmemory'."));
  EXPECT_TRUE(isPassingError("READONLY You can't write against a read only replica."));
  EXPECT_TRUE(isPassingError("MASTERDOWN Link with MASTER is down"));
  EXPECT_TRUE(isPassingError("TRYAGAIN Multiple keys request during rehashing of slot"));
}

TEST(RedisErrors, AWrongCommandIsNotRetried) {
  EXPECT_FALSE(isPassingError("WRONGTYPE Operation against a key holding the wrong kind of value"));
  EXPECT_FALSE(isPassingError("ERR unknown command 'XADD'"));
  EXPECT_FALSE(isPassingError("EXECABORT Transaction discarded because of previous errors."));
  EXPECT_FALSE(isPassingError("BUSYKEY Target key name already exists."));
  EXPECT_FALSE(isPassingError(""));
}

}  // namespace
}  // namespace bulkhead::cluster
