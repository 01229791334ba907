#include "cluster/redis_connection.h"

namespace bulkhead::cluster {

timeval toTimeval(std::chrono::nanoseconds d) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  return timeval{static_cast<time_t>(us / 1000000), static_cast<suseconds_t>(us % 1000000)};
}

std::string replyText(const redisReply* r) {
  if (!r) return {};
  if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
      r->type == REDIS_REPLY_ERROR) {
    return std::string(r->str, r->len);
  }
  return {};
}

std::optional<std::vector<std::pair<std::string, std::string>>> replyPairs(const redisReply* r) {
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements % 2 != 0) return std::nullopt;
  std::vector<std::pair<std::string, std::string>> pairs;
  pairs.reserve(r->elements / 2);
  for (std::size_t i = 0; i < r->elements; i += 2) {
    pairs.emplace_back(replyText(r->element[i]), replyText(r->element[i + 1]));
  }
  return pairs;
}

std::vector<std::string_view> withPairs(
    std::vector<std::string_view> argv,
    const std::vector<std::pair<std::string, std::string>>& pairs) {
  for (const auto& [name, value] : pairs) {
    argv.push_back(name);
    argv.push_back(value);
  }
  return argv;
}

bool isPassingError(std::string_view errorText) {
  static constexpr std::string_view kPassing[] = {"LOADING",  "BUSY ",      "OOM ",
                                                  "READONLY", "MASTERDOWN", "NOREPLICAS",
                                                  "TRYAGAIN", "CLUSTERDOWN"};
  for (std::string_view prefix : kPassing) {
    if (errorText.starts_with(prefix)) return true;
  }
  return false;
}

std::optional<RedisConnection> RedisConnection::open(const config::RedisAddress& address,
                                                     const std::string& password,
                                                     std::chrono::nanoseconds timeout,
                                                     std::string& error) {
  const timeval tv = toTimeval(timeout);
  redisContext* ctx = address.unixSocket
                          ? redisConnectUnixWithTimeout(address.path.c_str(), tv)
                          : redisConnectWithTimeout(address.host.c_str(), address.port, tv);
  if (!ctx) {
    error = "cannot allocate a Redis context";
    return std::nullopt;
  }
  RedisConnection c(ctx);
  if (ctx->err) {
    error = ctx->errstr;
    return std::nullopt;
  }
  redisSetTimeout(ctx, tv);
  auto refused = [&](const char* what, Reply r) {
    if (r && r->type != REDIS_REPLY_ERROR) return false;
    error = std::string(what) + ": " + (r ? replyText(r.get()) : c.error());
    return true;
  };
  if (!password.empty() && refused("AUTH", c.command({"AUTH", password}))) return std::nullopt;
  const std::string db = std::to_string(address.db);
  if (address.db != 0 && refused("SELECT", c.command({"SELECT", db}))) return std::nullopt;
  if (refused("PING", c.command({"PING"}))) return std::nullopt;
  return c;
}

Reply RedisConnection::command(const std::vector<std::string_view>& argv) {
  std::vector<const char*> args;
  std::vector<std::size_t> lengths;
  args.reserve(argv.size());
  lengths.reserve(argv.size());
  for (std::string_view a : argv) {
    args.push_back(a.data());
    lengths.push_back(a.size());
  }
  return Reply(static_cast<redisReply*>(redisCommandArgv(
      context_.get(), static_cast<int>(args.size()), args.data(), lengths.data())));
}

std::vector<Reply> RedisConnection::pipeline(
    const std::vector<std::vector<std::string_view>>& commands) {
  for (const auto& argv : commands) {
    std::vector<const char*> args;
    std::vector<std::size_t> lengths;
    for (std::string_view a : argv) {
      args.push_back(a.data());
      lengths.push_back(a.size());
    }
    if (redisAppendCommandArgv(context_.get(), static_cast<int>(args.size()), args.data(),
                               lengths.data()) != REDIS_OK) {
      return {};
    }
  }
  std::vector<Reply> replies;
  for (std::size_t i = 0; i < commands.size(); ++i) {
    void* raw = nullptr;
    if (redisGetReply(context_.get(), &raw) != REDIS_OK) return {};
    replies.emplace_back(static_cast<redisReply*>(raw));
  }
  return replies;
}

std::string RedisConnection::error() const {
  return context_ && context_->err ? context_->errstr : "no reply";
}

}  // namespace bulkhead::cluster
