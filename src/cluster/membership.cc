#include "cluster/membership.h"

#include <hiredis/hiredis.h>
#include <unistd.h>

#include <algorithm>
#include <memory>

namespace bulkhead::cluster {

namespace {

constexpr const char* kKeyPrefix = "bulkhead:node:";

timeval toTimeval(std::chrono::nanoseconds d) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  return timeval{static_cast<time_t>(us / 1000000), static_cast<suseconds_t>(us % 1000000)};
}

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

}  // namespace

struct Membership::Connection {
  std::unique_ptr<redisContext, void (*)(redisContext*)> context{nullptr, redisFree};
};

std::string defaultNodeName() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "node";
  return name;
}

Membership::Membership(const config::ClusterConfig& config, std::string nodeName,
                       std::string password)
    : address_(std::get<config::RedisAddress>(config::parseRedisAddress(config.redis))),
      addressText_(config.redis),
      node_(std::move(nodeName)),
      password_(std::move(password)),
      heartbeat_(config.heartbeat) {
  view_.error = "not connected yet";
  thread_ = std::thread([this] { run(); });
}

Membership::~Membership() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Membership::describe(std::string json) {
  std::lock_guard lock(mutex_);
  description_ = std::move(json);
}

MembershipView Membership::view() const {
  std::lock_guard lock(mutex_);
  return view_;
}

void Membership::wait(std::chrono::nanoseconds d) {
  std::unique_lock lock(mutex_);
  wake_.wait_for(lock, d, [this] { return stopping_; });
}

// One heartbeat: announce, then read every node. False (with the reason) when Redis failed us:
// the caller drops the connection and makes a new one.
bool Membership::beat(Connection& c, std::string& error) {
  redisContext* ctx = c.context.get();
  std::string description;
  {
    std::lock_guard lock(mutex_);
    description = description_;
  }
  const std::string key = kKeyPrefix + node_;
  const long long ttlMs = std::max<long long>(
      3 * std::chrono::duration_cast<std::chrono::milliseconds>(heartbeat_).count(), 30);
  if (!description.empty()) {  // the event loop describes this node once it runs
    Reply set(
        static_cast<redisReply*>(redisCommand(ctx, "SET %b %b PX %lld", key.data(), key.size(),
                                              description.data(), description.size(), ttlMs)));
    if (!set || set->type == REDIS_REPLY_ERROR) {
      error = set ? "SET: " + std::string(set->str, set->len) : std::string(ctx->errstr);
      return false;
    }
  }
  std::vector<std::string> keys;
  std::string cursor = "0";
  do {
    Reply scan(static_cast<redisReply*>(
        redisCommand(ctx, "SCAN %s MATCH %s* COUNT 1000", cursor.c_str(), kKeyPrefix)));
    if (!scan || scan->type != REDIS_REPLY_ARRAY || scan->elements != 2) {
      error = scan ? "unexpected SCAN reply" : std::string(ctx->errstr);
      return false;
    }
    cursor.assign(scan->element[0]->str, scan->element[0]->len);
    const redisReply* found = scan->element[1];
    for (std::size_t i = 0; i < found->elements; ++i) {
      keys.emplace_back(found->element[i]->str, found->element[i]->len);
    }
  } while (cursor != "0");
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  std::vector<std::string> nodes;
  if (!keys.empty()) {  // one MGET: a key that expired since the SCAN is a nil, skipped
    std::vector<const char*> argv{"MGET"};
    std::vector<std::size_t> lengths{4};
    for (const std::string& k : keys) {
      argv.push_back(k.data());
      lengths.push_back(k.size());
    }
    Reply got(static_cast<redisReply*>(
        redisCommandArgv(ctx, static_cast<int>(argv.size()), argv.data(), lengths.data())));
    if (!got || got->type != REDIS_REPLY_ARRAY) {
      error = got ? "unexpected MGET reply" : std::string(ctx->errstr);
      return false;
    }
    for (std::size_t i = 0; i < got->elements; ++i) {
      const redisReply* value = got->element[i];
      if (value->type == REDIS_REPLY_STRING) nodes.emplace_back(value->str, value->len);
    }
  }
  std::lock_guard lock(mutex_);
  view_.connected = true;
  view_.error.clear();
  view_.nodes = std::move(nodes);
  view_.readAt = std::chrono::system_clock::now();
  return true;
}

// A fresh connection, authenticated and on the right database; none (and `error`) if not.
void Membership::connect(Connection& c, const timeval& timeout, std::string& error) {
  redisContext* ctx = address_.unixSocket
                          ? redisConnectUnixWithTimeout(address_.path.c_str(), timeout)
                          : redisConnectWithTimeout(address_.host.c_str(), address_.port, timeout);
  c.context.reset(ctx);
  if (!ctx || ctx->err) {
    error = ctx ? ctx->errstr : "cannot allocate a Redis context";
    c.context.reset();
    return;
  }
  redisSetTimeout(ctx, timeout);
  auto refused = [&](const char* what, redisReply* raw) {
    Reply r(raw);
    if (r && r->type != REDIS_REPLY_ERROR) return false;
    error = std::string(what) + ": " + (r ? std::string(r->str, r->len) : std::string(ctx->errstr));
    return true;
  };
  if ((!password_.empty() &&
       refused("AUTH", static_cast<redisReply*>(
                           redisCommand(ctx, "AUTH %b", password_.data(), password_.size())))) ||
      (address_.db != 0 &&
       refused("SELECT", static_cast<redisReply*>(redisCommand(ctx, "SELECT %d", address_.db))))) {
    c.context.reset();
  }
}

void Membership::run() {
  const timeval timeout =
      toTimeval(std::min<std::chrono::nanoseconds>(heartbeat_ * 2, std::chrono::seconds(2)));
  Connection c;
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) break;
    }
    std::string error;
    if (!c.context) connect(c, timeout, error);
    if (c.context && !beat(c, error)) c.context.reset();
    if (!c.context) {
      std::lock_guard lock(mutex_);
      view_.connected = false;
      view_.error = error.empty() ? "disconnected" : error;
    }
    wait(heartbeat_);
  }
  if (c.context) {  // leave at once rather than after three heartbeats
    const std::string key = kKeyPrefix + node_;
    Reply del(
        static_cast<redisReply*>(redisCommand(c.context.get(), "DEL %b", key.data(), key.size())));
  }
}

}  // namespace bulkhead::cluster
