#include "config/key_reader.h"

#include "config/units.h"

namespace bulkhead::config {

std::string describeNode(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return "string \"" + std::string(*node.value<std::string>()) + "\"";
    case toml::node_type::integer:
      return "integer " + std::to_string(*node.value<int64_t>());
    case toml::node_type::floating_point:
      return "float";
    case toml::node_type::boolean:
      return "boolean";
    case toml::node_type::table:
      return "table";
    case toml::node_type::array:
      return "array";
    case toml::node_type::date:
      return "date";
    case toml::node_type::time:
      return "time";
    case toml::node_type::date_time:
      return "date-time";
    case toml::node_type::none:
      return "nothing";
  }
  return "value";
}

void KeyReader::error(const toml::node* node, int fallbackLine, const std::string& key,
                      std::string message) {
  int line = node ? static_cast<int>(node->source().begin.line) : fallbackLine;
  errors_.push_back({path_, line, key, std::move(message)});
}

void KeyReader::readString(const toml::table& t, int line, const std::string& prefix,
                           const char* key, std::string& out) {
  const toml::node* n = t.get(key);
  if (!n) return;
  if (auto v = n->value<std::string>())
    out = *v;
  else
    error(n, line, prefix + key, "expected a string, got " + describeNode(*n));
}

bool KeyReader::readChoice(const toml::table& t, int line, const std::string& prefix,
                           const char* key, const std::string& first, const std::string& second) {
  std::string value = first;
  readString(t, line, prefix, key, value);
  if (value != first && value != second) {
    error(t.get(key), line, prefix + key,
          "expected \"" + first + "\" or \"" + second + "\", got \"" + value + "\"");
  }
  return value == second;
}

void KeyReader::readInt(const toml::table& t, int line, const std::string& prefix, const char* key,
                        int64_t min, int64_t max, int64_t& out) {
  const toml::node* n = t.get(key);
  if (!n) return;
  auto v = n->is_integer() ? n->value<int64_t>() : std::nullopt;
  if (!v) {
    error(n, line, prefix + key,
          "expected an integer between " + std::to_string(min) + " and " + std::to_string(max) +
              ", got " + describeNode(*n));
    return;
  }
  if (*v < min || *v > max) {
    error(n, line, prefix + key,
          "expected an integer between " + std::to_string(min) + " and " + std::to_string(max) +
              ", got " + std::to_string(*v));
    return;
  }
  out = *v;
}

void KeyReader::readDuration(const toml::table& t, int line, const std::string& prefix,
                             const char* key, std::chrono::nanoseconds min,
                             std::chrono::nanoseconds& out) {
  const toml::node* n = t.get(key);
  if (!n) return;
  auto s = n->value<std::string>();
  auto d = (s && n->is_string()) ? parseDuration(*s) : std::nullopt;
  if (!d) {
    error(n, line, prefix + key,
          "expected a duration such as \"250ms\", \"30s\", \"2m\" or \"1h\", got " +
              describeNode(*n));
    return;
  }
  if (*d < min) {
    error(n, line, prefix + key,
          "expected a duration of at least " + std::to_string(min.count() / 1000000) +
              "ms, got \"" + *s + "\"");
    return;
  }
  out = *d;
}

void KeyReader::readTimeout(const toml::table& t, int line, const std::string& prefix,
                            const char* key, std::chrono::nanoseconds min,
                            std::chrono::nanoseconds& out) {
  const toml::node* n = t.get(key);
  if (n && n->is_string() && *n->value<std::string>() == "off") {
    out = kTimeoutOff;
    return;
  }
  readDuration(t, line, prefix, key, min, out);
}

void KeyReader::readSize(const toml::table& t, int line, const std::string& prefix, const char* key,
                         std::uint64_t min, std::uint64_t& out) {
  const toml::node* n = t.get(key);
  if (!n) return;
  std::optional<std::uint64_t> size;
  if (n->is_string())
    size = parseSize(*n->value<std::string>());
  else if (n->is_integer() && *n->value<int64_t>() >= 0)
    size = *n->value<int64_t>();
  if (!size || *size < min) {
    error(n, line, prefix + key,
          "expected a size such as \"512MiB\" or \"4GiB\" (at least " + std::to_string(min) +
              " bytes), got " + describeNode(*n));
    return;
  }
  out = *size;
}

void KeyReader::rejectUnknown(const toml::table& t, int line, const std::string& prefix,
                              const std::set<std::string>& known) {
  for (auto&& [k, v] : t) {
    if (!known.count(std::string(k.str()))) {
      std::string list;
      for (const auto& name : known) list += (list.empty() ? "" : ", ") + name;
      error(&v, line, prefix + std::string(k.str()), "unknown key (known keys: " + list + ")");
    }
  }
}

void KeyReader::checkEntryPoint(const toml::table& t, int line, const std::string& prefix,
                                const char* key, const std::string& value) {
  auto colon = value.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == value.size() ||
      value.find(':', colon + 1) != std::string::npos) {
    error(t.get(key), line, prefix + key, "expected \"module:function\", got \"" + value + "\"");
  }
}

}  // namespace bulkhead::config
