// docs/config.md against the parser: every key the parser knows is documented and every
// documented key exists (known_keys.h is the parser's list), every known key is really read, each
// default written as a TOML value is the parser's default, each example value is accepted, and
// the complete example loads. The key tables are the ones after a `<!-- keys: SECTION -->` line;
// their columns are key | type | default | example | what it does.

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/known_keys.h"

#ifndef BULKHEAD_SOURCE_DIR
#error "BULKHEAD_SOURCE_DIR must name the source tree (CMakeLists.txt sets it)"
#endif

namespace bulkhead::config {
namespace {

const std::string kDocPath = std::string(BULKHEAD_SOURCE_DIR) + "/docs/config.md";
const std::string kFile = "/etc/bulkhead/test.toml";

struct DocumentedKey {
  std::string section;
  std::string key;
  std::string defaultCell;
  std::string exampleCell;
  int line = 0;
};

std::string readDoc() {
  std::ifstream in(kDocPath);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string trim(std::string s) {
  const char* space = " \t";
  s.erase(0, s.find_first_not_of(space));
  s.erase(s.find_last_not_of(space) + 1);
  return s;
}

// The cells of a Markdown table row; a `|` inside backticks (none today) would split a cell.
std::vector<std::string> cells(const std::string& row) {
  std::vector<std::string> out;
  std::stringstream in(row.substr(1));
  std::string cell;
  while (std::getline(in, cell, '|')) out.push_back(trim(cell));
  return out;
}

// The text inside the cell's leading backticks: a TOML value. Empty when the cell does not start
// with one ("required", "none (no breaker)").
std::string tomlValue(const std::string& cell) {
  if (cell.size() < 2 || cell[0] != '`') return "";
  auto end = cell.find('`', 1);
  return end == std::string::npos ? "" : cell.substr(1, end - 1);
}

std::vector<DocumentedKey> documentedKeys() {
  std::vector<DocumentedKey> keys;
  std::istringstream in(readDoc());
  std::string line, section;
  int number = 0, rowInTable = 0;
  const std::string marker = "<!-- keys: ";
  while (std::getline(in, line)) {
    ++number;
    if (line.rfind(marker, 0) == 0) {
      section = line.substr(marker.size(), line.find(' ', marker.size()) - marker.size());
      rowInTable = 0;
      continue;
    }
    if (section.empty()) continue;
    if (line.empty() || line[0] != '|') {
      if (rowInTable > 0) section.clear();  // the table ended
      continue;
    }
    if (++rowInTable <= 2) continue;  // header and separator
    auto row = cells(line);
    if (row.size() < 4) {
      ADD_FAILURE() << kDocPath << ":" << number << ": a key row needs 5 columns";
      continue;
    }
    std::string key = row[0];
    std::erase(key, '`');
    keys.push_back({section, key, row[2], row[3], number});
  }
  return keys;
}

// A config that sets `key = value` in its section, with what some keys need around them.
std::string configWith(const std::string& section, const std::string& key,
                       const std::optional<std::string>& value) {
  std::string setting = value ? key + " = " + *value + "\n" : "";
  if (section == "server") return "[server]\n" + setting + "[pool.a]\nhandler = \"m:f\"\n";
  if (section == "cluster") {
    const std::string redis = key == "redis" ? "" : "redis = \"redis://127.0.0.1:6379/0\"\n";
    return "[cluster]\n" + redis + setting + "[pool.a]\nhandler = \"m:f\"\n";
  }
  std::string text = "[pool.a]\nhandler = \"m:f\"\n";
  if (key == "zygote_fallback") text += "mode = \"zygote\"\n";
  if (section == "pool.breaker") {
    text += "breaker = { " + (value ? key + " = " + *value : "") + " }\n";
  } else if (key != "handler") {
    text += setting;
  } else if (value) {
    text = "[pool.a]\n" + setting;
  }
  // The examples name another pool as fallback.
  return text + "[pool.faces_cpu]\nhandler = \"m:f\"\n";
}

std::string errorsOf(const LoadResult& r) {
  std::string all;
  for (const auto& e : r.errors) all += e.describe() + "\n";
  return all;
}

TEST(ConfigDocs, EveryParserKeyIsDocumentedAndEveryDocumentedKeyExists) {
  auto documented = documentedKeys();
  ASSERT_GT(documented.size(), 10u) << "no key tables found in " << kDocPath;
  std::set<std::pair<std::string, std::string>> inDoc, inParser;
  for (const auto& d : documented) {
    EXPECT_TRUE(inDoc.insert({d.section, d.key}).second)
        << kDocPath << ":" << d.line << ": " << d.section << "." << d.key << " is documented twice";
  }
  for (const auto& k : knownKeys()) inParser.insert({std::string(k.section), std::string(k.key)});
  for (const auto& [section, key] : inParser) {
    EXPECT_TRUE(inDoc.count({section, key}))
        << section << "." << key << " is a key of the parser but not documented in " << kDocPath;
  }
  for (const auto& d : documented) {
    EXPECT_TRUE(inParser.count({d.section, d.key}))
        << kDocPath << ":" << d.line << ": " << d.section << "." << d.key
        << " is documented but the parser does not know it";
  }
}

// A key in the known list that the loader never reads would be accepted and ignored.
TEST(ConfigDocs, EveryKnownKeyIsReadByTheParser) {
  for (const auto& k : knownKeys()) {
    const std::string section(k.section), key(k.key);
    auto r = loadConfigText(configWith(section, key, "1979-05-27"), kFile);
    std::string name = (section == "pool.breaker" ? "pool.a.breaker."
                        : section == "pool"       ? "pool.a."
                        : section == "cluster"    ? "cluster."
                                                  : "server.") +
                       key;
    bool named = false;
    for (const auto& e : r.errors) named = named || e.key == name;
    EXPECT_TRUE(named) << name << " = a date was not refused, so the parser does not read it:\n"
                       << errorsOf(r);
  }
}

TEST(ConfigDocs, DocumentedDefaultsAreTheParsersDefaults) {
  int checked = 0;
  for (const auto& d : documentedKeys()) {
    std::string value = tomlValue(d.defaultCell);
    if (value.empty()) continue;
    auto without = loadConfigText(configWith(d.section, d.key, std::nullopt), kFile);
    auto with = loadConfigText(configWith(d.section, d.key, value), kFile);
    ASSERT_TRUE(without.config) << errorsOf(without);
    ASSERT_TRUE(with.config) << kDocPath << ":" << d.line << ": default of " << d.key << " ("
                             << value << ") is refused:\n"
                             << errorsOf(with);
    ++checked;
    if (d.section == "server") {
      EXPECT_TRUE(with.config->server == without.config->server)
          << kDocPath << ":" << d.line << ": server." << d.key << " = " << value
          << " is not the parser's default";
    } else if (d.section == "cluster") {
      EXPECT_TRUE(with.config->cluster == without.config->cluster)
          << kDocPath << ":" << d.line << ": cluster." << d.key << " = " << value
          << " is not the parser's default";
    } else {
      EXPECT_TRUE(with.config->pools.at(0) == without.config->pools.at(0))
          << kDocPath << ":" << d.line << ": " << d.section << "." << d.key << " = " << value
          << " is not the parser's default";
    }
  }
  EXPECT_GT(checked, 30) << "most defaults should be written as TOML values";
}

TEST(ConfigDocs, DocumentedExamplesAreAccepted) {
  for (const auto& d : documentedKeys()) {
    std::string value = tomlValue(d.exampleCell);
    ASSERT_FALSE(value.empty()) << kDocPath << ":" << d.line << ": " << d.key
                                << " has no example written as a TOML value";
    auto r = loadConfigText(configWith(d.section, d.key, value), kFile);
    EXPECT_TRUE(r.config) << kDocPath << ":" << d.line << ": example " << d.key << " = " << value
                          << " is refused:\n"
                          << errorsOf(r);
  }
}

TEST(ConfigDocs, TheCompleteExampleLoadsAndSetsEveryPoolKey) {
  std::string doc = readDoc();
  auto marker = doc.find("<!-- example -->");
  ASSERT_NE(marker, std::string::npos);
  auto begin = doc.find("```toml\n", marker);
  ASSERT_NE(begin, std::string::npos);
  begin += 8;
  auto end = doc.find("```", begin);
  std::string example = doc.substr(begin, end - begin);
  auto r = loadConfigText(example, kFile);
  ASSERT_TRUE(r.config) << errorsOf(r);
  for (const auto& k : knownKeys()) {
    if (k.section == "pool.breaker") continue;  // inside `breaker = { ... }`
    std::string assignment = "\n" + std::string(k.key) + " = ";
    EXPECT_NE(example.find(assignment), std::string::npos)
        << "the complete example does not show " << k.section << "." << k.key;
  }
}

}  // namespace
}  // namespace bulkhead::config
