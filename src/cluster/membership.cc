#include "cluster/membership.h"

#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "cluster/job_entry.h"
#include "cluster/redis_connection.h"

namespace bulkhead::cluster {

namespace {
constexpr const char* kKeyPrefix = "bulkhead:node:";
constexpr const char* kNodesKey = "bulkhead:nodes";  // a set: the names of the nodes announced
}  // namespace

std::string defaultNodeName() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "node";
  return name;
}

std::string nodeNameOf(const config::ClusterConfig& config) {
  return config.node.empty() ? defaultNodeName() : config.node;
}

Membership::Membership(const config::ClusterConfig& config, std::string nodeName,
                       std::string password)
    : address_(std::get<config::RedisAddress>(config::parseRedisAddress(config.redis))),
      addressText_(config.redis),
      node_(std::move(nodeName)),
      password_(std::move(password)),
      heartbeat_(config.heartbeat) {
  working_.error = "not connected yet";
  current_ = std::make_shared<const MembershipView>(working_);
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

bool Membership::waitForFirstRead(std::chrono::nanoseconds atMost) const {
  std::unique_lock lock(mutex_);
  return firstRead_.wait_for(lock, atMost,
                             [this] { return current_->readAt.time_since_epoch().count() != 0; });
}

std::shared_ptr<const MembershipView> Membership::view() const {
  std::lock_guard lock(mutex_);
  return current_;
}

void Membership::onRead(std::function<void()> callback) {
  std::lock_guard lock(mutex_);
  onRead_ = std::move(callback);
}

void Membership::publish() {
  auto view = std::make_shared<const MembershipView>(working_);
  std::function<void()> told;
  {
    std::lock_guard lock(mutex_);
    current_ = std::move(view);
    told = onRead_;
  }
  firstRead_.notify_all();
  if (told) told();
}

void Membership::wait(std::chrono::nanoseconds d) {
  std::unique_lock lock(mutex_);
  wake_.wait_for(lock, d, [this] { return stopping_; });
}

// One heartbeat: announce, then read every node. False (with the reason) when Redis failed us:
// the caller drops the connection and makes a new one.
bool Membership::beat(RedisConnection& c, std::string& error) {
  std::string description;
  {
    std::lock_guard lock(mutex_);
    description = description_;
  }
  const std::string key = kKeyPrefix + node_;
  const std::string ttlMs = std::to_string(std::max<long long>(
      3 * std::chrono::duration_cast<std::chrono::milliseconds>(heartbeat_).count(), 30));
  if (!description.empty()) {  // the event loop describes this node once it runs
    // The key says the node is alive; the set says where to look, so a heartbeat reads a few
    // keys rather than scanning a keyspace that may hold millions of job records.
    auto wrote = c.pipeline({{"SET", key, description, "PX", ttlMs}, {"SADD", kNodesKey, node_}});
    if (wrote.size() != 2 || wrote[0]->type == REDIS_REPLY_ERROR) {
      error = wrote.size() == 2 ? "SET: " + replyText(wrote[0].get()) : c.error();
      return false;
    }
  }
  Reply members = c.command({"SMEMBERS", kNodesKey});
  if (!members || members->type != REDIS_REPLY_ARRAY) {
    error = members ? "SMEMBERS: " + replyText(members.get()) : c.error();
    return false;
  }
  std::vector<std::string> names;
  for (std::size_t i = 0; i < members->elements; ++i) {
    names.push_back(replyText(members->element[i]));
  }
  std::sort(names.begin(), names.end());  // the same order every beat
  std::vector<std::string> nodes;
  if (!names.empty()) {  // one MGET: a node whose key expired is a nil, and leaves the set
    std::vector<std::string> keys;
    for (const std::string& name : names) keys.push_back(kKeyPrefix + name);
    std::vector<std::string_view> argv{"MGET"};
    argv.insert(argv.end(), keys.begin(), keys.end());
    Reply got = c.command(argv);
    if (!got || got->type != REDIS_REPLY_ARRAY || got->elements != names.size()) {
      error = got ? "unexpected MGET reply" : c.error();
      return false;
    }
    std::vector<std::string_view> gone{"SREM", kNodesKey};
    for (std::size_t i = 0; i < got->elements; ++i) {
      const redisReply* value = got->element[i];
      if (value->type == REDIS_REPLY_STRING) {
        nodes.emplace_back(value->str, value->len);
      } else if (names[i] != node_) {
        gone.push_back(names[i]);  // a node alive again adds itself back at its next beat
      }
    }
    if (gone.size() > 2 && !c.command(gone)) {
      error = c.error();
      return false;
    }
  }
  std::map<std::string, long long> inStream;
  if (!readPools(c, nodes, inStream, error)) return false;
  working_.connected = true;
  working_.error.clear();
  working_.nodes = std::move(nodes);
  working_.inStream = std::move(inStream);
  working_.readAt = std::chrono::system_clock::now();
  return true;
}

// For every pool the nodes announce, in one pipeline: its stream's length (XLEN) and its
// cluster quarantine's version; the quarantine itself (HGETALL) only for the pools whose version
// changed since the last heartbeat, so a quiet cluster reads a few integers per beat.
bool Membership::readPools(RedisConnection& c, const std::vector<std::string>& nodes,
                           std::map<std::string, long long>& lengths, std::string& error) {
  std::vector<std::string> pools;
  for (const std::string& text : nodes) {
    const nlohmann::json node = nlohmann::json::parse(text, nullptr, false);
    if (!node.is_object() || !node.contains("pools") || !node["pools"].is_array()) continue;
    for (const nlohmann::json& pool : node["pools"]) {
      if (pool.is_object() && pool.contains("name") && pool["name"].is_string()) {
        pools.push_back(pool["name"].get<std::string>());
      }
    }
  }
  std::sort(pools.begin(), pools.end());
  pools.erase(std::unique(pools.begin(), pools.end()), pools.end());
  if (pools.empty()) return true;
  std::vector<std::string> keys;
  for (const std::string& pool : pools) {
    keys.push_back(poolStreamKey(pool));
    keys.push_back(quarantineVersionKey(pool));
  }
  std::vector<std::vector<std::string_view>> commands;
  for (std::size_t i = 0; i < keys.size(); i += 2) {
    commands.push_back({"XLEN", keys[i]});
    commands.push_back({"GET", keys[i + 1]});
  }
  auto replies = c.pipeline(commands);
  if (replies.size() != commands.size()) {
    error = c.error();
    return false;
  }
  std::vector<std::string> changed;
  for (std::size_t i = 0; i < pools.size(); ++i) {
    const redisReply* length = replies[2 * i].get();
    if (length && length->type == REDIS_REPLY_INTEGER) lengths[pools[i]] = length->integer;
    const std::string version = replyText(replies[2 * i + 1].get());
    if (quarantineVersions_[pools[i]] != version) {
      quarantineVersions_[pools[i]] = version;
      changed.push_back(pools[i]);
    }
  }
  for (const std::string& pool : changed) {
    Reply all = c.command({"HGETALL", quarantineKey(pool)});
    if (!all || all->type != REDIS_REPLY_ARRAY) {
      error = all ? "unexpected HGETALL reply" : c.error();
      quarantineVersions_.erase(pool);  // read again at the next heartbeat
      return false;
    }
    std::map<std::string, std::string> entries;
    for (auto& [fingerprint, report] : replyPairs(all.get()).value_or(Fields{})) {
      entries[std::move(fingerprint)] = std::move(report);
    }
    working_.quarantine[pool] = std::move(entries);
  }
  return true;
}

void Membership::run() {
  const auto timeout = std::min<std::chrono::nanoseconds>(heartbeat_ * 2, std::chrono::seconds(2));
  std::optional<RedisConnection> c;
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) break;
    }
    std::string error;
    if (!c) c = RedisConnection::open(address_, password_, timeout, error);
    if (c && !beat(*c, error)) c.reset();
    if (!c) {
      working_.connected = false;
      working_.error = error.empty() ? "disconnected" : error;
    }
    publish();
    wait(heartbeat_);
  }
  if (c) {  // leave at once rather than after three beats
    c->pipeline({{"DEL", kKeyPrefix + node_}, {"SREM", kNodesKey, node_}});
  }
}

}  // namespace bulkhead::cluster
