#include "cluster/job_records.h"

#include <variant>

#include "cluster/job_entry.h"
#include "cluster/redis_connection.h"
#include "jobs/report_json.h"
#include "os/memfd.h"

namespace bulkhead::cluster {

namespace {

using std::chrono::milliseconds;
constexpr auto kCommandTimeout = std::chrono::seconds(5);
constexpr auto kFlushOnStop = std::chrono::seconds(5);
// How long the other nodes can look a job up, and an Idempotency-Key holds, after it was written.
constexpr auto kRecordLife = std::chrono::hours(24 * 7);
// A finished job's record with a result larger than this lives only kLargeRecordLife: Redis holds
// results for other nodes to read, not as an archive (the origin's journal is that).
constexpr std::size_t kLargeResult = 1 << 20;
constexpr auto kLargeRecordLife = std::chrono::hours(1);
constexpr const char* kNumbersKey = "bulkhead:node_numbers";  // node name -> number
constexpr const char* kNamesKey = "bulkhead:node_names";      // number -> node name

// A node's number: the one it has, else the one it asks for when free, else the lowest free.
constexpr const char* kNumberScript = R"lua(
local n = redis.call('HGET', KEYS[1], ARGV[1])
if n then return tonumber(n) end
local want = tonumber(ARGV[2])
if want > 0 and redis.call('HSETNX', KEYS[2], ARGV[2], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return want
end
n = redis.call('HLEN', KEYS[2]) + 1
while redis.call('HSETNX', KEYS[2], tostring(n), ARGV[1]) == 0 do n = n + 1 end
redis.call('HSET', KEYS[1], ARGV[1], tostring(n))
return n
)lua";

// The key's holder and its record; a new key is held by ARGV[1], whose record (ARGV[3]...) is
// written with it.
constexpr const char* kClaimScript = R"lua(
local held = redis.call('GET', KEYS[1])
if held then return {held, redis.call('HGETALL', 'bulkhead:job:' .. held)} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {ARGV[1], {}}
)lua";

constexpr const char* kReleaseScript = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1], KEYS[2]) end
return 0
)lua";

std::string lifeMs(std::chrono::nanoseconds life = kRecordLife) {
  return std::to_string(std::chrono::duration_cast<milliseconds>(life).count());
}

// A record's fields as HGETALL returned them; none (empty) when there is no record.
Fields fieldsOf(const redisReply* r) { return replyPairs(r).value_or(Fields{}); }

// A record read back; none when there is none, or it does not decode (logged by the caller).
std::optional<jobs::SharedRecord> recordOf(const Fields& fields, std::string& problem) {
  if (fields.empty()) return std::nullopt;
  auto decoded = decodeRecord(fields);
  if (auto* why = std::get_if<std::string>(&decoded)) {
    problem = *why;
    return std::nullopt;
  }
  RecordEntry& e = std::get<RecordEntry>(decoded);
  jobs::SharedRecord record{e.node, e.pool, e.finished, std::nullopt, std::nullopt};
  if (e.finished) {
    record.report = jobs::reportFromJson(e.reportJson, std::move(e.result));
    if (!record.report) {
      problem = "its report is not a report";
      return std::nullopt;
    }
    if (e.runs) record.runs = static_cast<int>(*e.runs);
  }
  return record;
}

// The record and its life in one transaction: no reader sees one without the other. False when
// the connection failed.
bool writeRecord(RedisConnection& c, const std::string& key, const Fields& fields,
                 const std::string& lifeMs) {
  return !c.pipeline(
               {{"MULTI"}, withPairs({"HSET", key}, fields), {"PEXPIRE", key, lifeMs}, {"EXEC"}})
              .empty();
}

}  // namespace

JobRecords::JobRecords(const config::ClusterConfig& config, std::string node, std::string password,
                       Post post, Log log)
    : address_(std::get<config::RedisAddress>(config::parseRedisAddress(config.redis))),
      node_(std::move(node)),
      password_(std::move(password)),
      heartbeat_(config.heartbeat),
      post_(std::move(post)),
      log_(std::move(log)) {}

JobRecords::~JobRecords() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void JobRecords::start(std::uint64_t lastId, std::function<void(std::uint64_t)> numbered) {
  wantedNumber_ = lastId >> kIdBits;
  if (wantedNumber_ > kMaxNodeNumber) wantedNumber_ = 0;
  numbered_ = std::move(numbered);
  thread_ = std::thread([this] { loop(); });
}

std::optional<std::uint64_t> JobRecords::waitNumbered(std::chrono::nanoseconds atMost) {
  std::unique_lock lock(mutex_);
  numberedWake_.wait_for(lock, atMost, [this] { return number_ != 0 || stopping_; });
  if (number_ == 0) return std::nullopt;
  return std::uint64_t{number_} << kIdBits;
}

