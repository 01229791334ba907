#pragma once
// The seam between the cluster's job policy (cluster_runner.h) and Redis (job_queue.h): what the
// policy asks of the queue, and what the queue tells the policy. Tests drive the policy through a
// fake of this interface, without Redis.
//
// Owns: this interface and the Delivery type. It may not name hiredis, threads or the event loop.

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "cluster/job_entry.h"

namespace bulkhead::cluster {

// One job this node took from a pool's stream: it must be finished, exactly once, by finish().
struct Delivery {
  std::string stream;      // the pool's stream key
  std::string entryId;     // the entry's id in it
  std::uint64_t runs = 1;  // times the cluster handed it out, this one included
  JobEntry job;
  bool payloadLost = false;  // its payload key had expired (or was deleted) when it was taken
};

// A payload that crashed poison_after workers of a pool on some node: every node refuses it.
struct Quarantined {
  std::string pool;
  std::string fingerprint;  // core::payloadFingerprint
  std::string reportJson;   // the report of the job whose attempts condemned it
};

// What the queue tells the policy; always called on the event loop.
struct TransportHandlers {
  std::function<void(Delivery)> job;                                   // a job to run here
  std::function<void(OutcomeEntry)> outcome;                           // a job sent from here ended
  std::function<void(std::uint64_t originId, std::string)> notQueued;  // enqueue failed: why
  std::function<void(CancelEntry)> cancel;  // another node asks to cancel a job of this one
};

class JobTransport {
 public:
  virtual ~JobTransport() = default;
  // Whether jobs can be handed to the cluster now (a submit is refused quickly when not).
  virtual bool connected() const = 0;
  // Adds the job to its pool's stream; on failure handlers.notQueued is called with its id.
  virtual void enqueue(JobEntry job) = 0;
  // Stores the outcome for its origin and acknowledges the delivery, in one transaction; kept
  // and retried while Redis is away.
  virtual void finish(const Delivery& delivery, OutcomeEntry outcome) = 0;
  // How many more jobs of each pool this node would start now (absent: none). The queue takes
  // no more than that from the streams, counting what it handed over since.
  virtual void wantJobs(std::map<std::string, std::size_t> wanted) = 0;
  // Outcomes finished here and not yet stored in Redis (it is away, or they are on their way).
  virtual std::size_t outcomesUnwritten() const { return 0; }
  // Records a quarantined payload for the whole cluster (kept and retried while Redis is away).
  virtual void quarantine(Quarantined /*record*/) {}
};

}  // namespace bulkhead::cluster
