#include "cluster/job_queue.h"

#include <algorithm>
#include <optional>
#include <variant>

#include "cluster/redis_connection.h"

namespace bulkhead::cluster {

namespace {

using std::chrono::milliseconds;
constexpr auto kFlushOnStop = std::chrono::seconds(5);
// Payloads larger than this go in a key of their own rather than in the stream's entry, which
// XAUTOCLAIM and XPENDING scans would otherwise carry around.
constexpr std::size_t kInlinePayloadLimit = 1 << 20;
// How long such a key lives: a job that waits in the stream longer ends `unavailable`.
constexpr auto kPayloadKeyLife = std::chrono::hours(24);
// A pool's cluster quarantine is forgotten this long after its last new entry.
constexpr auto kQuarantineLife = std::chrono::hours(24 * 7);

bool isError(const Reply& r) { return !r || r->type == REDIS_REPLY_ERROR; }

}  // namespace

JobQueue::JobQueue(const config::ClusterConfig& config, std::string node, std::string password,
                   std::vector<std::string> pools, Post post, Log log)
    : address_(std::get<config::RedisAddress>(config::parseRedisAddress(config.redis))),
      node_(std::move(node)),
      password_(std::move(password)),
      pools_(std::move(pools)),
      outcomeKey_(outcomeStreamKey(node_)),
      claimAfter_(config.claimAfter),
      heartbeat_(config.heartbeat),
      post_(std::move(post)),
      log_(std::move(log)),
      nonce_(std::to_string(std::chrono::duration_cast<milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count())) {}

JobQueue::~JobQueue() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  writerWake_.notify_all();
  readerWake_.notify_all();
  if (reader_.joinable()) reader_.join();
  if (writer_.joinable()) writer_.join();
}

void JobQueue::start(TransportHandlers handlers) {
  handlers_ = std::move(handlers);
  writer_ = std::thread([this] { writeLoop(); });
  reader_ = std::thread([this] { readLoop(); });
}

void JobQueue::enqueue(JobEntry job) {
  {
    std::lock_guard lock(mutex_);
    commands_.push_back(Command{Command::Kind::kEnqueue, std::move(job), {}, {}, {}});
  }
  writerWake_.notify_one();
}

void JobQueue::quarantine(Quarantined record) {
  {
    std::lock_guard lock(mutex_);
    commands_.push_back(Command{Command::Kind::kQuarantine, {}, {}, {}, std::move(record)});
  }
  writerWake_.notify_one();
}

void JobQueue::finish(const Delivery& delivery, OutcomeEntry outcome) {
  {
    std::lock_guard lock(mutex_);
    commands_.push_back(Command{Command::Kind::kFinish, {}, delivery, std::move(outcome), {}});
  }
  writerWake_.notify_one();
}

void JobQueue::wantJobs(std::map<std::string, std::size_t> wanted) {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    const auto before = takeable();
    wanted_ = std::move(wanted);
    for (const auto& [pool, n] : takeable()) wake |= n > 0 && !before.count(pool);
    unblockReader_ |= wake;
  }
  if (wake) writerWake_.notify_one();
}

std::size_t JobQueue::outcomesUnwritten() const {
  std::lock_guard lock(mutex_);
  return static_cast<std::size_t>(
      std::count_if(commands_.begin(), commands_.end(),
                    [](const Command& k) { return k.kind == Command::Kind::kFinish; }));
}

std::map<std::string, std::size_t> JobQueue::takeable() const {
  std::map<std::string, std::size_t> out;
  for (const auto& [pool, n] : wanted_) {
    auto it = inTransit_.find(pool);
    const std::size_t busy = it == inTransit_.end() ? 0 : it->second;
    if (n > busy) out[pool] = n - busy;
  }
  return out;
}

bool JobQueue::waitConnected(std::chrono::nanoseconds atMost) {
  std::unique_lock lock(mutex_);
  return connectedWake_.wait_for(lock, atMost, [this] { return connected_ || stopping_; }) &&
         connected_;
}

void JobQueue::waitFor(std::condition_variable& cv, std::chrono::nanoseconds d) {
  std::unique_lock lock(mutex_);
  if (stopping_) {  // flushing outcomes while Redis is away: retried calmly, not spun
    cv.wait_for(lock, std::min<std::chrono::nanoseconds>(d, std::chrono::milliseconds(100)));
    return;
  }
  cv.wait_for(lock, d, [this] { return stopping_; });
}