bool JobRecords::foreign(std::uint64_t id) const {
  const std::uint64_t n = id >> kIdBits;
  return n != 0 && n != number_;
}

std::size_t JobRecords::unwritten() const {
  std::lock_guard lock(mutex_);
  std::size_t n = 0;
  for (const Command& k : commands_) n += k.kept ? 1 : 0;
  return n;
}

void JobRecords::push(Command command) {
  if (!command.kept && !connected_) {  // a caller waits: say so now, not when Redis is back
    post_(std::move(command.unreachable));
    return;
  }
  if (command.settled && !connected_) post_(std::exchange(command.settled, nullptr));
  {
    std::lock_guard lock(mutex_);
    commands_.push_back(std::move(command));
  }
  wake_.notify_one();
}

void JobRecords::claimKey(const std::string& key, std::uint64_t id, const std::string& pool,
                          std::function<void(std::optional<jobs::SharedClaim>)> done) {
  auto shared = std::make_shared<decltype(done)>(std::move(done));
  Command k;
  k.unreachable = [shared] { (*shared)(std::nullopt); };
  k.run = [this, key, id, pool, shared](RedisConnection& c) {
    const std::string idText = std::to_string(id), life = lifeMs();
    const std::string redisKey = idempotencyRedisKey(key), recordKey = jobRecordKey(id);
    const Fields fields = encodeRecord(RecordEntry{node_, pool, false, {}, {}, {}});
    Reply r = c.command(
        withPairs({"EVAL", kClaimScript, "2", redisKey, recordKey, idText, life}, fields));
    if (!r) return false;
    std::optional<jobs::SharedClaim> claim;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
      const std::string holder = replyText(r->element[0]);
      std::string problem;
      claim = jobs::SharedClaim{std::strtoull(holder.c_str(), nullptr, 10),
                                recordOf(fieldsOf(r->element[1]), problem)};
      if (claim->holder == 0) claim.reset();
    }
    if (!claim) log_("cluster records: claiming an idempotency key: " + replyText(r.get()));
    post_([shared, claim] { (*shared)(claim); });
    return true;
  };
  push(std::move(k));
}

void JobRecords::releaseKey(const std::string& key, std::uint64_t id) {
  Command k;
  k.kept = true;
  k.run = [key, id](RedisConnection& c) {
    return c.command({"EVAL", kReleaseScript, "2", idempotencyRedisKey(key), jobRecordKey(id),
                      std::to_string(id)}) != nullptr;
  };
  push(std::move(k));
}

void JobRecords::accepted(std::uint64_t id, const std::string& pool,
                          std::function<void()> recorded) {
  Command k;
  k.kept = true;
  k.settled = std::move(recorded);
  k.run = [this, id, pool](RedisConnection& c) {
    const std::string key = jobRecordKey(id), life = lifeMs();
    const Fields fields = encodeRecord(RecordEntry{node_, pool, false, {}, {}, {}});
    return writeRecord(c, key, fields, life);
  };
  push(std::move(k));
}

void JobRecords::finished(const core::JobReport& report, std::optional<int> runs) {
  RecordEntry e{node_, report.pool, true, std::nullopt, jobs::reportToJson(report).dump(), {}};
  if (runs) e.runs = *runs;
  if (report.result) {
    if (auto bytes = os::blobBytes(*report.result)) e.result = std::move(*bytes);
  }
  Command k;
  k.kept = true;
  const std::string life = lifeMs(e.result.size() > kLargeResult ? kLargeRecordLife : kRecordLife);
  k.run = [id = report.jobId, fields = encodeRecord(e), life](RedisConnection& c) {
    const std::string key = jobRecordKey(id);
    return writeRecord(c, key, fields, life);
  };
  push(std::move(k));
}

void JobRecords::lookup(std::uint64_t id, std::function<void(jobs::SharedLookup)> done) {
  auto shared = std::make_shared<decltype(done)>(std::move(done));
  Command k;
  k.unreachable = [shared] { (*shared)(jobs::SharedLookup{std::nullopt, true}); };
  k.run = [this, id, shared](RedisConnection& c) {
    Reply r = c.command({"HGETALL", jobRecordKey(id)});
    if (!r) return false;
    std::string problem;
    jobs::SharedLookup found{recordOf(fieldsOf(r.get()), problem), false};
    if (!problem.empty()) {
      log_("cluster records: job " + std::to_string(id) + " has a malformed record: " + problem);
    }
    post_([shared, found = std::move(found)]() mutable { (*shared)(std::move(found)); });
    return true;
  };
  push(std::move(k));
}

