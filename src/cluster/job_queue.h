#pragma once
// The cluster's job queues in Redis Streams (docs/cluster.md, "Jobs across nodes"): each pool's
// jobs in the stream bulkhead:pool:NAME:jobs, read through the consumer group "bulkhead" with this
// node's name as the consumer; each node's outcomes in bulkhead:outcomes:NAME.
//
// Owns: two threads, each with its own blocking connection (redis_connection.h), and what crosses
// between them and the event loop under one mutex:
// - the reader (job_queue_reader.cc) blocks in one XREADGROUP on this node's outcome stream and
//   on the streams of the pools it wants jobs for (never more than it wants: no node hoards
//   work), takes back after each (re)connect the entries delivered to it that it has not taken
//   (their reply was lost with the connection: jobs and outcomes), and every quarter of claim_after
//   takes over entries another node left unacknowledged that long (XAUTOCLAIM: that node died or
//   lost Redis), with their delivery count as the job's runs;
// - the writer adds jobs (XADD; a payload over 1 MiB in a key of its own), stores outcomes and
//   acknowledges their entries in one MULTI (XADD to the origin's stream, XACK, XDEL), records
//   quarantined payloads for the cluster, keeps outcomes and records it could not write until
//   Redis is back, refreshes the entries this node is running every heartbeat (XCLAIM ... JUSTID,
//   so no other node mistakes a long job for a dead node's), and wakes the reader (CLIENT UNBLOCK)
//   when this node starts wanting jobs of a pool it was not reading.
// Handlers run on the event loop through `post`. It may not decide anything about jobs
// (cluster_runner.h does).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/job_transport.h"
#include "config/config.h"
#include "config/redis_address.h"

struct redisReply;  // hiredis

namespace bulkhead::cluster {

class RedisConnection;

class JobQueue : public JobTransport {
 public:
  using Post = std::function<void(std::function<void()>)>;
  using Log = std::function<void(const std::string&)>;

  // `pools`: this node's pools, whose streams it reads. Starts nothing until start().
  JobQueue(const config::ClusterConfig& config, std::string node, std::string password,
           std::vector<std::string> pools, Post post, Log log);
  // Writes the outcomes still queued (for up to 5 s while Redis answers), then stops.
  ~JobQueue() override;
  JobQueue(const JobQueue&) = delete;
  JobQueue& operator=(const JobQueue&) = delete;

  void start(TransportHandlers handlers);
  // Waits until jobs can be sent (or atMost has passed): whether they can.
  bool waitConnected(std::chrono::nanoseconds atMost);

  bool connected() const override { return connected_; }
  void enqueue(JobEntry job) override;
  void finish(const Delivery& delivery, OutcomeEntry outcome) override;
  void wantJobs(std::map<std::string, std::size_t> wanted) override;
  std::size_t outcomesUnwritten() const override;
  void quarantine(Quarantined record) override;

 private:
  struct Command {
    enum class Kind { kEnqueue, kFinish, kQuarantine } kind = Kind::kEnqueue;
    JobEntry job;          // enqueue
    Delivery delivery;     // finish
    OutcomeEntry outcome;  // finish
    Quarantined record;    // quarantine
    // Outcomes and quarantine records wait for Redis; a job that cannot be sent is answered.
    bool kept() const { return kind != Kind::kEnqueue; }
  };

  static constexpr auto kCommandTimeout = std::chrono::seconds(5);

  void readLoop();  // job_queue_reader.cc
  void writeLoop();
  bool prepareReader(RedisConnection& c, std::string& error);
  bool readOnce(RedisConnection& c);
  bool claimAbandoned(RedisConnection& c);
  bool takeBackOwnPending(RedisConnection& c);
  bool holds(const std::string& stream, const std::string& entryId);  // running it here
  bool takeOutcome(RedisConnection& c, const std::string& id, const redisReply* fields);
  bool takeEntry(RedisConnection& c, const std::string& key, const std::string& pool,
                 const std::string& id, const redisReply* fields, std::uint64_t runs,
                 const char* why);
  std::optional<std::uint64_t> pendingHere(RedisConnection& c, const std::string& key,
                                           const std::string& id);
  bool execute(RedisConnection& c, const Command& command);
  bool enqueueJob(RedisConnection& c, const JobEntry& job);
  bool storeOutcome(RedisConnection& c, const Delivery& d, const OutcomeEntry& outcome);
  bool storeQuarantine(RedisConnection& c, const Quarantined& record);
  bool refreshHeld(RedisConnection& c);
  bool handOver(RedisConnection& c, Delivery delivery);
  std::map<std::string, std::size_t> takeable() const;  // under mutex_
  void waitFor(std::condition_variable& cv, std::chrono::nanoseconds d);

  const config::RedisAddress address_;
  const std::string node_;
  const std::string password_;
  const std::vector<std::string> pools_;
  const std::string outcomeKey_;
  const std::chrono::nanoseconds claimAfter_;
  const std::chrono::nanoseconds heartbeat_;
  const Post post_;
  const Log log_;
  const std::string nonce_;  // tells this run's payload keys from an earlier run's (same ids)
  TransportHandlers handlers_;

  mutable std::mutex mutex_;
  std::condition_variable writerWake_;
  std::condition_variable readerWake_;
  std::condition_variable connectedWake_;
  bool stopping_ = false;
  std::deque<Command> commands_;
  std::map<std::string, std::size_t> wanted_;          // by pool, as the event loop last said
  std::map<std::string, std::size_t> inTransit_;       // handed to the loop, not yet seen by it
  std::map<std::string, std::set<std::string>> held_;  // stream -> entries this node runs
  bool unblockReader_ = false;
  std::atomic<bool> connected_{false};
  std::atomic<long long> readerClientId_{-1};
  bool writeRefused_ = false;  // the writer's: Redis refused a write for a passing reason
  std::thread reader_;
  std::thread writer_;
};

}  // namespace bulkhead::cluster
