#pragma once
// Async jobs shared across the cluster (docs/cluster.md, "Job ids, lookups and idempotency across
// nodes"): this node's job-id prefix, the records other nodes read to answer GET /v1/jobs/{id}
// for this node's jobs, Idempotency-Keys held cluster-wide, and cancel requests sent to a job's
// origin. The jobs service reaches it through jobs::SharedJobs.
//
// Job ids are unique across the cluster: a node's ids are its number (given once per node name
// by Redis, in bulkhead:node_numbers) times 2^40 plus its own count, so they stay below 2^53 and
// exact in JavaScript. A node asks Redis for its number at start and after every reconnect
// (Redis may have lost its data), asking first for the number its journal's ids already carry.
//
// Owns: one thread with its own blocking connection (redis_connection.h), running commands in
// order: writes of records (kept and retried while Redis is away, so an outcome is never lost on
// the way), and claims and lookups (answered `unreachable` at once while it is away). Callbacks
// run on the event loop through `post`. It may not decide anything about jobs (the jobs service
// does) or read the journal.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "config/config.h"
#include "config/redis_address.h"
#include "jobs/shared_jobs.h"

namespace bulkhead::cluster {

class RedisConnection;

class JobRecords : public jobs::SharedJobs {
 public:
  using Post = std::function<void(std::function<void()>)>;
  using Log = std::function<void(const std::string&)>;
  static constexpr int kIdBits = 40;
  static constexpr std::uint64_t kMaxNodeNumber = (1u << 13) - 1;  // ids stay below 2^53

  JobRecords(const config::ClusterConfig& config, std::string node, std::string password, Post post,
             Log log);
  // Writes the records still queued (for up to 5 s while Redis answers), then stops.
  ~JobRecords() override;
  JobRecords(const JobRecords&) = delete;
  JobRecords& operator=(const JobRecords&) = delete;

  // `lastId`: the largest job id this node gave before (its journal's). `numbered` is called on
  // the event loop with the first id of this node's range whenever Redis gives it a number.
  void start(std::uint64_t lastId, std::function<void(std::uint64_t firstId)> numbered);
  // Waits until this node has its number (or atMost has passed): the first id of its range.
  std::optional<std::uint64_t> waitNumbered(std::chrono::nanoseconds atMost);
  std::uint64_t nodeNumber() const { return number_; }

  bool connected() const override { return connected_; }
  bool foreign(std::uint64_t id) const override;
  void claimKey(const std::string& key, std::uint64_t id, const std::string& pool,
                std::function<void(std::optional<jobs::SharedClaim>)> done) override;
  void releaseKey(const std::string& key, std::uint64_t id) override;
  void accepted(std::uint64_t id, const std::string& pool, std::function<void()> recorded) override;
  void finished(const core::JobReport& report, std::optional<int> runs) override;
  void lookup(std::uint64_t id, std::function<void(jobs::SharedLookup)> done) override;
  void requestCancel(std::uint64_t id, const std::string& origin) override;
  std::size_t unwritten() const;  // records waiting for Redis

 private:
  struct Command {
    // Runs on the thread; false when the connection failed.
    std::function<bool(RedisConnection&)> run;
    // Kept until Redis takes it; otherwise `unreachable` is called when it cannot be run.
    bool kept = false;
    std::function<void()> unreachable;
    // A kept command's caller, told once: when it ran, or when Redis is found away.
    std::function<void()> settled;
  };

  void push(Command command);
  void loop();
  bool number(RedisConnection& c);

  const config::RedisAddress address_;
  const std::string node_;
  const std::string password_;
  const std::chrono::nanoseconds heartbeat_;
  const Post post_;
  const Log log_;
  std::uint64_t wantedNumber_ = 0;
  std::function<void(std::uint64_t)> numbered_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable numberedWake_;
  bool stopping_ = false;
  std::deque<Command> commands_;
  std::atomic<bool> connected_{false};
  std::atomic<std::uint64_t> number_{0};
  std::thread thread_;
};

}  // namespace bulkhead::cluster
