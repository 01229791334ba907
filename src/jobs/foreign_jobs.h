#pragma once
// Lookups and cancels of jobs another node of the cluster accepted (docs/cluster.md, "Job ids,
// lookups and idempotency across nodes"): their records are read through SharedJobs, and a
// caller that asked to wait for the outcome is answered as soon as a read finds it, reading
// again every kPollEvery until its wait ends.
//
// Owns: those waits and their timers. It may not talk to Redis (SharedJobs does) or read this
// node's journal (JobsService does, before it asks here).

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>

#include "jobs/jobs_service.h"

namespace bulkhead::jobs {

class ForeignJobs {
 public:
  static constexpr auto kPollEvery = std::chrono::milliseconds(100);

  ForeignJobs(SharedJobs& shared, Timers& timers);
  ~ForeignJobs();
  ForeignJobs(const ForeignJobs&) = delete;
  ForeignJobs& operator=(const ForeignJobs&) = delete;

  void get(core::JobId id, core::Duration wait, JobsService::AnswerCallback answer);
  void cancel(core::JobId id, JobsService::CancelCallback answer);
  std::size_t waiting() const { return waits_.size(); }

 private:
  struct Wait {
    core::JobId id = 0;
    core::Time until{};
    JobsService::AnswerCallback answer;
    std::optional<Timers::TimerId> timer;
  };

  void read(std::uint64_t ticket);
  void answerRead(std::uint64_t ticket, SharedLookup found);

  SharedJobs& shared_;
  Timers& timers_;
  std::map<std::uint64_t, Wait> waits_;
  std::uint64_t nextTicket_ = 1;
  std::shared_ptr<int> life_ = std::make_shared<int>(0);
};

}  // namespace bulkhead::jobs
