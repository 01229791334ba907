#include "cluster/job_queue.h"

#include <algorithm>
#include <optional>
#include <variant>

#include "cluster/redis_connection.h"

namespace bulkhead::cluster {

namespace {

using std::chrono::milliseconds;
constexpr auto kBlock = milliseconds(100);  // the reader's longest wait on Redis
constexpr auto kCommandTimeout = std::chrono::seconds(5);
constexpr auto kFlushOnStop = std::chrono::seconds(5);
constexpr const char* kOutcomeStreamLength = "100000";  // trimmed beyond (approximately)

bool isError(const Reply& r) { return !r || r->type == REDIS_REPLY_ERROR; }

// An entry's field list ([f1, v1, f2, v2, ...]); none when it is not one (a deleted entry).
std::optional<Fields> fieldsOf(const redisReply* r) {
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) return std::nullopt;
  Fields f;
  for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
    f.emplace_back(replyText(r->element[i]), replyText(r->element[i + 1]));
  }
  return f;
}

std::string poolOfStream(const std::string& key) {  // bulkhead:pool:NAME:jobs
  constexpr std::string_view prefix = "bulkhead:pool:", suffix = ":jobs";
  return key.substr(prefix.size(), key.size() - prefix.size() - suffix.size());
}

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
      log_(std::move(log)) {}

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
    commands_.push_back(Command{false, std::move(job), {}, {}});
  }
  writerWake_.notify_one();
}

void JobQueue::finish(const Delivery& delivery, OutcomeEntry outcome) {
  {
    std::lock_guard lock(mutex_);
    commands_.push_back(Command{true, {}, delivery, std::move(outcome)});
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
  return static_cast<std::size_t>(std::count_if(commands_.begin(), commands_.end(),
                                                [](const Command& k) { return k.isFinish; }));
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

void JobQueue::waitFor(std::condition_variable& cv, std::chrono::nanoseconds d) {
  std::unique_lock lock(mutex_);
  cv.wait_for(lock, d, [this] { return stopping_; });
}

// The loop sees the delivery; until then it counts against what this node wants of its pool.
void JobQueue::handOver(Delivery delivery) {
  const std::string pool = delivery.job.pool;
  {
    std::lock_guard lock(mutex_);
    ++inTransit_[pool];
    held_[delivery.stream].insert(delivery.entryId);
  }
  post_([this, pool, d = std::move(delivery)]() mutable {
    handlers_.job(std::move(d));  // the policy starts it and says what it wants now
    std::lock_guard lock(mutex_);
    if (auto it = inTransit_.find(pool); it != inTransit_.end() && it->second > 0) --it->second;
  });
}

// ---- reader ----

bool JobQueue::prepareReader(RedisConnection& c, std::string& error) {
  Reply id = c.command({"CLIENT", "ID"});
  if (!id || id->type != REDIS_REPLY_INTEGER) {
    error = id ? "CLIENT ID: " + replyText(id.get()) : c.error();
    return false;
  }
  readerClientId_ = id->integer;
  // Groups read pool streams from their first entry (jobs queued before any node read them).
  std::vector<std::string> keys{outcomeKey_};
  for (const std::string& pool : pools_) keys.push_back(poolStreamKey(pool));
  for (const std::string& key : keys) {
    Reply r = c.command({"XGROUP", "CREATE", key, kConsumerGroup, "0", "MKSTREAM"});
    if (!r) {
      error = c.error();
      return false;
    }
    if (r->type == REDIS_REPLY_ERROR && replyText(r.get()).rfind("BUSYGROUP", 0) != 0) {
      error = "XGROUP CREATE " + key + ": " + replyText(r.get());
      return false;
    }
  }
  return true;
}

void JobQueue::readLoop() {
  std::optional<RedisConnection> c;
  auto lastClaim = std::chrono::steady_clock::now() - claimAfter_;
  std::string lastError;
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
    }
    if (!c) {
      std::string error;
      c = RedisConnection::open(address_, password_, kCommandTimeout + kBlock, error);
      if (c && !prepareReader(*c, error)) c.reset();
      if (!c) {
        if (error != lastError) log_("cluster reader: " + error + " (retrying)");
        lastError = error;
        waitFor(readerWake_,
                std::min<std::chrono::nanoseconds>(heartbeat_, std::chrono::seconds(1)));
        continue;
      }
      if (!lastError.empty()) log_("cluster reader: connected again");
      lastError.clear();
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - lastClaim >= claimAfter_ / 4) {
      lastClaim = now;
      if (!claimAbandoned(*c)) {
        c.reset();
        continue;
      }
    }
    if (!readOnce(*c)) c.reset();
  }
}

