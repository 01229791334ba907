// Containment without a cgroup (os/orphans.h): the stat and environ parsers on fixtures, the
// selector on process tables shaped like a supervisor with a zygote pool (spare, a fork in flight,
// a crashed worker's setsid'd grandchildren), the stop-then-kill sweep on a fake host that forks
// during it, and the /proc walk on a temp dir. Real processes: orphans_real_test.cc.

#include "os/orphans.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "testlib/fixtures.h"

namespace bulkhead::os {
namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;

constexpr const char* kTag = "BULKHEAD_WORKER_ID";

// A /proc/PID/stat line as Linux 6.x writes it (52 fields), with the fields we read set.
std::string statLine(pid_t pid, const std::string& comm, char state, pid_t parent,
                     std::uint64_t start) {
  return std::to_string(pid) + " (" + comm + ") " + state + " " + std::to_string(parent) + " " +
         std::to_string(pid) + " " + std::to_string(pid) +
         " 0 -1 4194304 120 0 0 0 3 1 0 0 20 0 1 0 " + std::to_string(start) +
         " 12345678 900 18446744073709551615 1 1 0 0 0 0 0 16781312 2 0 0 0 17 1 0 0 0 0 0 0 0 0 "
         "0 0 0 0 0\n";
}

ProcTable tableOf(const std::vector<std::string>& lines) {
  ProcTable out;
  for (const auto& line : lines) {
    auto e = parseProcStatEntry(line);
    EXPECT_TRUE(e) << line;
    if (e) out.push_back(*e);
  }
  return out;
}

// ---- parsers ----

TEST(ParseProcStatEntry, KernelFixtures) {
  auto python = parseProcStatEntry(testlib::readFixture("proc", "stat_python.txt"));
  ASSERT_TRUE(python);
  EXPECT_EQ(python->pid, 22873);
  EXPECT_EQ(python->parent, 22870);
  EXPECT_EQ(python->state, 'R');
  EXPECT_EQ(python->startTime, 149948u);
  EXPECT_FALSE(python->exited());

  // comm "a) (b c" holds spaces and ')': fields are counted from the last ')'.
  auto weird = parseProcStatEntry(testlib::readFixture("proc", "stat_weird_comm.txt"));
  ASSERT_TRUE(weird);
  EXPECT_EQ(weird->pid, 22926);
  EXPECT_EQ(weird->parent, 22924);
  EXPECT_EQ(weird->startTime, 150244u);

  auto zombie = parseProcStatEntry(testlib::readFixture("proc", "stat_zombie.txt"));
  ASSERT_TRUE(zombie);
  EXPECT_TRUE(zombie->exited());
}

TEST(ParseProcStatEntry, MalformedIsNullopt) {
  for (const std::string& bad : {""s, "12"s, "x (sh) S 1 1"s, "12 (sh) S 1 1 1 0 -1 0 0 0\n"s,
                                 "12 (sh) SS 1 1 1 0 -1 4 1 0 0 0 0 0 0 0 20 0 1 0 99 1 1\n"s,
                                 "-3 (sh) S 1 1 1 0 -1 4 1 0 0 0 0 0 0 0 20 0 1 0 99 1 1\n"s}) {
    EXPECT_FALSE(parseProcStatEntry(bad)) << bad;
  }
}

TEST(EnvironValue, FindsExactNamesOnly) {
  const std::string env =
      "PATH=/usr/bin\0BULKHEAD_WORKER_IDX=no\0BULKHEAD_WORKER_ID=echo-3\0"
      "EMPTY=\0EQ=a=b"s;
  EXPECT_EQ(environValue(env, kTag), "echo-3");
  EXPECT_EQ(environValue(env, "EMPTY"), "");
  EXPECT_EQ(environValue(env, "EQ"), "a=b");  // the last entry, without its NUL
  EXPECT_EQ(environValue(env, "BULKHEAD"), std::nullopt);
  EXPECT_EQ(environValue("", kTag), std::nullopt);
}

// ---- lineage ----

TEST(Lineage, DescendantsAreKeptWhileTheyLiveAndAReusedPidIsNotThem) {
  // 100 supervisor; 200 worker -> 201 -> 202; 201 dies, 202 is reparented to the supervisor.
  ProcTable before =
      tableOf({statLine(100, "bulkhead", 'S', 1, 10), statLine(200, "python3", 'S', 100, 20),
               statLine(201, "sh", 'S', 200, 30), statLine(202, "sleep", 'S', 201, 31),
               statLine(300, "python3", 'S', 100, 40)});
  auto first = updateLineage(before, 200, {});
  EXPECT_EQ(first, (std::set<ProcessKey>{{201, 30}, {202, 31}}));

  ProcTable after =
      tableOf({statLine(100, "bulkhead", 'S', 1, 10), statLine(200, "python3", 'S', 100, 20),
               statLine(202, "sleep", 'S', 100, 31), statLine(203, "python3", 'S', 200, 50)});
  auto second = updateLineage(after, 200, first);
  EXPECT_EQ(second, (std::set<ProcessKey>{{202, 31}, {203, 50}}));

  // 202 exits and its pid is reused by a stranger: the stranger is not recorded.
  ProcTable reused =
      tableOf({statLine(100, "bulkhead", 'S', 1, 10), statLine(200, "python3", 'S', 100, 20),
               statLine(202, "nginx", 'S', 1, 900)});
  EXPECT_EQ(updateLineage(reused, 200, second), std::set<ProcessKey>{});
}

// ---- the selector, on a supervisor with a zygote pool ----

// pid 100: the supervisor. 110: pool z's zygote. 120: worker z-1 (known, alive). 130: the spare
// (forked by the zygote, reparented, tag z-zygote). 131: z-3, FORKED not read yet (tag z-zygote).
// Worker z-2 (was 140) crashed: 141 is its setsid'd grandchild (tag z-2) with a child 142; 143 a
// zombie it left; 144 was started with a fresh environment but is in its recorded lineage.
// 150: an orphan of the live worker z-1 (its child died). 160: z-1's own child. 170: a stranger
// reparented to the supervisor long ago without a tag.
ProcTable zygoteScene() {
  return tableOf({statLine(1, "init", 'S', 0, 1), statLine(100, "bulkhead", 'S', 1, 10),
                  statLine(110, "python3", 'S', 100, 20), statLine(120, "z-1", 'S', 100, 30),
                  statLine(130, "python3", 'S', 100, 40), statLine(131, "python3", 'R', 100, 41),
                  statLine(141, "sleep", 'S', 100, 50), statLine(142, "sleep", 'S', 141, 51),
                  statLine(143, "sh", 'Z', 100, 52), statLine(144, "helper", 'S', 100, 53),
                  statLine(150, "sleep", 'S', 100, 60), statLine(160, "sleep", 'S', 120, 61),
                  statLine(170, "sleep", 'S', 100, 5)});
}

std::map<pid_t, std::string> zygoteSceneTags() {
  return {{130, "z-zygote"}, {131, "z-zygote"}, {141, "z-2"}, {150, "z-1"}};
}

OrphanQuery sceneQuery() {
  OrphanQuery q;
  q.self = 100;
  q.known = {110, 120};
  q.tagName = kTag;
  return q;
}

TEST(SelectVictims, ADeadWorkersOrphansGoTheZygotesSpareAndForksInFlightStay) {
  ProcTable table = zygoteScene();
  OrphanQuery q = sceneQuery();
  EXPECT_EQ(orphanCandidates(table, q), (std::vector<pid_t>{130, 131, 141, 144, 150, 170}));

  q.tags = {"z-2"};
  q.lineage = {{144, 53}, {142, 51}};
  EXPECT_EQ(selectVictims(table, q, zygoteSceneTags()),
            (std::set<ProcessKey>{{141, 50}, {142, 51}, {144, 53}}));

  // The same without lineage: the tag alone finds 141, and 142 below it.
  q.lineage.clear();
  EXPECT_EQ(selectVictims(table, q, zygoteSceneTags()),
            (std::set<ProcessKey>{{141, 50}, {142, 51}}));

  // A lineage key whose pid now names another process (other start time) selects nothing.
  q.tags.clear();
  q.lineage = {{144, 999}};
  EXPECT_EQ(selectVictims(table, q, zygoteSceneTags()), std::set<ProcessKey>{});
}

TEST(SelectVictims, NeverAKnownProcessNorWhatIsReachedOnlyThroughOne) {
  ProcTable table = zygoteScene();
  OrphanQuery q = sceneQuery();
  // Even a lineage that names the zygote, a worker, the supervisor or init selects none of them.
  q.lineage = {{110, 20}, {120, 30}, {100, 10}, {1, 1}};
  q.everything = false;
  EXPECT_EQ(selectVictims(table, q, {}), std::set<ProcessKey>{});
  // The search for descendants stops at a known process: 300 (an orphan) -> 301 (known) -> 302.
  table.push_back({300, 100, 'S', 70});
  table.push_back({301, 300, 'S', 71});
  table.push_back({302, 301, 'S', 72});
  q.known.insert(301);
  q.lineage = {{300, 70}};
  EXPECT_EQ(selectVictims(table, q, {}), (std::set<ProcessKey>{{300, 70}}));
}

TEST(SelectVictims, AReleasedWorkersChildrenGoWithIt) {
  ProcTable table = zygoteScene();
  OrphanQuery q = sceneQuery();
  q.releasedWorkers = {120};
  EXPECT_EQ(selectVictims(table, q, {}), (std::set<ProcessKey>{{160, 61}}));
}

TEST(SelectVictims, AtShutdownEveryOrphanGoesButNoKnownProcess) {
  ProcTable table = zygoteScene();
  OrphanQuery q = sceneQuery();
  q.everything = true;
  EXPECT_EQ(selectVictims(table, q, {}),
            (std::set<ProcessKey>{
                {130, 40}, {131, 41}, {141, 50}, {142, 51}, {144, 53}, {150, 60}, {170, 5}}));
}

// ---- the sweep on a fake host ----

class FakeProcesses final : public ProcessHost {
 public:
  explicit FakeProcesses(ProcTable t, std::map<pid_t, std::string> tags)
      : table_(std::move(t)), tags_(std::move(tags)) {}

