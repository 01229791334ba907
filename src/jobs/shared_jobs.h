#pragma once
// What the jobs service needs to share async jobs with the other nodes of a cluster
// (docs/cluster.md, "Job ids, lookups and idempotency across nodes"): the seam between the
// service and Redis. Without [cluster] the service has none and every job is this node's alone.
// Tests drive the service through a fake of it.
//
// Owns: this interface and the plain types that cross it. It may not name Redis, threads or the
// event loop; every callback is called on the event loop, never before the call returns.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "core/events.h"
#include "core/outcome.h"

namespace bulkhead::jobs {

// A job as the cluster keeps it, written by the node that accepted it (its origin).
struct SharedRecord {
  std::string node;  // the origin, which runs its journal and hears a DELETE
  std::string pool;
  bool finished = false;
  std::optional<core::JobReport> report;  // when finished (with its result bytes)
  std::optional<int> runs;                // when finished: submissions, as its journal counted
};

// A lookup's answer: the record; or none, because Redis holds no record of that id (never
// given, or expired) or because Redis cannot be reached.
struct SharedLookup {
  std::optional<SharedRecord> record;
  bool unreachable = false;
};

// An Idempotency-Key claimed for a job: the id that holds it, which is the job's own when the
// key was new, with that job's record when it is another's.
struct SharedClaim {
  core::JobId holder = 0;
  std::optional<SharedRecord> record;
};

class SharedJobs {
 public:
  virtual ~SharedJobs() = default;
  // Whether Redis answers now (a keyed async submit is refused quickly when not).
  virtual bool connected() const = 0;
  // Whether the id was given by another node: its lookups and cancels go through the cluster.
  virtual bool foreign(core::JobId id) const = 0;
  // Claims `key` for job `id` of `pool` (and records the job as accepted), atomically across the
  // cluster; done gets the holder, or nullopt when Redis could not be reached.
  virtual void claimKey(const std::string& key, core::JobId id, const std::string& pool,
                        std::function<void(std::optional<SharedClaim>)> done) = 0;
  // Lets go of a key claimed for a job that was then not accepted (its journal refused it).
  virtual void releaseKey(const std::string& key, core::JobId id) = 0;
  // The job, accepted here, as the other nodes will see it until it ends. Kept while Redis is
  // away, as is finished(). `recorded` (optional) is called once the record is in Redis, or at
  // once when Redis is away (it is written when Redis returns): a caller answered after it can
  // ask any node for the job.
  virtual void accepted(core::JobId id, const std::string& pool,
                        std::function<void()> recorded) = 0;
  virtual void finished(const core::JobReport& report, std::optional<int> runs) = 0;
  virtual void lookup(core::JobId id, std::function<void(SharedLookup)> done) = 0;
  // Asks the job's origin to cancel it.
  virtual void requestCancel(core::JobId id, const std::string& origin) = 0;
};

}  // namespace bulkhead::jobs