void JobRecords::requestCancel(std::uint64_t id, const std::string& origin) {
  Command k;
  k.kept = true;
  k.run = [this, id, origin](RedisConnection& c) {
    const Fields fields = encodeCancel(CancelEntry{id, node_});
    return c.command(withPairs(
               {"XADD", outcomeStreamKey(origin), "MAXLEN", "~", kOutcomeStreamLength, "*"},
               fields)) != nullptr;
  };
  push(std::move(k));
}

// This node's number, from Redis; false when the connection failed.
bool JobRecords::number(RedisConnection& c) {
  Reply r = c.command(
      {"EVAL", kNumberScript, "2", kNumbersKey, kNamesKey, node_, std::to_string(wantedNumber_)});
  if (!r) return false;
  if (r->type != REDIS_REPLY_INTEGER || r->integer <= 0 ||
      static_cast<std::uint64_t>(r->integer) > kMaxNodeNumber) {
    log_("cluster records: Redis gave no usable node number (" + replyText(r.get()) +
         "): this node's job ids are not unique across the cluster");
    return true;
  }
  const auto got = static_cast<std::uint64_t>(r->integer);
  const std::uint64_t before = number_.exchange(got);
  if (before == got) return true;
  if (before != 0 || (wantedNumber_ != 0 && wantedNumber_ != got)) {
    log_("cluster records: this node's number is now " + std::to_string(got) + " (it was " +
         std::to_string(before != 0 ? before : wantedNumber_) +
         "; Redis lost its data or gave the number to another node): new job ids start at " +
         std::to_string(got << kIdBits));
  }
  wantedNumber_ = got;
  numberedWake_.notify_all();
  post_([this, got] { numbered_(got << kIdBits); });
  return true;
}

void JobRecords::loop() {
  std::optional<RedisConnection> c;
  std::string lastError;
  std::optional<std::chrono::steady_clock::time_point> stopBy;
  for (;;) {
    std::optional<Command> command;
    {
      std::unique_lock lock(mutex_);
      // Disconnected: retried every heartbeat (at most 1 s) even with nothing to do, so that
      // `connected` and the node's number come back by themselves.
      const auto retry = std::min<std::chrono::nanoseconds>(heartbeat_, std::chrono::seconds(1));
      if (c) {
        wake_.wait(lock, [this] { return stopping_ || !commands_.empty(); });
      } else if (!lastError.empty()) {
        if (stopping_) {  // flushing kept records while Redis is away: retried calmly, not spun
          wake_.wait_for(lock, std::chrono::milliseconds(100));
        } else {
          wake_.wait_for(lock, retry, [this] { return stopping_; });
        }
      }
      if (stopping_) {
        if (!stopBy) stopBy = std::chrono::steady_clock::now() + kFlushOnStop;
        std::erase_if(commands_, [](const Command& k) { return !k.kept; });
        if (commands_.empty() || std::chrono::steady_clock::now() >= *stopBy) return;
      }
      if (c && !commands_.empty()) {
        command = std::move(commands_.front());
        commands_.pop_front();
      }
    }
    if (!c) {
      std::string error;
      c = RedisConnection::open(address_, password_, kCommandTimeout, error);
      if (c && !number(*c)) {
        error = c->error();
        c.reset();
      }
      connected_ = c.has_value();
      if (!c) {
        if (error != lastError) log_("cluster records: " + error + " (retrying)");
        lastError = error.empty() ? "not connected" : error;
        std::deque<Command> dropped;
        std::vector<std::function<void()>> settled;
        {
          std::lock_guard lock(mutex_);  // waiting callers hear now
          for (auto it = commands_.begin(); it != commands_.end();) {
            if (it->kept) {
              if (it->settled) settled.push_back(std::exchange(it->settled, nullptr));
              ++it;
            } else {
              dropped.push_back(std::move(*it));
              it = commands_.erase(it);
            }
          }
        }
        for (Command& k : dropped) post_(std::move(k.unreachable));
        for (auto& f : settled) post_(std::move(f));
        continue;
      }
      if (!lastError.empty()) log_("cluster records: connected again");
      lastError.clear();
      continue;
    }
    if (!command) continue;
    if (command->run(*c)) {
      if (command->settled) post_(std::move(command->settled));
      continue;
    }
    c.reset();
    connected_ = false;
    lastError = "connection lost";
    if (command->kept) {
      if (command->settled) post_(std::exchange(command->settled, nullptr));
      std::lock_guard lock(mutex_);
      commands_.push_front(std::move(*command));
    } else {
      post_(std::move(command->unreachable));
    }
  }
}

}  // namespace bulkhead::cluster
