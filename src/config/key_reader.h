#pragma once
// Typed reads of one TOML key: a string, one of two words, an integer in a range, a duration, a
// size, a "module:function" entry point, and unknown keys. Each reader leaves its output untouched
// when the key is absent and records a ConfigError naming file, line and key when it is present
// but wrong, so one load reports every mistake at once.

#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#define TOML_EXCEPTIONS 1
#include <toml++/toml.h>

#include "config/config.h"

namespace bulkhead::config {

// "a string", "an integer", ... for error messages.
std::string describeNode(const toml::node& node);

class KeyReader {
 public:
  KeyReader(std::string path, std::vector<ConfigError>& errors)
      : path_(std::move(path)), errors_(errors) {}

  void error(const toml::node* node, int fallbackLine, const std::string& key, std::string message);
  void readString(const toml::table& t, int line, const std::string& prefix, const char* key,
                  std::string& out);
  // A string that must be one of two words; true when it is the second (the default is the
  // first).
  bool readChoice(const toml::table& t, int line, const std::string& prefix, const char* key,
                  const std::string& first, const std::string& second);
  void readInt(const toml::table& t, int line, const std::string& prefix, const char* key,
               int64_t min, int64_t max, int64_t& out);
  void readDuration(const toml::table& t, int line, const std::string& prefix, const char* key,
                    std::chrono::nanoseconds min, std::chrono::nanoseconds& out);
  // A duration, or "off" (no limit: kTimeoutOff).
  void readTimeout(const toml::table& t, int line, const std::string& prefix, const char* key,
                   std::chrono::nanoseconds min, std::chrono::nanoseconds& out);
  void readSize(const toml::table& t, int line, const std::string& prefix, const char* key,
                std::uint64_t min, std::uint64_t& out);
  void rejectUnknown(const toml::table& t, int line, const std::string& prefix,
                     const std::set<std::string>& known);
  void checkEntryPoint(const toml::table& t, int line, const std::string& prefix, const char* key,
                       const std::string& value);

 protected:
  std::string path_;
  std::vector<ConfigError>& errors_;
};

}  // namespace bulkhead::config