// ---- writer ----

void JobQueue::writeLoop() {
  std::optional<RedisConnection> c;
  std::string lastError;
  auto nextRefresh = std::chrono::steady_clock::now();  // connect at once, not a heartbeat later
  std::optional<std::chrono::steady_clock::time_point> stopBy;
  for (;;) {
    std::optional<Command> command;
    bool unblock = false;
    {
      std::unique_lock lock(mutex_);
      writerWake_.wait_until(lock, nextRefresh,
                             [this] { return stopping_ || !commands_.empty() || unblockReader_; });
      if (stopping_) {
        if (!stopBy) stopBy = std::chrono::steady_clock::now() + kFlushOnStop;
        // Jobs not yet sent are dropped (their callers' connections close with the daemon).
        std::erase_if(commands_, [](const Command& k) { return !k.kept(); });
        if (commands_.empty() || std::chrono::steady_clock::now() >= *stopBy) return;
      }
      if (!commands_.empty()) {  // moved out, not copied: a payload may be large
        command = std::move(commands_.front());
        commands_.pop_front();
      }
      unblock = std::exchange(unblockReader_, false);
    }
    // A command not done waits, first in line.
    auto putBack = [&] {
      std::lock_guard lock(mutex_);
      commands_.push_front(std::move(*command));
    };
    if (!c) {
      std::string error;
      c = RedisConnection::open(address_, password_, kCommandTimeout, error);
      connected_ = c.has_value();
      if (c) connectedWake_.notify_all();
      if (!c) {
        if (error != lastError) log_("cluster writer: " + error + " (retrying)");
        lastError = error;
        std::vector<std::uint64_t> failed;
        {
          std::lock_guard lock(mutex_);  // jobs are refused now, not when Redis is back
          for (const Command& k : commands_) {
            if (!k.kept()) failed.push_back(k.job.originId);
          }
          std::erase_if(commands_, [](const Command& k) { return !k.kept(); });
        }
        if (command && !command->kept()) failed.push_back(command->job.originId);
        if (command && command->kept()) putBack();
        for (std::uint64_t id : failed) {
          post_([this, id, error] { handlers_.notQueued(id, "Redis: " + error); });
        }
        waitFor(writerWake_,
                std::min<std::chrono::nanoseconds>(heartbeat_, std::chrono::seconds(1)));
        continue;
      }
      if (!lastError.empty()) log_("cluster writer: connected again");
      lastError.clear();
    }
    bool ok = true;
    if (unblock && readerClientId_ >= 0) {
      const std::string id = std::to_string(readerClientId_.load());
      ok = c->command({"CLIENT", "UNBLOCK", id}) != nullptr;
    }
    if (ok && command) {
      ok = execute(*c, *command);
      if (!ok && command->kept()) putBack();  // a job that failed to go is answered there
    } else if (command) {
      putBack();  // the connection failed before it: tried again on the next one
    }
    if (ok && std::chrono::steady_clock::now() >= nextRefresh) {
      ok = refreshHeld(*c);
      nextRefresh = std::chrono::steady_clock::now() + heartbeat_;
    }
    if (!ok) {
      c.reset();
      connected_ = false;
      // Refused for a passing reason on a sound connection: tried again calmly, not spun.
      if (std::exchange(writeRefused_, false)) {
        waitFor(writerWake_,
                std::min<std::chrono::nanoseconds>(heartbeat_, std::chrono::seconds(1)));
      }
    }
  }
}

// False when the connection failed (the command is kept unless it was a job to send).
bool JobQueue::execute(RedisConnection& c, const Command& k) {
  switch (k.kind) {
    case Command::Kind::kEnqueue:
      return enqueueJob(c, k.job);
    case Command::Kind::kFinish:
      return storeOutcome(c, k.delivery, k.outcome);
    case Command::Kind::kQuarantine:
      return storeQuarantine(c, k.record);
  }
  return true;
}