  std::set<pid_t> forkers;      // fork one child per table read unless stopped
  std::set<pid_t> unstoppable;  // fork even when stopped (to bound the rounds)
  std::vector<std::pair<pid_t, int>> signals;
  pid_t self = 100;

  // The snapshot is what the sweep sees; forkers fork right after it, before any signal lands.
  ProcTable readTable() override {
    ProcTable snapshot = table_;
    for (const auto& e : snapshot) {
      if (e.exited() || !forkers.count(e.pid)) continue;
      if (e.state == 'T' && !unstoppable.count(e.pid)) continue;
      table_.push_back({nextPid_++, e.pid, 'R', nextStart_++});
      if (tags_.count(e.pid)) tags_[table_.back().pid] = tags_[e.pid];
    }
    return snapshot;
  }

  std::optional<std::string> readEnvironValue(pid_t pid, std::string_view) override {
    auto it = tags_.find(pid);
    if (it == tags_.end()) return std::nullopt;
    return it->second;
  }

  bool signal(const ProcessKey& key, int sig) override {
    for (auto& e : table_) {
      if (e.pid != key.pid || e.startTime != key.startTime || e.exited()) continue;
      signals.emplace_back(e.pid, sig);
      if (sig == SIGSTOP) e.state = 'T';
      if (sig == SIGKILL) {
        e.state = 'Z';
        for (auto& child : table_) {
          if (child.parent == e.pid && !child.exited()) child.parent = self;  // to the subreaper
        }
      }
      return true;
    }
    return false;
  }

