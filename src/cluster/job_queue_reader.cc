// The reader's half of JobQueue (job_queue.h): one blocking connection that takes jobs from the
// pools' streams (new ones, this node's own pending ones after a reconnect, and other nodes'
// abandoned ones) and outcomes from this node's stream, and hands them to the event loop.

#include <optional>
#include <variant>

#include "cluster/job_queue.h"
#include "cluster/redis_connection.h"

namespace bulkhead::cluster {

namespace {

using std::chrono::milliseconds;
constexpr auto kBlock = milliseconds(100);  // the reader's longest wait on Redis

std::string poolOfStream(const std::string& key) {  // bulkhead:pool:NAME:jobs
  constexpr std::string_view prefix = "bulkhead:pool:", suffix = ":jobs";
  return key.substr(prefix.size(), key.size() - prefix.size() - suffix.size());
}

// An entry's fields decoded by `decode` (decodeJob, decodeOutcomeStream), or why they are not.
template <typename Decoded>
Decoded decodedWith(Decoded (*decode)(const Fields&), const std::optional<Fields>& fields) {
  if (!fields) return std::string("no fields");
  return decode(*fields);
}

}  // namespace

// The loop sees the delivery; until then it counts against what this node wants of its pool.
// A payload kept in a key is read first. False when the connection failed.
bool JobQueue::handOver(RedisConnection& c, Delivery delivery) {
  if (!delivery.job.payloadKey.empty()) {
    Reply payload = c.command({"GET", delivery.job.payloadKey});
    if (!payload) return false;
    if (payload->type == REDIS_REPLY_STRING) {
      delivery.job.payload.assign(payload->str, payload->len);
    } else {
      delivery.payloadLost = true;
    }
  }
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
  return true;
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
      if (c && !(prepareReader(*c, error) && takeBackOwnPending(*c))) {
        if (error.empty()) error = c->error();
        c.reset();
      }
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
      if (key == outcomeKey_) {
        if (!takeOutcome(c, id, entry->element[1])) return false;
        continue;
      }
      if (!takeEntry(c, key, poolOfStream(key), id, entry->element[1], 1, nullptr)) return false;
    }
  }
  return true;
}

// One entry of this node's outcome stream: handed to the loop (an outcome, or a request to cancel
// a job), then acknowledged and deleted. Handing one over twice is harmless (a caller hears the
// first outcome only; a second cancel finds the job ended). False when the connection failed.
bool JobQueue::takeOutcome(RedisConnection& c, const std::string& id, const redisReply* fields) {
  auto entry = decodedWith(decodeOutcomeStream, replyPairs(fields));
  if (auto* o = std::get_if<OutcomeEntry>(&entry)) {
    post_([this, o = std::move(*o)]() mutable { handlers_.outcome(std::move(o)); });
  } else if (auto* k = std::get_if<CancelEntry>(&entry)) {
    post_([this, k = std::move(*k)]() mutable {
      if (handlers_.cancel) handlers_.cancel(std::move(k));
    });
  } else {
    log_("cluster: dropped outcome entry " + id + ": " + std::get<std::string>(entry));
  }
  return !c.pipeline({{"XACK", outcomeKey_, kConsumerGroup, id}, {"XDEL", outcomeKey_, id}})
              .empty();
}

// One entry of `key`, the stream of `pool`, taken by this node: handed over with its runs
// (`runs`, or its delivery count from XPENDING when 0), logged with `why` when set; or, when it
// does not decode, acknowledged and dropped (nobody can run it: it must not circle). False when
// the connection failed.
bool JobQueue::takeEntry(RedisConnection& c, const std::string& key, const std::string& pool,
                         const std::string& id, const redisReply* fields, std::uint64_t runs,
                         const char* why) {
  auto job = decodedWith(decodeJob, replyPairs(fields));
  auto* j = std::get_if<JobEntry>(&job);
  if (!j || j->pool != pool) {
    log_("cluster: dropped job entry " + id + " of " + key + ": " +
         (j ? "its pool field names another pool" : std::get<std::string>(job)));
    return !c.pipeline({{"XACK", key, kConsumerGroup, id}, {"XDEL", key, id}}).empty();
  }
  if (runs == 0) {
    auto counted = pendingHere(c, key, id);
    if (!counted) return false;
    if (*counted == 0) return true;  // its outcome was stored since it was read: not run again
    runs = *counted;
  }
  if (why) {
    log_(std::string("cluster: ") + why + " job " + j->origin + "/" + std::to_string(j->originId) +
         " of pool " + pool + " (run " + std::to_string(runs) + ")");
  }
  return handOver(c, Delivery{key, id, runs, std::move(*j), false});
}