// One XREADGROUP: at most one new entry per stream, waiting up to kBlock.
bool JobQueue::readOnce(RedisConnection& c) {
  std::vector<std::string> keys{outcomeKey_};
  {
    std::lock_guard lock(mutex_);
    for (const auto& [pool, n] : takeable()) keys.push_back(poolStreamKey(pool));
  }
  const std::string block = std::to_string(kBlock.count());
  std::vector<std::string_view> argv{"XREADGROUP", "GROUP", kConsumerGroup, node_,    "COUNT",
                                     "1",          "BLOCK", block,          "STREAMS"};
  argv.insert(argv.end(), keys.begin(), keys.end());
  for (std::size_t i = 0; i < keys.size(); ++i) argv.push_back(">");
  Reply r = c.command(argv);
  if (!r) return false;
  if (r->type == REDIS_REPLY_ERROR) {  // NOGROUP: the server lost our groups; make them again
    log_("cluster reader: XREADGROUP: " + replyText(r.get()));
    return false;
  }
  if (r->type != REDIS_REPLY_ARRAY) return true;  // nil: nothing came (or CLIENT UNBLOCK)
  for (std::size_t s = 0; s < r->elements; ++s) {
    const redisReply* stream = r->element[s];
    if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2) continue;
    const std::string key = replyText(stream->element[0]);
    const redisReply* entries = stream->element[1];
    for (std::size_t e = 0; e < entries->elements; ++e) {
      const redisReply* entry = entries->element[e];
      if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2) continue;
      const std::string id = replyText(entry->element[0]);
      auto fields = fieldsOf(entry->element[1]);
      if (key == outcomeKey_) {
        auto outcome = fields ? decodeOutcome(*fields)
                              : std::variant<OutcomeEntry, std::string>(std::string("no fields"));
        if (auto* o = std::get_if<OutcomeEntry>(&outcome)) {
          post_([this, o = std::move(*o)]() mutable { handlers_.outcome(std::move(o)); });
        } else {
          log_("cluster: dropped outcome entry " + id + ": " + std::get<std::string>(outcome));
        }
        c.pipeline({{"XACK", key, kConsumerGroup, id}, {"XDEL", key, id}});
        continue;
      }
      auto job = fields ? decodeJob(*fields)
                        : std::variant<JobEntry, std::string>(std::string("no fields"));
      if (auto* j = std::get_if<JobEntry>(&job); j && j->pool == poolOfStream(key)) {
        handOver(Delivery{key, id, 1, std::move(*j)});
      } else {  // nobody can run it: acknowledged so that it does not circle
        log_("cluster: dropped job entry " + id + " of " + key + ": " +
             (j ? "its pool field names another pool" : std::get<std::string>(job)));
        c.pipeline({{"XACK", key, kConsumerGroup, id}, {"XDEL", key, id}});
      }
    }
  }
  return true;
}