  const ProcTable& table() const { return table_; }

 private:
  ProcTable table_;
  std::map<pid_t, std::string> tags_;
  pid_t nextPid_ = 1000;
  std::uint64_t nextStart_ = 1000;
};

bool alive(const FakeProcesses& host, pid_t pid) {
  for (const auto& e : host.table()) {
    if (e.pid == pid) return !e.exited();
  }
  return false;
}

TEST(KillOrphans, StopsEverythingFirstIncludingWhatForkedMeanwhileThenKills) {
  FakeProcesses host(zygoteScene(), zygoteSceneTags());
  host.forkers = {142};  // forks right after the first read, before the sweep stops it
  OrphanQuery q = sceneQuery();
  q.tags = {"z-2"};
  SweepResult r = killOrphans(host, q);
  EXPECT_TRUE(r.settled);
  EXPECT_EQ(r.rounds, 3);  // 141 and 142, stopped; then 142's child 1000; then nothing new
  std::set<pid_t> killed;
  for (const auto& k : r.killed) killed.insert(k.pid);
  EXPECT_EQ(killed, (std::set<pid_t>{141, 142, 1000}));
  // Every SIGSTOP comes before the first SIGKILL; nothing else was signalled.
  bool killing = false;
  for (const auto& [pid, sig] : host.signals) {
    EXPECT_TRUE(killed.count(pid)) << pid;
    if (sig == SIGKILL) killing = true;
    if (killing) {
      EXPECT_EQ(sig, SIGKILL);
    }
  }
  for (pid_t pid : {110, 120, 130, 131, 144, 150, 160, 170}) EXPECT_TRUE(alive(host, pid)) << pid;
  EXPECT_EQ(r.tagOf, (std::map<pid_t, std::string>{{141, "z-2"}}));  // the orphan's, for the log
}

TEST(KillOrphans, AtShutdownEveryOrphanGoesAndItsTagSaysWhatItWas) {
  FakeProcesses host(zygoteScene(), zygoteSceneTags());
  OrphanQuery q = sceneQuery();
  q.everything = true;
  SweepResult r = killOrphans(host, q);
  EXPECT_TRUE(r.settled);
  EXPECT_EQ(r.killed.size(), 7u);
  EXPECT_EQ(r.tagOf, zygoteSceneTags());  // the spare and the fork in flight say z-zygote
  for (pid_t pid : {110, 120, 160}) EXPECT_TRUE(alive(host, pid)) << pid;
}

TEST(KillOrphans, AProcessThatKeepsForkingBoundsTheRoundsAndIsStillKilled) {
  FakeProcesses host(zygoteScene(), zygoteSceneTags());
  host.forkers = {141};
  host.unstoppable = {141};
  OrphanQuery q = sceneQuery();
  q.tags = {"z-2"};
  SweepResult r = killOrphans(host, q);
  EXPECT_FALSE(r.settled);
  EXPECT_EQ(r.rounds, kOrphanSweepRounds);
  EXPECT_FALSE(alive(host, 141));
  // 141, 142 and the child found in each later round (the one forked after the last is not).
  EXPECT_EQ(r.killed.size(), 1u + kOrphanSweepRounds);
  EXPECT_TRUE(alive(host, 130));
}

TEST(KillOrphans, NothingToDoIsOneRead) {
  FakeProcesses host(zygoteScene(), zygoteSceneTags());
  OrphanQuery q = sceneQuery();
  q.tags = {"z-9"};
  SweepResult r = killOrphans(host, q);
  EXPECT_TRUE(r.settled);
  EXPECT_EQ(r.rounds, 1);
  EXPECT_TRUE(r.killed.empty());
  EXPECT_TRUE(host.signals.empty());
}

// ---- the /proc walk on a temp dir ----

TEST(ReadProcTable, WalksNumericEntriesAndSkipsWhatDoesNotParse) {
  char tmpl[] = "/tmp/bulkhead-proc-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string root = tmpl;
  auto put = [&](const std::string& pid, const std::string& stat) {
    fs::create_directories(root + "/" + pid);
    std::ofstream(root + "/" + pid + "/stat") << stat;
  };
  put("100", statLine(100, "bulkhead", 'S', 1, 10));
  put("141", statLine(141, "sl eep)", 'S', 100, 50));
  put("143", statLine(143, "sh", 'Z', 100, 52));
  put("999", "garbage");
  fs::create_directories(root + "/self");
  fs::create_directories(root + "/12");  // vanished between readdir and open: no stat
  std::ofstream(root + "/uptime") << "1.0 1.0\n";
  ProcTable table = readProcTable(root);
  std::map<pid_t, ProcEntry> byPid;
  for (const auto& e : table) byPid[e.pid] = e;
  EXPECT_EQ(byPid.size(), 3u);
  EXPECT_EQ(byPid[141].parent, 100);
  EXPECT_EQ(byPid[141].startTime, 50u);
  EXPECT_TRUE(byPid[143].exited());
  EXPECT_TRUE(readProcTable(root + "/missing").empty());
  fs::remove_all(root);
}

}  // namespace
}  // namespace bulkhead::os
