#pragma once
// One blocking hiredis connection, opened the way every cluster thread needs it: connected with a
// timeout, authenticated, on the configured database. Commands go as argument vectors, so keys and
// payloads are binary-safe and nothing is ever formatted into a command string.
//
// Owns: the hiredis context and the reply objects' lifetime. It may not retry or decide what a
// failure means: its callers (membership.h, job_queue.h) reconnect as their job needs.

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/redis_address.h"

namespace bulkhead::cluster {

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

timeval toTimeval(std::chrono::nanoseconds d);
// The text of a string, status or error reply ("" for any other type).
std::string replyText(const redisReply* r);
// A flat [name, value, name, value, ...] reply (HGETALL, a stream entry's fields) as pairs; none
// when it is not an array of even length (a deleted stream entry is nil).
std::optional<std::vector<std::pair<std::string, std::string>>> replyPairs(const redisReply* r);
// `argv` followed by each pair's name and value: a command that writes fields (XADD, HSET). The
// views point into `pairs`, which must outlive the command.
std::vector<std::string_view> withPairs(
    std::vector<std::string_view> argv,
    const std::vector<std::pair<std::string, std::string>>& pairs);

// Whether an error reply says the server cannot take writes for now, though the command is
// sound: it is loading its data (LOADING), busy with a script (BUSY), out of memory under
// maxmemory (OOM), a replica or without its master (READONLY, MASTERDOWN, NOREPLICAS), or a
// cluster in change (TRYAGAIN, CLUSTERDOWN). What such a command would have written must be
// kept and written again later, never dropped.
bool isPassingError(std::string_view errorText);

class RedisConnection {
 public:
  // A connection to a server that answers commands, or none and `error` says why. A server
  // still loading its data after a restart is refused (PING: LOADING ...), so that nothing sent
  // on a fresh connection meets LOADING errors.
  static std::optional<RedisConnection> open(const config::RedisAddress& address,
                                             const std::string& password,
                                             std::chrono::nanoseconds timeout, std::string& error);

  // The reply (perhaps an error reply), or null when the connection failed: error() says why and
  // the connection is no longer usable.
  Reply command(const std::vector<std::string_view>& argv);
  // Several commands in one write, their replies in order; empty when the connection failed.
  std::vector<Reply> pipeline(const std::vector<std::vector<std::string_view>>& commands);
  std::string error() const;

 private:
  explicit RedisConnection(redisContext* context) : context_(context, redisFree) {}
  std::unique_ptr<redisContext, void (*)(redisContext*)> context_;
};

}  // namespace bulkhead::cluster
