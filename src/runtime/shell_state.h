#pragma once
// The supervisor's private state, shared by the files that make up the shell (supervisor.cc,
// worker_channel.cc, zygote_driver.cc, sampler_driver.cc, containment.cc) and by nothing else.
// Owns: the per-worker, per-zygote and per-pool records the shell keeps beside the core. May not
// touch: policy; what a record means for a job or a worker is the core's to decide.

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "config/to_policy.h"
#include "core/signal_names.h"
#include "core/zygote_lifecycle.h"
#include "os/cgroups.h"
#include "os/memfd.h"
#include "os/proc.h"
#include "os/process.h"
#include "proto/frame.h"
#include "proto/worker_connection.h"
#include "runtime/operator_log.h"
#include "runtime/supervisor.h"
#include "runtime/worker_spec.h"
#include "util/byte_ring.h"

namespace bulkhead::runtime {

namespace asio = boost::asio;

inline constexpr std::size_t kTailBytes = 16 * 1024;
inline constexpr std::size_t kStacksBytes = 64 * 1024;
inline constexpr std::size_t kFinalDrainLimit =
    1 << 20;  // bytes read from a pipe after the worker died
inline constexpr std::size_t kSamplesKept = 120;
inline constexpr std::size_t kReadPerWakeup = 1 << 20;  // then yield to other workers and callers
// File descriptors a worker may have sent ahead of the frames that claim them (RESULT_BYTES_FD).
inline constexpr std::size_t kMaxQueuedFds = 4;
enum PipeIndex { kStdout = 0, kStderr = 1, kStacks = 2 };

inline void logLine(const std::string& line) { logAt(LogLevel::kWarning, line); }

// proto::WorkerConnection speaks the wire's vocabulary; the core has its own.
core::ErrorInfo toCore(proto::ErrorInfo e);

inline bool wantsLimits(const config::PoolConfig& c) {
  return c.memoryLimit > 0 || c.pidsLimit > 0;
}

struct Supervisor::WorkerIo : std::enable_shared_from_this<Supervisor::WorkerIo> {
  WorkerIo(asio::io_context& io, PoolRuntime& owner, core::WorkerId workerId,
           std::string workerName, std::uint32_t maxPayload, bool zygote)
      : pool(owner),
        id(workerId),
        name(std::move(workerName)),
        control(io),
        pipes{asio::posix::stream_descriptor(io), asio::posix::stream_descriptor(io),
              asio::posix::stream_descriptor(io)},
        connection(zygote ? proto::WorkerConnection::Role::kZygote
                          : proto::WorkerConnection::Role::kWorker,
                   maxPayload),
        tails{util::ByteRing(kTailBytes), util::ByteRing(kTailBytes), util::ByteRing(kStacksBytes)},
        isZygote(zygote) {}

  PoolRuntime& pool;
  core::WorkerId id;
  std::string name;
  pid_t pid = -1;
  os::UniqueFd pidfd;
  asio::local::stream_protocol::socket control;
  std::array<asio::posix::stream_descriptor, 3> pipes;
  proto::WorkerConnection connection;  // decoding, the HELLO rule and body schemas
  std::array<util::ByteRing, 3> tails;
  std::array<char, 16384> pipeBuffer;
  std::array<char, 65536> controlBuffer;
  const bool isZygote;  // the pool's template process, not a worker the core knows
  bool misbehaving = false;
  bool closed = false;
  std::deque<std::pair<std::string, core::Payload>> writes;
  std::deque<os::UniqueFd> receivedFds;  // SCM_RIGHTS not yet claimed by a frame
  // The running job's JOB_FD payload, held until the worker answered or was reaped: its file is
  // not written again while this process may map it (os/payload_files.h).
  core::Payload lentPayload;
  bool writing = false;
  std::optional<core::Time> lastJobEndSampleAt;
  bool mapsStale = true;  // jobs ran since /proc/PID/maps was last counted
  core::Duration mapsReadCost = std::chrono::milliseconds(5);  // cheapest sample with maps
  int lastMaps = 0;
  std::optional<os::WorkerCgroup> cgroup;
  std::deque<TimedSample> samples;  // for the API, bounded
};

struct Supervisor::ZygoteRuntime {
  explicit ZygoteRuntime(core::ZygotePolicy policy) : life(policy) {}
  core::ZygoteLifecycle life;
  std::shared_ptr<WorkerIo> io;  // the running zygote; null while down
  struct Fork {
    core::SpawnWorker action;
    std::vector<os::UniqueFd> fds;  // the worker's ends: control, stdout, stderr, stacks, cgroups
    std::string frame;              // FORK header + JSON body
    bool sent = false;
  };
  std::map<core::WorkerId, Fork> forks;  // asked for by the core, not yet FORKED
  std::optional<core::ErrorInfo> startError;
  bool spawnInstead = false;  // it refused and the pool says zygote_fallback = "spawn"
  std::uint64_t forked = 0;
};

struct Supervisor::PoolRuntime {
  PoolRuntime(config::PoolConfig c, core::PoolPolicy policy, core::Time now)
      : config(std::move(c)), pool(std::move(policy), now) {
    if (config.zygote) {
      core::ZygotePolicy z;
      z.startupTimeout = config.startupTimeout;
      zygote = std::make_unique<ZygoteRuntime>(z);
    }
  }
  config::PoolConfig config;
  core::Pool pool;
  std::map<core::WorkerId, std::shared_ptr<WorkerIo>> workers;
  std::unique_ptr<ZygoteRuntime> zygote;  // mode = "zygote" only
  core::Time nextSampleAt{};
  std::uint64_t eventsSeen = 0;
  std::optional<bool> payloadView;  // READY's payload_view, from the pool's latest READY worker
};

}  // namespace bulkhead::runtime