// Entries another node took and left unacknowledged for claim_after: that node stopped
// refreshing them (it died, or lost Redis). Taken over, at most as many as this node wants.
bool JobQueue::claimAbandoned(RedisConnection& c) {
  const std::string minIdle =
      std::to_string(std::chrono::duration_cast<milliseconds>(claimAfter_).count());
  std::map<std::string, std::size_t> want;
  {
    std::lock_guard lock(mutex_);
    want = takeable();
  }
  for (const auto& [pool, n] : want) {
    const std::string key = poolStreamKey(pool);
    const std::string count = std::to_string(n);
    std::string cursor = "0-0";
    std::size_t taken = 0;
    for (int round = 0; round < 100 && taken < n; ++round) {
      Reply r =
          c.command({"XAUTOCLAIM", key, kConsumerGroup, node_, minIdle, cursor, "COUNT", count});
      if (!r) return false;
      if (r->type != REDIS_REPLY_ARRAY || r->elements < 2) break;  // NOGROUP and the like
      cursor = replyText(r->element[0]);
      const redisReply* entries = r->element[1];
      for (std::size_t e = 0; e < entries->elements; ++e) {
        const redisReply* entry = entries->element[e];
        if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2) continue;
        const std::string id = replyText(entry->element[0]);
        auto fields = fieldsOf(entry->element[1]);
        auto job = fields ? decodeJob(*fields)
                          : std::variant<JobEntry, std::string>(std::string("no fields"));
        auto* j = std::get_if<JobEntry>(&job);
        if (!j || j->pool != pool) {
          c.pipeline({{"XACK", key, kConsumerGroup, id}, {"XDEL", key, id}});
          continue;
        }
        // Its delivery count, which XAUTOCLAIM just raised: the runs so far, this one included.
        Reply pending = c.command({"XPENDING", key, kConsumerGroup, id, id, "1"});
        if (!pending) return false;
        std::uint64_t runs = 2;
        if (pending->type == REDIS_REPLY_ARRAY && pending->elements == 1 &&
            pending->element[0]->type == REDIS_REPLY_ARRAY && pending->element[0]->elements == 4) {
          runs = static_cast<std::uint64_t>(pending->element[0]->element[3]->integer);
        }
        log_("cluster: took over job " + j->origin + "/" + std::to_string(j->originId) +
             " of pool " + pool + " (run " + std::to_string(runs) + ")");
        handOver(Delivery{key, id, runs, std::move(*j)});
        ++taken;
      }
      if (cursor == "0-0") break;
    }
  }
  return true;
}

// ---- writer ----

void JobQueue::writeLoop() {
  std::optional<RedisConnection> c;
  std::string lastError;
  auto nextRefresh = std::chrono::steady_clock::now() + heartbeat_;
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
        std::erase_if(commands_, [](const Command& k) { return !k.isFinish; });
        if (commands_.empty() || std::chrono::steady_clock::now() >= *stopBy) return;
      }
      if (!commands_.empty()) command = commands_.front();
      unblock = std::exchange(unblockReader_, false);
    }
    if (!c) {
      std::string error;
      c = RedisConnection::open(address_, password_, kCommandTimeout, error);
      connected_ = c.has_value();
      if (!c) {
        if (error != lastError) log_("cluster writer: " + error + " (retrying)");
        lastError = error;
        std::vector<std::uint64_t> failed;
        {
          std::lock_guard lock(mutex_);  // jobs are refused now, not when Redis is back
          for (const Command& k : commands_) {
            if (!k.isFinish) failed.push_back(k.job.originId);
          }
          std::erase_if(commands_, [](const Command& k) { return !k.isFinish; });
        }
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
      if (ok || !command->isFinish) {  // a job that failed to go is answered by execute()
        std::lock_guard lock(mutex_);
        commands_.pop_front();
      }
    }
    if (ok && std::chrono::steady_clock::now() >= nextRefresh) {
      ok = refreshHeld(*c);
      nextRefresh = std::chrono::steady_clock::now() + heartbeat_;
    }
    if (!ok) {
      c.reset();
      connected_ = false;
    }
  }
}

// False when the connection failed (the command is kept if it was an outcome).
bool JobQueue::execute(RedisConnection& c, const Command& k) {
  if (!k.isFinish) {
    const Fields fields = encodeJob(k.job);
    const std::string key = poolStreamKey(k.job.pool);
    std::vector<std::string_view> argv{"XADD", key, "*"};
    for (const auto& [name, value] : fields) {
      argv.push_back(name);
      argv.push_back(value);
    }
    Reply r = c.command(argv);
    if (isError(r)) {
      const std::string why = r ? replyText(r.get()) : c.error();
      post_([this, id = k.job.originId, why] { handlers_.notQueued(id, "Redis: " + why); });
    }
    return r != nullptr;
  }
  const Delivery& d = k.delivery;
  const Fields fields = encodeOutcome(k.outcome);
  const std::string key = outcomeStreamKey(k.delivery.job.origin);
  std::vector<std::string_view> add{"XADD", key, "MAXLEN", "~", kOutcomeStreamLength, "*"};
  for (const auto& [name, value] : fields) {
    add.push_back(name);
    add.push_back(value);
  }
  auto replies = c.pipeline({{"MULTI"},
                             add,
                             {"XACK", d.stream, kConsumerGroup, d.entryId},
                             {"XDEL", d.stream, d.entryId},
                             {"EXEC"}});
  if (replies.size() != 5) return false;
  if (isError(replies[4]))
    log_("cluster writer: storing an outcome: " + replyText(replies[4].get()));
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
