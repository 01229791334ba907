// [cluster] redis: the address forms the nodes accept, and the sentences they refuse others with.
#include "config/redis_address.h"

#include <gtest/gtest.h>

#include "config/config.h"

namespace bulkhead::config {
namespace {

RedisAddress ok(std::string_view text) {
  auto parsed = parseRedisAddress(text);
  if (auto* problem = std::get_if<std::string>(&parsed)) ADD_FAILURE() << text << ": " << *problem;
  return std::holds_alternative<RedisAddress>(parsed) ? std::get<RedisAddress>(parsed)
                                                      : RedisAddress{};
}

TEST(RedisAddress, TcpWithAndWithoutPortAndDatabase) {
  auto a = ok("redis://10.0.0.5:6380/3");
  EXPECT_FALSE(a.unixSocket);
  EXPECT_EQ(a.host, "10.0.0.5");
  EXPECT_EQ(a.port, 6380);
  EXPECT_EQ(a.db, 3);
  auto b = ok("redis://cache.internal");
  EXPECT_EQ(b.host, "cache.internal");
  EXPECT_EQ(b.port, 6379);
  EXPECT_EQ(b.db, 0);
  EXPECT_EQ(ok("redis://h:1/").db, 0);
}

TEST(RedisAddress, UnixSocketWithAndWithoutDatabase) {
  auto a = ok("unix:/run/redis/redis.sock?db=2");
  EXPECT_TRUE(a.unixSocket);
  EXPECT_EQ(a.path, "/run/redis/redis.sock");
  EXPECT_EQ(a.db, 2);
  EXPECT_EQ(ok("unix:/tmp/r.sock").db, 0);
}

TEST(RedisAddress, RefusalsSayWhatIsWrong) {
  EXPECT_NE(redisAddressProblem("redis://:secret@h:6379/0")->find("password_env"),
            std::string::npos);
  EXPECT_NE(redisAddressProblem("redis://user:pw@h")->find("refused"), std::string::npos);
  EXPECT_NE(redisAddressProblem("http://h:6379")->find("expected"), std::string::npos);
  EXPECT_NE(redisAddressProblem("redis://h:0/0")->find("port"), std::string::npos);
  EXPECT_NE(redisAddressProblem("redis://h:70000")->find("port"), std::string::npos);
  EXPECT_NE(redisAddressProblem("redis://h:6379/x")->find("database"), std::string::npos);
  EXPECT_NE(redisAddressProblem("redis://:6379")->find("no host"), std::string::npos);
  EXPECT_NE(redisAddressProblem("unix:relative.sock")->find("absolute"), std::string::npos);
  EXPECT_NE(redisAddressProblem("unix:/r.sock?database=1")->find("db=N"), std::string::npos);
}

TEST(ClusterConfig, AbsentMeansOneNodeAlone) {
  auto r = loadConfigText("[pool.a]\nhandler = \"m:f\"\n", "b.toml");
  ASSERT_TRUE(r.config);
  EXPECT_FALSE(r.config->cluster);
}

TEST(ClusterConfig, ErrorsNameTheKeyAndTheLine) {
  auto r = loadConfigText(
      "[pool.a]\nhandler = \"m:f\"\n\n[cluster]\nredis = \"redis://:pw@h:6379/0\"\n"
      "node = \"gpu a\"\nheartbeat = \"1ms\"\nclaim = \"30s\"\n",
      "b.toml");
  ASSERT_FALSE(r.config);
  std::string all;
  for (const auto& e : r.errors) all += e.describe() + "\n";
  EXPECT_NE(all.find("b.toml:5: cluster.redis"), std::string::npos) << all;
  EXPECT_NE(all.find("b.toml:6: cluster.node"), std::string::npos) << all;
  EXPECT_NE(all.find("cluster.heartbeat"), std::string::npos) << all;
  EXPECT_NE(all.find("cluster.claim"), std::string::npos) << all;
  auto missing = loadConfigText("[cluster]\nnode = \"n\"\n[pool.a]\nhandler = \"m:f\"\n", "c.toml");
  ASSERT_FALSE(missing.config);
  EXPECT_EQ(missing.errors.at(0).key, "cluster.redis");
}

TEST(ClusterConfig, ValuesAreRead) {
  auto r = loadConfigText(
      "[cluster]\nredis = \"unix:/tmp/r.sock?db=1\"\nnode = \"gpu-a.1\"\n"
      "password_env = \"PW\"\nclaim_after = \"1m\"\nheartbeat = \"250ms\"\n"
      "[pool.a]\nhandler = \"m:f\"\n",
      "b.toml");
  ASSERT_TRUE(r.config) << r.errors.at(0).describe();
  const ClusterConfig& c = *r.config->cluster;
  EXPECT_EQ(c.redis, "unix:/tmp/r.sock?db=1");
  EXPECT_EQ(c.node, "gpu-a.1");
  EXPECT_EQ(c.passwordEnv, "PW");
  EXPECT_EQ(c.claimAfter, std::chrono::minutes(1));
  EXPECT_EQ(c.heartbeat, std::chrono::milliseconds(250));
}

TEST(ClusterConfig, ClaimAfterMustOutlastThreeHeartbeats) {
  auto r = loadConfigText(
      "[cluster]\nredis = \"redis://h/0\"\nheartbeat = \"1s\"\nclaim_after = \"2s\"\n"
      "[pool.a]\nhandler = \"m:f\"\n",
      "d.toml");
  ASSERT_FALSE(r.config);
  EXPECT_EQ(r.errors.at(0).key, "cluster.claim_after");
  EXPECT_NE(r.errors.at(0).describe().find("d.toml:4"), std::string::npos)
      << r.errors.at(0).describe();
  EXPECT_NE(r.errors.at(0).describe().find("at least three heartbeats (heartbeat is 1000ms)"),
            std::string::npos);
}

}  // namespace
}  // namespace bulkhead::config
