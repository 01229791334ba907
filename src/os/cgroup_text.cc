// The pure readers of cgroup text declared in cgroups.h: /proc/self/cgroup, /proc/self/mountinfo,
// where our own cgroups are, counter files and pid lists. Tested on fixtures (tests/os); no
// system calls here, so detection can be tested on any machine's layout.

#include <algorithm>
#include <optional>
#include <string>

#include "os/cgroups.h"
#include "os/kernel_text.h"
#include "os/parse_number.h"

namespace bulkhead::os {

namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo (man 5 proc).
std::string decodeOctalEscapes(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
        s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out.push_back(
          static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

bool contains(const std::vector<std::string>& v, std::string_view x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

// The directory of cgroup `path` under a mount of its hierarchy whose root is `root`, or nullopt
// when the cgroup lies outside what that mount shows.
std::optional<std::string> dirUnderMount(const MountInfoLine& m, const std::string& path) {
  std::string rel;
  if (m.root == "/") {
    rel = path;
  } else if (path == m.root) {
    rel = "";
  } else if (path.size() > m.root.size() && path.compare(0, m.root.size(), m.root) == 0 &&
             path[m.root.size()] == '/') {
    rel = path.substr(m.root.size());
  } else {
    return std::nullopt;
  }
  std::string dir = m.mountPoint;
  if (rel != "/") dir += rel;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir;
}

}  // namespace

std::vector<ProcCgroupLine> parseProcCgroup(std::string_view text) {
  std::vector<ProcCgroupLine> out;
  forEachLine(text, [&](std::string_view line) {
    // "hierarchy-ID:controller-list:cgroup-path"; the path may itself contain ':'.
    std::size_t a = line.find(':');
    if (a == std::string_view::npos) return;
    std::size_t b = line.find(':', a + 1);
    if (b == std::string_view::npos) return;
    auto id = parseWhole<int>(line.substr(0, a));
    std::string_view path = line.substr(b + 1);
    if (!id || path.empty() || path.front() != '/') return;
    ProcCgroupLine l;
    l.hierarchyId = *id;
    std::string_view controllers = line.substr(a + 1, b - a - 1);
    if (!controllers.empty()) {
      for (auto c : splitOn(controllers, ',')) l.controllers.emplace_back(c);
    }
    l.path = std::string(path);
    out.push_back(std::move(l));
  });
  return out;
}

std::vector<MountInfoLine> parseMountInfo(std::string_view text) {
  std::vector<MountInfoLine> out;
  forEachLine(text, [&](std::string_view line) {
    auto words = splitWords(line);
    // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
    auto dash = std::find(words.begin() + std::min<std::size_t>(words.size(), 6), words.end(),
                          std::string_view("-"));
    if (words.size() < 6 || dash == words.end() || words.end() - dash < 4) return;
    MountInfoLine m;
    m.root = decodeOctalEscapes(words[3]);
    m.mountPoint = decodeOctalEscapes(words[4]);
    m.fsType = std::string(dash[1]);
    for (auto o : splitOn(dash[3], ',')) m.superOptions.emplace_back(o);
    out.push_back(std::move(m));
  });
  return out;
}

OwnCgroupDirs locateOwnCgroups(std::string_view procSelfCgroupText,
                               std::string_view mountinfoText) {
  OwnCgroupDirs out;
  auto lines = parseProcCgroup(procSelfCgroupText);
  auto mounts = parseMountInfo(mountinfoText);

  auto findV1 = [&](const std::string& controller) -> std::optional<std::string> {
    auto line = std::find_if(lines.begin(), lines.end(), [&](const ProcCgroupLine& l) {
      return l.hierarchyId != 0 && contains(l.controllers, controller);
    });
    if (line == lines.end()) {
      out.notes.push_back("no v1 " + controller + " hierarchy");
      return std::nullopt;
    }
    bool mounted = false;
    for (const auto& m : mounts) {
      if (m.fsType != "cgroup" || !contains(m.superOptions, controller)) continue;
      mounted = true;
      if (auto dir = dirUnderMount(m, line->path)) return dir;
    }
    out.notes.push_back(mounted ? "v1 " + controller + " cgroup " + line->path +
                                      " is outside every mount of its hierarchy"
                                : "v1 " + controller + " hierarchy is not mounted");
    return std::nullopt;
  };
  out.v1Memory = findV1("memory");
  out.v1Pids = findV1("pids");

  auto unified = std::find_if(lines.begin(), lines.end(), [](const ProcCgroupLine& l) {
    return l.hierarchyId == 0 && l.controllers.empty();
  });
  if (unified == lines.end()) {
    out.notes.push_back("no v2 hierarchy");
  } else {
    bool mounted = false;
    for (const auto& m : mounts) {
      if (m.fsType != "cgroup2") continue;
      mounted = true;
      if (auto dir = dirUnderMount(m, unified->path)) {
        out.v2 = dir;
        break;
      }
    }
    if (!out.v2) {
      out.notes.push_back(mounted ? "v2 cgroup " + unified->path + " is outside every cgroup2 mount"
                                  : "v2 hierarchy is not mounted");
    }
  }
  return out;
}

std::optional<std::uint64_t> parseKeyedCounter(std::string_view text, std::string_view key) {
  std::optional<std::uint64_t> found;
  forEachLine(text, [&](std::string_view line) {
    auto words = splitWords(line);
    if (!found && words.size() == 2 && words[0] == key) found = parseWhole<std::uint64_t>(words[1]);
  });
  return found;
}

std::optional<std::uint64_t> parseCounterFile(std::string_view text) {
  return parseWhole<std::uint64_t>(trim(text));
}

std::vector<pid_t> parsePidList(std::string_view text) {
  std::vector<pid_t> out;
  for (auto w : splitWords(text)) {
    if (auto pid = parseWhole<pid_t>(w); pid && *pid > 0) out.push_back(*pid);
  }
  return out;
}

}  // namespace bulkhead::os
