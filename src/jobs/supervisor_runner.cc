#include "jobs/supervisor_runner.h"

namespace bulkhead::jobs {

std::optional<RunnerRefusal> SupervisorRunner::submitWithId(core::JobId id, std::string_view pool,
                                                            core::Payload payload,
                                                            const RunOptions& options,
                                                            Reply reply) {
  runtime::JobOptions run;
  run.timeout = options.timeout;
  run.deadline = options.deadline;
  run.async = options.async;
  run.allowPoison = options.allowPoison;
  auto refused = supervisor_.submitWithId(id, pool, std::move(payload), run, std::move(reply));
  if (!refused) return std::nullopt;
  switch (*refused) {
    case runtime::Supervisor::SubmitError::kUnknownPool:
      return RunnerRefusal::kUnknownPool;
    case runtime::Supervisor::SubmitError::kPayloadTooLarge:
      return RunnerRefusal::kPayloadTooLarge;
    case runtime::Supervisor::SubmitError::kDuplicateId:
      return RunnerRefusal::kDuplicateId;
  }
  return RunnerRefusal::kDuplicateId;
}

AsioTimers::~AsioTimers() {
  for (auto& [id, timer] : timers_) timer->cancel();
}

core::Time AsioTimers::now() const { return core::fromSteady(std::chrono::steady_clock::now()); }

Timers::TimerId AsioTimers::startTimer(core::Duration after, std::function<void()> fire) {
  const TimerId id = nextId_++;
  auto timer = std::make_shared<boost::asio::steady_timer>(io_, after);
  timers_.emplace(id, timer);
  timer->async_wait([this, id, fire = std::move(fire)](const boost::system::error_code& ec) {
    // A cancelled timer whose expiry was already queued still arrives here without an error:
    // only one still in the map fires.
    if (ec || timers_.erase(id) == 0) return;
    fire();
  });
  return id;
}

void AsioTimers::cancelTimer(TimerId id) {
  auto it = timers_.find(id);
  if (it == timers_.end()) return;
  it->second->cancel();
  timers_.erase(it);
}

}  // namespace bulkhead::jobs
