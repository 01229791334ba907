#pragma once
// What the jobs service needs from the world around it, as two narrow interfaces: the pools that
// run jobs (the supervisor, through SupervisorRunner) and timers (Asio, through AsioTimers). Tests
// pass fakes of both, so the service is driven on simulated time without processes or sockets.
//
// Owns: these interfaces and the plain types that cross them. It may not name the supervisor,
// Asio or HTTP.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "core/outcome.h"
#include "core/pool.h"

namespace bulkhead::jobs {

// How one job is to be run, as the caller asked (docs/api.md, "Deadlines").
struct RunOptions {
  std::optional<core::Duration> timeout;  // one attempt's run limit; unset: job_timeout
  std::optional<core::Time> deadline;     // end-to-end: queue + every attempt
  bool async = false;                     // accepted with 202: no queue limit by default
  bool allowPoison = false;               // run a quarantined payload anyway
};

// Why the pools did not take a job (the job was not started and its reply will not be called).
enum class RunnerRefusal { kUnknownPool, kPayloadTooLarge, kDuplicateId, kClusterUnavailable };

class PoolRunner {
 public:
  using Reply = std::function<void(const core::JobReport&)>;
  virtual ~PoolRunner() = default;

  virtual bool shuttingDown() const = 0;
  virtual bool hasPool(std::string_view pool) const = 0;
  virtual std::uint64_t maxPayload(std::string_view pool) const = 0;
  // Why a pool that exists cannot take a job now (with [cluster]: it runs on other nodes and
  // Redis is not reachable); nullopt when it can.
  virtual std::optional<std::string> unreachable(std::string_view /*pool*/) const {
    return std::nullopt;
  }
  virtual core::JobId reserveJobId() = 0;
  virtual void startJobIdsAfter(core::JobId last) = 0;
  // Reply is called exactly once, perhaps before this returns, unless a refusal is returned.
  virtual std::optional<RunnerRefusal> submitWithId(core::JobId id, std::string_view pool,
                                                    core::Payload payload,
                                                    const RunOptions& options, Reply reply) = 0;
  virtual void cancel(core::JobId id) = 0;
  // "queued", "running", ...; nullopt once the job has ended (or was never known).
  virtual std::optional<std::string> jobState(core::JobId id) const = 0;
};

class Timers {
 public:
  using TimerId = std::uint64_t;
  virtual ~Timers() = default;
  virtual core::Time now() const = 0;
  // Calls fire once, after `after`, unless cancelled first.
  virtual TimerId startTimer(core::Duration after, std::function<void()> fire) = 0;
  virtual void cancelTimer(TimerId id) = 0;
};

}  // namespace bulkhead::jobs
