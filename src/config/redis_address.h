#pragma once
// Where [cluster] redis points: "redis://HOST:PORT[/DB]" (TCP) or "unix:/path/to.sock[?db=N]".
// A password is never written here (the config file is often world-readable and committed): it
// comes from the environment variable `password_env` names, and an address with one is refused.

#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace bulkhead::config {

struct RedisAddress {
  bool unixSocket = false;
  std::string host;  // TCP
  int port = 6379;   // TCP
  std::string path;  // unix
  int db = 0;
};

// The address, or what is wrong with it (one sentence, for the config error).
std::variant<RedisAddress, std::string> parseRedisAddress(std::string_view text);

inline std::optional<std::string> redisAddressProblem(std::string_view text) {
  auto parsed = parseRedisAddress(text);
  if (auto* problem = std::get_if<std::string>(&parsed)) return *problem;
  return std::nullopt;
}

}  // namespace bulkhead::config
