#include "config/redis_address.h"

#include <charconv>

namespace bulkhead::config {

namespace {

std::optional<int> number(std::string_view text, int low, int high) {
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  if (value < low || value > high) return std::nullopt;
  return value;
}

constexpr std::string_view kForm = "expected \"redis://HOST:PORT/DB\" or \"unix:/path?db=N\"";

}  // namespace

std::variant<RedisAddress, std::string> parseRedisAddress(std::string_view text) {
  RedisAddress a;
  if (text.rfind("unix:", 0) == 0) {
    a.unixSocket = true;
    std::string_view rest = text.substr(5);
    if (auto q = rest.find('?'); q != std::string_view::npos) {
      std::string_view query = rest.substr(q + 1);
      rest = rest.substr(0, q);
      auto db = query.rfind("db=", 0) == 0 ? number(query.substr(3), 0, 1000000) : std::nullopt;
      if (!db)
        return "the only parameter of a unix: address is db=N, got \"" + std::string(query) + "\"";
      a.db = *db;
    }
    if (rest.empty() || rest[0] != '/') {
      return "a unix: address needs an absolute socket path; " + std::string(kForm);
    }
    a.path = std::string(rest);
    return a;
  }
  if (text.rfind("redis://", 0) != 0) {
    return std::string(kForm) + ", got \"" + std::string(text) + "\"";
  }
  std::string_view rest = text.substr(8);
  std::string_view authority = rest.substr(0, rest.find('/'));
  if (authority.find('@') != std::string_view::npos) {
    return "a password or user in the address is refused (the file is not a secret): name the "
           "environment variable that holds it in password_env";
  }
  if (rest.size() > authority.size()) {
    std::string_view db = rest.substr(authority.size() + 1);
    if (!db.empty()) {
      auto n = number(db, 0, 1000000);
      if (!n) return "the database after the '/' must be a number, got \"" + std::string(db) + "\"";
      a.db = *n;
    }
  }
  auto colon = authority.rfind(':');
  a.host = std::string(authority.substr(0, colon));
  if (colon != std::string_view::npos) {
    auto port = number(authority.substr(colon + 1), 1, 65535);
    if (!port) {
      return "the port must be a number from 1 to 65535, got \"" +
             std::string(authority.substr(colon + 1)) + "\"";
    }
    a.port = *port;
  }
  if (a.host.empty()) return "no host; " + std::string(kForm);
  return a;
}

}  // namespace bulkhead::config