// Asked after the caller saw that this node does not hold the entry: its delivery count if it is
// still pending for this node (XPENDING ... CONSUMER), 0 when it is not (the writer stored its
// outcome after it was read: it ran here; or another node has claimed it since), none when the
// connection failed. Without this check a job whose outcome was stored between the read and the
// check would run a second time.
std::optional<std::uint64_t> JobQueue::pendingHere(RedisConnection& c, const std::string& key,
                                                   const std::string& id) {
  Reply pending = c.command({"XPENDING", key, kConsumerGroup, id, id, "1", node_});
  if (!pending) return std::nullopt;
  if (pending->type != REDIS_REPLY_ARRAY || pending->elements == 0) return 0;
  const redisReply* entry = pending->element[0];
  if (entry->type == REDIS_REPLY_ARRAY && entry->elements == 4 &&
      entry->element[3]->type == REDIS_REPLY_INTEGER && entry->element[3]->integer > 0) {
    return static_cast<std::uint64_t>(entry->element[3]->integer);
  }
  return 2;  // pending here, count unsaid: it was delivered before, so this is a second run
}

bool JobQueue::holds(const std::string& stream, const std::string& entryId) {
  std::lock_guard lock(mutex_);
  auto held = held_.find(stream);
  return held != held_.end() && held->second.count(entryId) > 0;
}

// Entries delivered to this node that it has not taken: their XREADGROUP reply was lost when the
// connection broke (or this node restarted under the same name). Read again from this consumer's
// own pending lists (id 0) at once: jobs it is not running, rather than after claim_after; and
// outcomes (and cancel requests), which no other node would ever take over.
bool JobQueue::takeBackOwnPending(RedisConnection& c) {
  for (int round = 0; round < 100; ++round) {  // bounded: each round acknowledges what it read
    Reply r = c.command({"XREADGROUP", "GROUP", kConsumerGroup, node_, "COUNT", "1000", "STREAMS",
                         outcomeKey_, "0"});
    if (!r) return false;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 1) break;
    const redisReply* entries = r->element[0]->element[1];
    if (entries->elements == 0) break;
    for (std::size_t e = 0; e < entries->elements; ++e) {
      const redisReply* entry = entries->element[e];
      if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2) continue;
      log_("cluster: taking back an outcome delivered here before the connection broke");
      if (!takeOutcome(c, replyText(entry->element[0]), entry->element[1])) return false;
    }
  }
  for (const std::string& pool : pools_) {
    const std::string key = poolStreamKey(pool);
    Reply r = c.command(
        {"XREADGROUP", "GROUP", kConsumerGroup, node_, "COUNT", "1000", "STREAMS", key, "0"});
    if (!r) return false;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 1) continue;
    const redisReply* entries = r->element[0]->element[1];
    for (std::size_t e = 0; e < entries->elements; ++e) {
      const redisReply* entry = entries->element[e];
      if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2) continue;
      const std::string id = replyText(entry->element[0]);
      if (holds(key, id)) continue;  // running here
      // Not held: never taken here, or its outcome was stored (acknowledged) after the read
      // above, by the writer that flushes outcomes kept while Redis was away. Only the first is
      // ours to run: takeEntry asks (pendingHere). Reading it again counted as a delivery: it
      // may have run here before a restart.
      if (!takeEntry(c, key, pool, id, entry->element[1], 0,
                     "taking back a job delivered here before the connection broke:")) {
        return false;
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
        // Ours and running here: its refreshes failed while Redis was away for claim_after.
        // Otherwise takeEntry asks whether it is still ours: its outcome may have been stored
        // since XAUTOCLAIM read it (by this node's writer, or by a node only slow, not dead).
        if (holds(key, id)) continue;
        // Its delivery count, which XAUTOCLAIM just raised: the runs so far, this one included.
        if (!takeEntry(c, key, pool, id, entry->element[1], 0, "took over")) return false;
        ++taken;
      }
      if (cursor == "0-0") break;
    }
  }
  return true;
}

}  // namespace bulkhead::cluster
