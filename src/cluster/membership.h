#pragma once
// This daemon as one node of a cluster that meets in Redis (docs/cluster.md): who is alive and
// what pools each one has. Owns the Redis connection of the cluster's membership and the last
// view of it.
//
// One dedicated thread holds a blocking hiredis connection: every heartbeat it announces this
// node (SET bulkhead:node:NAME <json> PX 3*heartbeat: a node that stops is gone from every view
// three heartbeats later; SADD bulkhead:nodes NAME) and reads the others (SMEMBERS + MGET; a
// name whose key expired leaves the set). No keyspace scan: a heartbeat costs the same with
// millions of job records in the database. The event loop hands it this node's
// description and reads the last view, both under one mutex: the loop never waits on Redis, and
// Redis being down shows as `connected: false` with the reason, not as a stuck daemon. Each view
// is published whole and never changed after (readers share it, no copy), and the loop is told
// at once (onRead), so what the node knows of the others lags Redis by one post, not by one more
// heartbeat. The thread reconnects by itself; on shutdown the node deletes its key (leaves at
// once).

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "config/redis_address.h"

namespace bulkhead::cluster {
class RedisConnection;
}

namespace bulkhead::cluster {

struct MembershipView {
  bool connected = false;
  std::string error;               // why not connected (or the last command's failure)
  std::vector<std::string> nodes;  // each node's announcement (JSON text), by name
  // Entries in each announced pool's stream (XLEN): jobs queued for the cluster or running
  // through it, not yet finished.
  std::map<std::string, long long> inStream;
  // Each pool's cluster quarantine (docs/cluster.md): payload fingerprint -> the report of the
  // job whose crashes quarantined it (JSON text), as any node recorded it.
  std::map<std::string, std::map<std::string, std::string>> quarantine;
  std::chrono::system_clock::time_point readAt{};  // when `nodes` was read; epoch: never
};

class Membership {
 public:
  // `password`: what password_env's variable held ("" = none). Starts the thread.
  Membership(const config::ClusterConfig& config, std::string nodeName, std::string password);
  ~Membership();  // deletes this node's key (within a second), stops the thread
  Membership(const Membership&) = delete;
  Membership& operator=(const Membership&) = delete;

  const std::string& nodeName() const { return node_; }
  const std::string& redisAddress() const { return addressText_; }
  // This node as announced from the next heartbeat on (a JSON object's text).
  void describe(std::string json);
  // The last view read (never null); it does not change once published.
  std::shared_ptr<const MembershipView> view() const;
  // Called on the membership thread after each view is published (and when the connection
  // fails): post it to the loop. Set before the first read matters; never called after the
  // destructor began.
  void onRead(std::function<void()> callback);
  // Waits until the others have been read once (or atMost has passed): whether they have.
  bool waitForFirstRead(std::chrono::nanoseconds atMost) const;

 private:
  void run();
  bool beat(RedisConnection& c, std::string& error);
  bool readPools(RedisConnection& c, const std::vector<std::string>& nodes,
                 std::map<std::string, long long>& lengths, std::string& error);
  void wait(std::chrono::nanoseconds d);
  void publish();  // working_ as the current view, and onRead told

  const config::RedisAddress address_;
  const std::string addressText_;
  const std::string node_;
  const std::string password_;
  const std::chrono::nanoseconds heartbeat_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  mutable std::condition_variable firstRead_;
  bool stopping_ = false;
  std::string description_;
  std::shared_ptr<const MembershipView> current_;
  std::function<void()> onRead_;
  MembershipView working_;  // the run thread's, published whole after each heartbeat
  std::map<std::string, std::string> quarantineVersions_;  // the run thread's, by pool
  std::thread thread_;
};

// The name a node goes by when [cluster] node is not set.
std::string defaultNodeName();
// This node's name: [cluster] node, else defaultNodeName().
std::string nodeNameOf(const config::ClusterConfig& config);

}  // namespace bulkhead::cluster
