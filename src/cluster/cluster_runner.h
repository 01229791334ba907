#pragma once
// The jobs service's pools, cluster-wide (docs/cluster.md, "Jobs across nodes"): a PoolRunner
// that runs a job on this node when one of its workers is free, and otherwise hands it to the
// pool's Redis stream, from which whichever node has a free worker for it takes it. It also runs
// the jobs this node takes from the streams, and answers the callers of the jobs it sent when
// their outcomes come back.
//
// Owns: that choice, the jobs sent and waiting for an outcome (their replies, their deadlines),
// how many jobs of each pool this node wants from the streams (its free workers), and the
// cluster-wide poison rules: a job the cluster handed out more than poison_after times without an
// outcome (each node that took it died or lost Redis) ends `poison` instead of going round again,
// and a payload quarantined on any node is refused as `poison` on every node.
// It may not talk to Redis (JobTransport does) or decide how a job runs here (the local runner).

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cluster/job_transport.h"
#include "jobs/pool_runner.h"

namespace bulkhead::cluster {

// A pool as the other nodes announce it.
struct RemotePool {
  std::size_t nodes = 0;         // live nodes that have it
  std::uint64_t maxPayload = 0;  // the smallest max_payload among them
  core::Time lastSeen{};         // ClusterRunner: when an announcement last had it
};
using Directory = std::map<std::string, RemotePool, std::less<>>;

// The pools of every node but `self` that is alive and not shutting down, from their
// announcements (JSON texts, as Membership reads them). Malformed announcements are skipped.
Directory directoryFrom(const std::vector<std::string>& announcements, const std::string& self);

class ClusterRunner : public jobs::PoolRunner {
 public:
  struct LocalPools {
    // Workers of the pool ready for a job now, less the jobs queued for them.
    std::function<std::size_t(std::string_view pool)> freeWorkers;
    std::function<std::vector<std::string>()> names;
    std::map<std::string, int, std::less<>> poisonAfter;  // per pool; 0: off
    // A pool no other node announces is still taken for theirs for this long ([cluster]
    // claim_after): a node slow to heartbeat under load does not make its pools unknown. Once
    // it is forgotten, the jobs sent for it are answered `unavailable` rather than left waiting
    // for a node that may never come.
    core::Duration forgetAfter = std::chrono::seconds(30);
  };

  ClusterRunner(jobs::PoolRunner& local, jobs::Timers& timers, JobTransport& transport,
                std::string node, LocalPools pools, std::function<std::int64_t()> unixMsNow);
  ~ClusterRunner() override;

  // What the transport calls (on the event loop).
  TransportHandlers handlers();
  // The other nodes' pools, as the last heartbeat read them (pools missing from it are kept
  // for forgetAfter); answers the jobs sent for a pool once it is forgotten.
  void setDirectory(const Directory& announced);
  // The cluster's quarantine as the last heartbeat read it: pool -> fingerprint -> report JSON.
  using QuarantineView = std::map<std::string, std::map<std::string, std::string>>;
  // Entries this node recorded are kept until a heartbeat has read them back from Redis. Until
  // the first call this node takes no job from the streams: it would not know what to refuse.
  void setQuarantine(QuarantineView quarantine);
  const QuarantineView& quarantine() const { return quarantine_; }
  // The other nodes' pools this node sends jobs to now (GET /v1/cluster "remote_pools").
  const Directory& directory() const { return directory_; }
  // Tells the transport how many jobs this node wants now; call when workers change.
  void tend();
  // The same for one pool, after one of its jobs started or ended: the transport hears only
  // when that pool's count changed (a busy pool's stays 0, job after job).
  void tend(std::string_view pool);
  std::size_t sentWaiting() const { return sent_.size(); }
  // This node is stopping: every job it sent and still waits for is answered `unavailable` now
  // (it may still run on another node, whose outcome will find no one here).
  void abandonWaiting();

  // This node's share of the cluster's jobs since it started (GET /v1/cluster, /metrics).
  struct Counters {
    std::uint64_t sent = 0;       // handed to a stream
    std::uint64_t taken = 0;      // taken from a stream and run (or ended) here
    std::uint64_t takenOver = 0;  // of those, taken over from a node that stopped refreshing it
    std::uint64_t poisoned = 0;   // ended poison here for having been handed out too often
  };
  const Counters& counters() const { return counters_; }
  std::size_t outcomesUnwritten() const { return transport_.outcomesUnwritten(); }

  bool shuttingDown() const override { return local_.shuttingDown(); }
  bool hasPool(std::string_view pool) const override;
  std::uint64_t maxPayload(std::string_view pool) const override;
  std::optional<std::string> unreachable(std::string_view pool) const override;
  core::JobId reserveJobId() override { return local_.reserveJobId(); }
  void startJobIdsAfter(core::JobId last) override { local_.startJobIdsAfter(last); }
  std::optional<jobs::RunnerRefusal> submitWithId(core::JobId id, std::string_view pool,
                                                  core::Payload payload,
                                                  const jobs::RunOptions& options,
                                                  Reply reply) override;
  void cancel(core::JobId id) override;
  std::optional<std::string> jobState(core::JobId id) const override;

 private:
  struct Sent {
    std::string pool;
    Reply reply;
    std::optional<jobs::Timers::TimerId> deadline;
  };

  bool runsHere(std::string_view pool) const;
  void send(core::JobId id, std::string_view pool, const core::Payload& payload,
            const jobs::RunOptions& options, Reply reply);
  void answer(core::JobId id, core::JobReport report);  // a sent job's caller, once
  void run(Delivery delivery);
  void finish(const Delivery& delivery, core::JobReport report);
  void outcomeArrived(OutcomeEntry outcome);
  std::optional<core::JobReport> refusedAsPoison(
      core::JobId id, std::string_view pool, bool allowPoison,
      const std::function<std::string()>& fingerprintOf) const;
  void noteQuarantine(const core::JobReport& report);

  jobs::PoolRunner& local_;
  jobs::Timers& timers_;
  JobTransport& transport_;
  const std::string node_;
  LocalPools pools_;
  std::function<std::int64_t()> unixMsNow_;
  Directory directory_;
  std::map<core::JobId, Sent> sent_;
  QuarantineView quarantine_;
  QuarantineView recordedHere_;  // not yet read back from Redis
  bool quarantineRead_ = false;
  std::map<std::string, std::size_t, std::less<>> wanted_;  // as the transport last heard it
  Counters counters_;
};

}  // namespace bulkhead::cluster