// A quarantined payload, for every node: the hash's entry and its version, which nodes watch.
bool JobQueue::storeQuarantine(RedisConnection& c, const Quarantined& q) {
  const std::string key = quarantineKey(q.pool);
  const std::string version = quarantineVersionKey(q.pool);
  const std::string life =
      std::to_string(std::chrono::duration_cast<milliseconds>(kQuarantineLife).count());
  auto replies = c.pipeline({{"HSET", key, q.fingerprint, q.reportJson},
                             {"PEXPIRE", key, life},
                             {"INCR", version},
                             {"PEXPIRE", version, life}});
  if (replies.size() != 4) return false;
  if (isError(replies[0]))
    log_("cluster writer: recording a quarantine: " + replyText(replies[0].get()));
  return true;
}

// Adds the job to its pool's stream; a failure is answered to the job's caller.
bool JobQueue::enqueueJob(RedisConnection& c, const JobEntry& original) {
  // A large payload goes in a key of its own, which lives as long as the job may wait.
  JobEntry job = original;
  std::vector<std::vector<std::string_view>> commands;
  std::string ttl;
  if (job.payload.size() > kInlinePayloadLimit) {
    job.payloadKey =
        "bulkhead:payload:" + job.origin + ":" + nonce_ + ":" + std::to_string(job.originId);
    ttl = std::to_string(std::chrono::duration_cast<milliseconds>(kPayloadKeyLife).count());
    commands.push_back({"SET", job.payloadKey, original.payload, "PX", ttl});
    job.payload.clear();
  }
  const Fields fields = encodeJob(job);
  const std::string key = poolStreamKey(job.pool);
  commands.push_back(withPairs({"XADD", key, "*"}, fields));
  auto replies = c.pipeline(commands);
  if (replies.size() != commands.size()) {
    // Not connected from now on, before the caller hears: its next submit is refused at once
    // (cluster_unavailable) rather than accepted and failed.
    connected_ = false;
    post_([this, id = job.originId, why = c.error()] { handlers_.notQueued(id, "Redis: " + why); });
    return false;
  }
  for (const Reply& r : replies) {
    if (!isError(r)) continue;
    post_([this, id = job.originId, why = replyText(r.get())] {
      handlers_.notQueued(id, "Redis: " + why);
    });
    break;
  }
  return true;
}

// The outcome for its origin and the delivery's acknowledgement, in one transaction.
bool JobQueue::storeOutcome(RedisConnection& c, const Delivery& d, const OutcomeEntry& outcome) {
  const Fields fields = encodeOutcome(outcome);
  const std::string key = outcomeStreamKey(d.job.origin);
  const auto add = withPairs({"XADD", key, "MAXLEN", "~", kOutcomeStreamLength, "*"}, fields);
  std::vector<std::vector<std::string_view>> commands{
      {"MULTI"}, add, {"XACK", d.stream, kConsumerGroup, d.entryId}, {"XDEL", d.stream, d.entryId}};
  if (!d.job.payloadKey.empty()) commands.push_back({"DEL", d.job.payloadKey});
  commands.push_back({"EXEC"});
  auto replies = c.pipeline(commands);
  if (replies.size() != commands.size()) return false;
  if (isError(replies.back())) {
    // EXECABORT names no cause: the first queued command refused says it.
    std::string why = replyText(replies.back().get());
    for (const Reply& r : replies) {
      if (r && r->type == REDIS_REPLY_ERROR && isPassingError(replyText(r.get()))) {
        why = replyText(r.get());
        break;
      }
    }
    if (isPassingError(why)) {
      // Not stored, and the entry is still pending here: kept (and held, so refreshed and never
      // taken back to run again) until a new connection writes it.
      log_("cluster writer: storing an outcome: " + why + " (kept, written again)");
      writeRefused_ = true;
      return false;
    }
    log_("cluster writer: storing an outcome: " + why);
  }
  std::lock_guard lock(mutex_);
  if (auto it = held_.find(d.stream); it != held_.end()) {
    it->second.erase(d.entryId);
    if (it->second.empty()) held_.erase(it);
  }
  return true;
}

bool JobQueue::refreshHeld(RedisConnection& c) {
  std::map<std::string, std::set<std::string>> held;
  {
    std::lock_guard lock(mutex_);
    held = held_;
  }
  for (const auto& [stream, ids] : held) {
    std::vector<std::string_view> argv{"XCLAIM", stream, kConsumerGroup, node_, "0"};
    argv.insert(argv.end(), ids.begin(), ids.end());
    argv.push_back("JUSTID");
    if (!c.command(argv)) return false;
  }
  return true;
}

}  // namespace bulkhead::cluster
