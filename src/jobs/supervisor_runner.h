#pragma once
// The jobs service's two seams bound to the real daemon: PoolRunner over runtime::Supervisor and
// Timers over the io_context's steady clock.
//
// Owns: nothing but the translation. It may not add policy: every decision stays in the service
// (jobs_service.h) or in the supervisor.

#include <boost/asio.hpp>
#include <map>
#include <memory>

#include "jobs/pool_runner.h"
#include "runtime/supervisor.h"

namespace bulkhead::jobs {

class SupervisorRunner : public PoolRunner {
 public:
  explicit SupervisorRunner(runtime::Supervisor& supervisor) : supervisor_(supervisor) {}

  bool shuttingDown() const override { return supervisor_.shuttingDown(); }
  bool hasPool(std::string_view pool) const override { return supervisor_.hasPool(pool); }
  std::uint64_t maxPayload(std::string_view pool) const override {
    return supervisor_.maxPayload(pool);
  }
  core::JobId reserveJobId() override { return supervisor_.reserveJobId(); }
  void startJobIdsAfter(core::JobId last) override { supervisor_.startJobIdsAfter(last); }
  std::optional<RunnerRefusal> submitWithId(core::JobId id, std::string_view pool,
                                            core::Payload payload, const RunOptions& options,
                                            Reply reply) override;
  void cancel(core::JobId id) override { supervisor_.cancel(id); }
  std::optional<std::string> jobState(core::JobId id) const override {
    return supervisor_.jobState(id);
  }

 private:
  runtime::Supervisor& supervisor_;
};

class AsioTimers : public Timers {
 public:
  explicit AsioTimers(boost::asio::io_context& io) : io_(io) {}
  ~AsioTimers() override;
  core::Time now() const override;
  TimerId startTimer(core::Duration after, std::function<void()> fire) override;
  void cancelTimer(TimerId id) override;

 private:
  boost::asio::io_context& io_;
  TimerId nextId_ = 1;
  std::map<TimerId, std::shared_ptr<boost::asio::steady_timer>> timers_;
};

}  // namespace bulkhead::jobs
