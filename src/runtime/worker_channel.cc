// The worker channel: one worker's (or zygote's) control socket and stdout/stderr/stacks pipes.
// Owns: reading and writing them, feeding the bytes to the worker's proto::WorkerConnection (which
// decodes frames and checks the HELLO rule and the bodies) and turning its typed events into core
// events, draining what a dead worker left in the kernel buffers into its exit evidence, and
// closing it all. May not touch: policy (it posts core events) or the zygote's own events
// (zygote_driver.cc).

#include "runtime/shell_state.h"
#include "util/whole_transfers.h"

namespace bulkhead::runtime {

using nlohmann::json;

// proto::WorkerConnection speaks the wire's vocabulary; the core has its own.
core::ErrorInfo toCore(proto::ErrorInfo e) {
  return core::ErrorInfo{std::move(e.type), std::move(e.message), std::move(e.traceback)};
}

namespace {

core::ResultKind toCore(proto::ResultKind kind) {
  switch (kind) {
    case proto::ResultKind::kBytes:
      return core::ResultKind::kBytes;
    case proto::ResultKind::kJson:
      return core::ResultKind::kJson;
    case proto::ResultKind::kText:
      return core::ResultKind::kText;
  }
  return core::ResultKind::kBytes;
}

}  // namespace

std::shared_ptr<Supervisor::WorkerIo> Supervisor::makeWorkerIo(PoolRuntime& pool, core::WorkerId id,
                                                               std::string name,
                                                               os::WorkerProcess& process,
                                                               bool zygote) {
  auto worker = std::make_shared<WorkerIo>(
      io_, pool, id, std::move(name), static_cast<std::uint32_t>(pool.config.maxPayload), zygote);
  worker->control.assign(asio::local::stream_protocol(), process.control.release());
  worker->pipes[kStdout].assign(process.stdoutRead.release());
  worker->pipes[kStderr].assign(process.stderrRead.release());
  worker->pipes[kStacks].assign(process.stacksRead.release());
  for (int i = 0; i < 3; ++i) readPipe(worker, i);
  return worker;
}

// The pid is known: from here on the worker is reaped, signalled and read like any other.
void Supervisor::workerStarted(WorkerIo& worker, pid_t pid, os::UniqueFd pidfd) {
  worker.pid = pid;
  worker.pidfd = std::move(pidfd);
  auto shared = worker.shared_from_this();
  byPid_[pid] = shared;
  readControl(shared);
  post(worker.pool, core::WorkerSpawned{worker.id, pid});
}

// Readers wait for readiness and then read themselves, instead of letting the reactor read into a
// buffer: bytes stay in the kernel until we take them, so the exit path, which drains everything
// synchronously, can never miss output that a queued completion handler was holding.
Supervisor::ReadResult Supervisor::readPipeNow(WorkerIo& worker, int which, std::size_t limit) {
  std::size_t taken = 0;
  auto& buffer = worker.pipeBuffer;
  while (taken < limit) {
    ssize_t n = ::read(worker.pipes[which].native_handle(), buffer.data(), buffer.size());
    if (n > 0) {
      worker.tails[which].append({buffer.data(), static_cast<std::size_t>(n)});
      taken += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return ReadResult::kDrained;
    return ReadResult::kClosed;  // EOF or a hard error
  }
  return ReadResult::kMore;
}

// One recvmsg: bytes, and any file descriptors that came with them (RESULT_BYTES_FD's memfd)
// queued for the frame that claims them. More than kMaxQueuedFds unclaimed, or a truncated
// ancillary message, is the worker's error: it could otherwise fill our fd table.
ssize_t Supervisor::receiveControl(WorkerIo& worker, char* into, std::size_t room) {
  std::vector<os::UniqueFd> fds;
  bool truncated = false;
  const long n =
      os::receiveWithFds(worker.control.native_handle(), into, room, fds, truncated, kMaxQueuedFds);
  for (auto& fd : fds) worker.receivedFds.push_back(std::move(fd));
  if (truncated || worker.receivedFds.size() > kMaxQueuedFds) {
    worker.receivedFds.clear();
    misbehaved(worker, "it sent more file descriptors than frames that carry them");
  }
  return n;
}

Supervisor::ReadResult Supervisor::readControlNow(WorkerIo& worker, std::size_t limit) {
  std::size_t taken = 0;
  auto& buffer = worker.controlBuffer;
  while (taken < limit && !worker.misbehaving && !worker.closed) {
    // A large result body is read straight into its final string; anything else via the buffer.
    const std::span<char> direct = worker.connection.bodyBuffer();
    char* into = direct.empty() ? buffer.data() : direct.data();
    const std::size_t room = direct.empty() ? buffer.size() : direct.size();
    ssize_t n = receiveControl(worker, into, room);
    if (n > 0) {
      if (direct.empty()) {
        consumeControlBytes(worker, {into, static_cast<std::size_t>(n)});
      } else {
        worker.connection.bodyReceived(static_cast<std::size_t>(n));
        handleConnectionEvents(worker);
      }
      taken += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return ReadResult::kDrained;
    if (n == 0 && !worker.misbehaving) {
      worker.connection.receiveEof();
      handleConnectionEvents(worker);  // a PeerError if the stream stopped inside a frame
    }
    return ReadResult::kClosed;
  }
  return ReadResult::kMore;
}

void Supervisor::readPipe(const std::shared_ptr<WorkerIo>& worker, int which) {
  worker->pipes[which].async_wait(
      asio::posix::stream_descriptor::wait_read,
      [this, worker, which](const boost::system::error_code& ec) {
        if (ec || worker->closed) return;
        if (readPipeNow(*worker, which, kReadPerWakeup) == ReadResult::kClosed) return;
        readPipe(worker, which);  // EOF: stop; a grandchild may hold the pipe, never wait on it
      });
}

void Supervisor::readControl(const std::shared_ptr<WorkerIo>& worker) {
  worker->control.async_wait(
      asio::local::stream_protocol::socket::wait_read,
      [this, worker](const boost::system::error_code& ec) {
        if (ec || worker->closed) return;
        auto result = readControlNow(*worker, kReadPerWakeup);
        drain();
        if (result != ReadResult::kClosed && !worker->misbehaving && !worker->closed) {
          readControl(worker);
        }
      });
}

void Supervisor::consumeControlBytes(WorkerIo& worker, std::string_view bytes) {
  if (worker.misbehaving) return;
  worker.connection.receive(bytes);
  handleConnectionEvents(worker);
}

void Supervisor::handleConnectionEvents(WorkerIo& worker) {
  for (;;) {
    proto::ConnectionEvent event = worker.connection.next();
    if (std::holds_alternative<proto::NeedMore>(event)) return;
    if (std::holds_alternative<proto::Closed>(event)) return;
    if (auto* err = std::get_if<proto::PeerError>(&event)) {
      misbehaved(worker, std::move(err->reason));
      return;
    }
    if (worker.isZygote) {
      handleZygoteEvent(worker, std::move(event));
    } else {
      handleWorkerEvent(worker, std::move(event));
    }
    if (worker.misbehaving || worker.closed) return;  // e.g. a zygote stopped by its own frame
  }
}

void Supervisor::misbehaved(WorkerIo& worker, std::string reason) {
  if (worker.misbehaving) return;
  worker.misbehaving = true;
  logLine("worker " + worker.name + " (pid " + std::to_string(worker.pid) +
          ") broke the protocol: " + reason);
  if (worker.isZygote) {
    killZygote(worker.pool, "it broke the protocol: " + reason);
    return;
  }
  post(worker.pool, core::WorkerMisbehaved{worker.id, std::move(reason)});
}

void Supervisor::handleWorkerEvent(WorkerIo& worker, proto::ConnectionEvent event) {
  if (auto* ready = std::get_if<proto::Ready>(&event)) {
    if (ready->payloadView) worker.pool.payloadView = ready->payloadView;
    post(worker.pool, core::WorkerReady{worker.id});
  } else if (auto* failed = std::get_if<proto::StartFailed>(&event)) {
    post(worker.pool, core::WorkerStartFailed{worker.id, toCore(std::move(failed->error))});
  } else if (auto* result = std::get_if<proto::Result>(&event)) {
    core::Payload body;
    if (result->fileSize) {
      body = takeResultFile(worker, *result->fileSize);
      if (!body) return;  // misbehaved
    } else {
      body = core::makePayload(std::move(result->body));
    }
    worker.lentPayload.reset();  // answered: its JOB_FD mapping is gone, or PAYLOAD_KEPT said not
    // The /proc reads after a job cost ~0.1 ms: with nothing queued for the pool, the answer goes
    // out first. No job can reach the worker before its sample: this handler runs on first, and
    // drain leaves an idle worker idle when nothing is queued. A worker with a job delivered
    // (prefetch) starts it now: sampled first, as close to the job's end as it gets.
    const bool answerFirst =
        worker.pool.pool.queueLength() == 0 && !worker.pool.pool.hasDeliveredJob(worker.id);
    if (!answerFirst) sampleAfterJob(worker);
    post(worker.pool,
         core::JobResultReceived{worker.id, result->jobId, toCore(result->kind), std::move(body)});
    if (answerFirst) {
      drain();
      if (!worker.closed && !worker.misbehaving) sampleAfterJob(worker, true);
    }
  } else if (auto* error = std::get_if<proto::JobError>(&event)) {
    worker.lentPayload.reset();
    sampleAfterJob(worker);
    std::uint64_t pidsMaxEvents = 0;
    if (worker.cgroup) pidsMaxEvents = cgroups_->counters(*worker.cgroup).pidsMaxEvents;
    post(worker.pool, core::JobErrorReceived{worker.id, error->jobId,
                                             toCore(std::move(error->error)), pidsMaxEvents});
  } else if (std::holds_alternative<proto::PayloadKept>(event)) {
    if (worker.lentPayload && worker.lentPayload->inFile()) {
      payloadFiles_->keep(worker.lentPayload->fd());
    }
  } else if (auto* beat = std::get_if<proto::Heartbeat>(&event)) {
    post(worker.pool, core::WorkerHeartbeat{worker.id, beat->jobId, beat->progress,
                                            beat->cpuSeconds, std::move(beat->stack)});
  }
  // Hello needs nothing; the connection refuses a zygote's frames from a worker.
}

// RESULT_BYTES_FD: the memfd that came with the frame, checked before anyone reads it.
core::Payload Supervisor::takeResultFile(WorkerIo& worker, std::uint64_t size) {
  if (worker.receivedFds.empty()) {
    misbehaved(worker, "RESULT_BYTES_FD came without a file descriptor");
    return nullptr;
  }
  os::UniqueFd fd = std::move(worker.receivedFds.front());
  worker.receivedFds.pop_front();
  // The job's own payload file given back (a memoryview handler returned its payload): the blob
  // already held, not a second one. A reused file is not sealed against its daemon's writes, so
  // the check below would refuse it.
  const core::Payload& lent = worker.lentPayload;
  if (lent && lent->inFile() && lent->size() == size && os::sameFile(fd.get(), lent->fd())) {
    return lent;
  }
  if (auto problem = os::checkSealedBlob(fd.get(), size)) {
    misbehaved(worker, "RESULT_BYTES_FD: " + *problem);
    return nullptr;
  }
  return os::fileBlob(std::move(fd), size);
}

// Payload files left unused go after a while (os/payload_files.h): looked at again while any is
// lent or cached.
void Supervisor::armPayloadTrim() {
  if (payloadTrimArmed_) return;
  const auto next = payloadFiles_->trim();
  if (!next) return;
  payloadTrimArmed_ = true;
  payloadTrim_->expiresAt(*next, [this] {
    payloadTrimArmed_ = false;
    armPayloadTrim();
  });
}

void Supervisor::sendFrame(WorkerIo& worker, std::string header, core::Payload body) {
  if (worker.closed) return;
  worker.writes.emplace_back(std::move(header), std::move(body));
  flushWrites(worker.shared_from_this());
}

void Supervisor::flushWrites(const std::shared_ptr<WorkerIo>& worker) {
  if (worker->writing || worker->writes.empty() || worker->closed) return;
  auto& [header, body] = worker->writes.front();
  if (body && body->inFile()) return sendWithFile(worker);
  worker->writing = true;
  std::array<asio::const_buffer, 2> buffers{
      asio::buffer(header),
      body ? asio::buffer(body->bytes().data(), body->bytes().size()) : asio::const_buffer()};
  asio::async_write(worker->control, buffers, util::AsMuchAsTheSocketTakes{},
                    [this, worker](const boost::system::error_code& ec, std::size_t) {
                      worker->writing = false;
                      if (worker->closed) return;
                      worker->writes.pop_front();
                      if (ec) {
                        // EPIPE: the worker is gone or going; SIGCHLD tells the rest.
                        worker->writes.clear();
                        return;
                      }
                      flushWrites(worker);
                      if (worker->isZygote && worker->writes.empty()) {
                        tendZygote(worker->pool);  // FORKs held back behind a partial one
                        drain();
                      }
                    });
}

// JOB_FD: its 24 bytes go in one sendmsg with the memfd attached, so the fd arrives with the
// frame. A socket too full for even one byte waits for room; the rest of a short send follows
// as plain bytes (the fd went with the first).
void Supervisor::sendWithFile(const std::shared_ptr<WorkerIo>& worker) {
  auto& [frame, body] = worker->writes.front();
  const long sent = os::sendWithFds(worker->control.native_handle(), frame, {body->fd()});
  if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    worker->writing = true;
    worker->control.async_wait(asio::local::stream_protocol::socket::wait_write,
                               [this, worker](const boost::system::error_code& ec) {
                                 worker->writing = false;
                                 if (ec || worker->closed) return;
                                 flushWrites(worker);
                               });
    return;
  }
  if (sent < 0) {  // EPIPE: the worker is gone or going; SIGCHLD tells the rest.
    worker->writes.clear();
    return;
  }
  // What is left is plain bytes: the fd is delivered. Its file is held until the worker answers
  // or is reaped, so that it is not written again while the worker may map it.
  worker->lentPayload = std::move(body);
  armPayloadTrim();
  worker->writes.front() = {frame.substr(static_cast<std::size_t>(sent)), nullptr};
  if (worker->writes.front().first.empty()) worker->writes.pop_front();
  flushWrites(worker);
}

void Supervisor::onChildExit(pid_t pid, int status) {
  auto it = byPid_.find(pid);
  if (it == byPid_.end()) {
    orphansReaped_++;  // a grandchild reparented to us (we are a child subreaper)
    unclaimedExits_.record(pid, status, now());  // a FORKED may claim it (core/exit_claims.h)
    return;
  }
  auto worker = it->second;
  byPid_.erase(it);
  // Whatever its children still do, they go with it: they may hold its pipes open forever.
  host_->signalGroup(pid, SIGKILL);
  if (worker->closed) {
    worker->lentPayload.reset();  // reaped: it maps nothing any more
    return;                       // released earlier by the core
  }

  // Frames and bytes it wrote before dying are in the kernel buffers: take them now, without
  // waiting for an EOF that a surviving grandchild could withhold.
  readControlNow(*worker, std::numeric_limits<std::size_t>::max());
  for (int i = 0; i < 3; ++i) readPipeNow(*worker, i, kFinalDrainLimit);
  worker->lentPayload.reset();  // reaped, its last frames read: it maps nothing any more

  if (worker->isZygote) {
    std::string reason = WIFSIGNALED(status)
                             ? "killed by " + std::string(core::signalName(WTERMSIG(status)))
                             : "exited with code " + std::to_string(WEXITSTATUS(status));
    PoolRuntime& pool = worker->pool;
    if (pool.zygote->startError) {
      reason += ": preload failed: " + pool.zygote->startError->type + ": " +
                pool.zygote->startError->message;
    } else if (auto tail = worker->tails[kStderr].tail(); !tail.empty()) {
      reason += "; stderr ends: " + tail.substr(tail.size() > 400 ? tail.size() - 400 : 0);
    }
    closeWorkerIo(*worker);
    if (pool.zygote->io == worker) zygoteGone(pool, reason);
    return;
  }

  core::ExitEvidence evidence;
  if (WIFSIGNALED(status)) {
    evidence.signal = WTERMSIG(status);
    evidence.coreDumped = WCOREDUMP(status);
  } else if (WIFEXITED(status)) {
    evidence.exitCode = WEXITSTATUS(status);
  }
  evidence.stderrTail = worker->tails[kStderr].tail();
  evidence.stderrDroppedBytes = worker->tails[kStderr].droppedBytes();
  evidence.stdoutTail = worker->tails[kStdout].tail();
  evidence.stacks = worker->tails[kStacks].tail();
  if (worker->cgroup) {
    auto counters = cgroups_->counters(*worker->cgroup);
    evidence.oomKilled = counters.oomKills > 0;
    evidence.memoryPeakBytes = counters.memoryPeakBytes;
    evidence.pidsMaxEvents = counters.pidsMaxEvents;
  }
  closeWorkerIo(*worker);
  post(worker->pool, core::WorkerExited{worker->id, std::move(evidence)});
}

void Supervisor::removeCgroup(os::WorkerCgroup& cgroup) {
  std::string error;
  if (!cgroups_->remove(cgroup, &error))
    logLine("cannot remove cgroup " + cgroup.name() + ": " + error);
}

void Supervisor::closeWorkerIo(WorkerIo& worker) {
  worker.closed = true;
  if (worker.cgroup) {
    removeCgroup(*worker.cgroup);  // kills whatever is still in it
    worker.cgroup.reset();
  } else if (!worker.isZygote && worker.pid > 0) {
    killLeftovers(worker);  // the same through /proc: setsid'd grandchildren left its group
  }
  boost::system::error_code ignored;
  worker.control.close(ignored);
  for (auto& pipe : worker.pipes) pipe.close(ignored);
  worker.writes.clear();
  worker.receivedFds.clear();
  killOrphansAtShutdown();
}

}  // namespace bulkhead::runtime
