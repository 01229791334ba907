// Loading bulkhead.toml: the [server] and [pool.NAME] tables into a Config, every key checked
// (type, range, unknown keys) with errors that name file, line and key. Typed reads of one key are
// key_reader.h's; units (durations, sizes) units.h's; the list of known keys known_keys.h's.

#include "config/config.h"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "config/key_reader.h"  // toml++ with exceptions
#include "config/known_keys.h"
#include "config/redis_address.h"
#include "config/units.h"

namespace bulkhead::config {

namespace {

class Loader : KeyReader {
 public:
  using KeyReader::KeyReader;

  // `profile` (a name or a list), `threads`, `gpus`, `gpus_per_worker`, `inherit_env`.
  void readEnvironmentKeys(const toml::table& t, int line, const std::string& p, PoolConfig& c) {
    static const std::set<std::string> kProfiles = {"torch", "tensorflow", "onnxruntime",
                                                    "cpu-only"};
    if (const toml::node* n = t.get("profile")) {
      std::vector<const toml::node*> items;
      if (const toml::array* a = n->as_array()) {
        for (const toml::node& item : *a) items.push_back(&item);
      } else {
        items.push_back(n);
      }
      for (const toml::node* item : items) {
        auto name = item->value<std::string>();
        if (!item->is_string() || !kProfiles.count(*name)) {
          error(item, line, p + "profile",
                "expected \"torch\", \"tensorflow\", \"onnxruntime\" or \"cpu-only\" (or a "
                "list of them), got " +
                    describeNode(*item));
          continue;
        }
        c.profiles.push_back(*name);
      }
    }
    int64_t v = c.threads;
    readInt(t, line, p, "threads", 0, 1024, v);
    c.threads = static_cast<int>(v);
    v = c.gpusPerWorker;
    readInt(t, line, p, "gpus_per_worker", 1, 64, v);
    c.gpusPerWorker = static_cast<int>(v);
    if (const toml::node* n = t.get("gpus")) {
      const toml::array* a = n->as_array();
      if (!a) error(n, line, p + "gpus", "expected a list of GPU ids such as [0, 1]");
      for (std::size_t i = 0; a && i < a->size(); ++i) {
        const toml::node& id = *a->get(i);
        if (!id.is_integer() || *id.value<int64_t>() < 0 || *id.value<int64_t>() > 1023) {
          error(&id, line, p + "gpus",
                "expected GPU ids (integers 0-1023), got " + describeNode(id));
        } else {
          c.gpus.push_back(static_cast<int>(*id.value<int64_t>()));
        }
      }
    }
    if (const toml::node* n = t.get("inherit_env")) {
      const toml::array* a = n->as_array();
      if (!a) error(n, line, p + "inherit_env", "expected a list of variable names");
      for (std::size_t i = 0; a && i < a->size(); ++i) {
        const toml::node& name = *a->get(i);
        if (!name.is_string()) {
          error(&name, line, p + "inherit_env", "expected names such as \"HF_HOME\" or \"AWS_*\"");
        } else {
          c.inheritEnv.push_back(*name.value<std::string>());
        }
      }
    }
  }

  ServerConfig loadServer(const toml::table& t, int line) {
    ServerConfig s;
    const std::string p = "server.";
    rejectUnknown(t, line, p, knownKeysOf("server"));
    s.journal = (baseDir_ / "bulkhead-journal.db").string();
    if (const toml::node* n = t.get("journal")) {
      if (auto j = n->value<std::string>(); j && n->is_string()) {
        s.journal = j->empty() ? "" : (baseDir_ / *j).lexically_normal().string();
      } else {
        error(n, line, p + "journal", "expected a file path, or \"\" to turn the journal off");
      }
    }
    int64_t keep = static_cast<int64_t>(s.journalKeep);
    readInt(t, line, p, "journal_keep", 0, 100'000'000, keep);
    s.journalKeep = static_cast<std::uint64_t>(keep);
    readString(t, line, p, "nvml_library", s.nvmlLibrary);
    readString(t, line, p, "listen", s.listen);
    if (s.listen.rfind("unix:", 0) != 0) {
      auto colon = s.listen.rfind(':');
      bool ok = colon != std::string::npos && colon > 0 && colon + 1 < s.listen.size();
      if (ok) {
        for (std::size_t i = colon + 1; i < s.listen.size(); ++i)
          ok &= std::isdigit(s.listen[i]) != 0;
        // At most 5 digits before converting: a longer number is out of range, not an exception.
        ok = ok && s.listen.size() - colon - 1 <= 5 &&
             std::stol(s.listen.substr(colon + 1)) <= 65535;
      }
      if (!ok) {
        error(t.get("listen"), line, p + "listen",
              "expected \"HOST:PORT\" or \"unix:/path/to.sock\", got \"" + s.listen + "\"");
      }
    } else if (s.listen.size() <= 5) {
      error(t.get("listen"), line, p + "listen", "expected a socket path after \"unix:\"");
    }
    readDuration(t, line, p, "shutdown_timeout", std::chrono::milliseconds(0), s.shutdownTimeout);
    readSize(t, line, p, "max_request_body", 1, s.maxRequestBody);
    readSize(t, line, p, "memfd_threshold", 0, s.memfdThreshold);
    readSize(t, line, p, "memfd_result_threshold", 0, s.memfdResultThreshold);
    readSize(t, line, p, "payload_file_cache", 0, s.payloadFileCache);
    int64_t connections = static_cast<int64_t>(s.maxConnections);
    readInt(t, line, p, "max_connections", 1, 1'000'000, connections);
    s.maxConnections = static_cast<std::uint64_t>(connections);
    readDuration(t, line, p, "request_timeout", std::chrono::milliseconds(1), s.requestTimeout);
    readDuration(t, line, p, "idle_timeout", std::chrono::milliseconds(1), s.idleTimeout);
    return s;
  }

  ClusterConfig loadCluster(const toml::table& t, int line) {
    ClusterConfig c;
    c.line = line;
    const std::string p = "cluster.";
    rejectUnknown(t, line, p, knownKeysOf("cluster"));
    if (!t.get("redis")) {
      error(nullptr, line, p + "redis",
            "missing: expected \"redis://HOST:PORT/DB\" or \"unix:/path\"");
    }
    readString(t, line, p, "redis", c.redis);
    if (t.get("redis") && t.get("redis")->is_string()) {
      if (auto problem = redisAddressProblem(c.redis))
        error(t.get("redis"), line, p + "redis", *problem);
    }
    readString(t, line, p, "node", c.node);
    if (c.node.find_first_not_of(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
        std::string::npos) {
      error(t.get("node"), line, p + "node",
            "node names may use letters, digits, '_', '.' and '-' only");
    }
    readString(t, line, p, "password_env", c.passwordEnv);
    readDuration(t, line, p, "claim_after", std::chrono::milliseconds(1), c.claimAfter);
    readDuration(t, line, p, "heartbeat", std::chrono::milliseconds(10), c.heartbeat);
    // A node refreshes the jobs it runs every heartbeat: claim_after must outlast a few of them,
    // or live nodes' long jobs would be taken over as if their node had died.
    if (c.claimAfter < 3 * c.heartbeat) {
      error(t.get("claim_after"), line, p + "claim_after",
            "must be at least three heartbeats (heartbeat is " +
                std::to_string(
                    std::chrono::duration_cast<std::chrono::milliseconds>(c.heartbeat).count()) +
                "ms)");
    }
    return c;
  }

  PoolConfig loadPool(const std::string& name, const toml::table& t, int line) {
    PoolConfig c;
    c.name = name;
    c.line = line;
    const std::string p = "pool." + name + ".";
    rejectUnknown(t, line, p, knownKeysOf("pool"));
    if (!t.get("handler"))
      error(nullptr, line, p + "handler", "missing: expected \"module:function\"");
    readString(t, line, p, "handler", c.handler);
    if (!c.handler.empty() || t.get("handler")) checkEntryPoint(t, line, p, "handler", c.handler);
    readString(t, line, p, "preload", c.preload);
    if (t.get("preload") && t.get("preload")->is_string()) {
      checkEntryPoint(t, line, p, "preload", c.preload);
    }
    readString(t, line, p, "init", c.init);
    if (t.get("init") && t.get("init")->is_string()) checkEntryPoint(t, line, p, "init", c.init);
    c.zygote = readChoice(t, line, p, "mode", "spawn", "zygote");
    c.zygoteFallbackToSpawn = readChoice(t, line, p, "zygote_fallback", "fail", "spawn");
    if (t.get("zygote_fallback") && !c.zygote) {
      error(t.get("zygote_fallback"), line, p + "zygote_fallback",
            "only means something with mode = \"zygote\"");
    }
    readString(t, line, p, "python", c.python);
    if (t.get("python") && !c.python.empty() && c.python[0] != '/') {
      error(t.get("python"), line, p + "python",
            "expected an absolute path to a Python interpreter, got \"" + c.python + "\"");
    }
    if (const toml::node* n = t.get("python_path")) {
      if (const toml::array* a = n->as_array()) {
        for (const toml::node& entry : *a) {
          if (auto s = entry.value<std::string>(); s && entry.is_string()) {
            std::filesystem::path dir(*s);
            if (dir.is_relative()) dir = baseDir_ / dir;
            c.pythonPath.push_back(dir.lexically_normal().string());
          } else {
            error(&entry, line, p + "python_path",
                  "expected an array of directory strings, found " + describeNode(entry));
          }
        }
      } else {
        error(n, line, p + "python_path", "expected an array of strings, got " + describeNode(*n));
      }
    }
    int64_t v = c.workers;
    readInt(t, line, p, "workers", 1, 4096, v);
    c.workers = static_cast<int>(v);
    v = c.standby;
    readInt(t, line, p, "standby", 0, 64, v);
    c.standby = static_cast<int>(v);
    v = static_cast<int64_t>(c.queueLimit);
    readInt(t, line, p, "queue_limit", 0, 10'000'000, v);
    c.queueLimit = static_cast<std::uint64_t>(v);
    v = c.retries;
    readInt(t, line, p, "retries", 0, 100, v);
    c.retries = static_cast<int>(v);
    v = static_cast<int64_t>(c.maxJobs);
    readInt(t, line, p, "max_jobs", 0, std::numeric_limits<int64_t>::max(), v);
    c.maxJobs = static_cast<std::uint64_t>(v);
    readTimeout(t, line, p, "job_timeout", std::chrono::milliseconds(1), c.jobTimeout);
    readTimeout(t, line, p, "queue_timeout", std::chrono::milliseconds(1), c.queueTimeout);
    if (t.get("async_queue_timeout")) {
      c.asyncQueueTimeout = std::chrono::nanoseconds{0};
      readDuration(t, line, p, "async_queue_timeout", std::chrono::milliseconds(1),
                   *c.asyncQueueTimeout);
    }
    readDuration(t, line, p, "startup_timeout", std::chrono::milliseconds(1), c.startupTimeout);
    readDuration(t, line, p, "kill_grace", std::chrono::milliseconds(0), c.killGrace);
    readSize(t, line, p, "max_payload", 1, c.maxPayload);
    readDuration(t, line, p, "sample_interval", std::chrono::milliseconds(50), c.sampleInterval);
    readSize(t, line, p, "memory_limit", 16ull << 20, c.memoryLimit);
    readSize(t, line, p, "max_rss", 1, c.maxRss);
    readSize(t, line, p, "max_gpu_memory", 1, c.maxGpuMemory);
    readSize(t, line, p, "gpu_memory_limit", 1, c.gpuMemoryLimit);
    v = static_cast<int64_t>(c.pidsLimit);
    readInt(t, line, p, "pids_limit", 0, 4'194'304, v);
    c.pidsLimit = static_cast<std::uint64_t>(v);
    v = c.maxThreads;
    readInt(t, line, p, "max_threads", 0, 4'194'304, v);
    c.maxThreads = static_cast<int>(v);
    v = c.maxMaps;
    readInt(t, line, p, "max_maps", 0, 65530, v);
    c.maxMaps = static_cast<int>(v);
    v = c.maxFds;
    readInt(t, line, p, "max_fds", 0, 1'048'576, v);
    c.maxFds = static_cast<int>(v);
    readDuration(t, line, p, "max_age", std::chrono::milliseconds(0), c.maxAge);
    readDuration(t, line, p, "hang_after", std::chrono::milliseconds(0), c.hangAfter);
    readDuration(t, line, p, "prefetch_below", std::chrono::milliseconds(0), c.prefetchBelow);
    v = c.poisonAfter;
    readInt(t, line, p, "poison_after", 0, 100, v);
    c.poisonAfter = static_cast<int>(v);
    readString(t, line, p, "fallback", c.fallback);
    readEnvironmentKeys(t, line, p, c);
    if (c.standby > 0 && !c.gpus.empty()) {
      // A worker's GPUs are fixed by its slot when it starts; a promoted standby would keep its
      // own.
      error(t.get("standby"), line, p + "standby",
            "cannot be combined with gpus: a worker's GPUs are pinned when it starts");
    }
    if (const toml::node* n = t.get("breaker")) {
      if (const toml::table* b = n->as_table()) {
        const std::string bp = p + "breaker.";
        rejectUnknown(*b, line, bp, knownKeysOf("pool.breaker"));
        v = 5;
        readInt(*b, line, bp, "failures", 1, 1'000'000, v);
        c.breakerFailures = static_cast<int>(v);
        readDuration(*b, line, bp, "window", std::chrono::milliseconds(1), c.breakerWindow);
        readDuration(*b, line, bp, "cooldown", std::chrono::milliseconds(1), c.breakerCooldown);
      } else {
        error(n, line, p + "breaker",
              "expected a table such as { failures = 5, window = \"30s\", cooldown = \"10s\" }, "
              "got " +
                  describeNode(*n));
      }
    }
    if (const toml::node* n = t.get("max_jobs_strict")) {
      if (auto b = n->value<bool>(); b && n->is_boolean()) {
        c.maxJobsStrict = *b;
      } else {
        error(n, line, p + "max_jobs_strict", "expected true or false, got " + describeNode(*n));
      }
    }
    if (const toml::node* n = t.get("trend")) {
      if (auto b = n->value<bool>(); b && n->is_boolean())
        c.trend = *b;
      else
        error(n, line, p + "trend", "expected true or false, got " + describeNode(*n));
    }
    if (c.maxPayload > 0xFFFFFFFFull) {
      error(t.get("max_payload"), line, p + "max_payload",
            "expected at most 4GiB - 1 (frame limit)");
    }
    if (const toml::node* n = t.get("env")) {
      if (const toml::table* e = n->as_table()) {
        for (auto&& [k, val] : *e) {
          if (auto s = val.value<std::string>(); s && val.is_string()) {
            if (k.str().find('=') != std::string_view::npos || k.str().empty()) {
              error(&val, line, p + "env." + std::string(k.str()),
                    "variable names can't contain '='");
            }
            c.env[std::string(k.str())] = *s;
          } else {
            error(&val, line, p + "env." + std::string(k.str()),
                  "expected a string value, got " + describeNode(val));
          }
        }
      } else {
        error(n, line, p + "env",
              "expected a table such as { KEY = \"value\" }, got " + describeNode(*n));
      }
    }
    return c;
  }

  std::optional<Config> load(const toml::table& root) {
    Config config;
    config.path = path_;
    for (auto&& [k, v] : root) {
      std::string key(k.str());
      if (key != "server" && key != "pool" && key != "cluster") {
        error(&v, 0, key, "unknown top-level key (expected [server], [pool.NAME] or [cluster])");
      }
    }
    config.server.journal = (baseDir_ / "bulkhead-journal.db").string();
    if (const toml::node* n = root.get("server")) {
      if (const toml::table* t = n->as_table()) {
        config.server = loadServer(*t, static_cast<int>(n->source().begin.line));
      } else {
        error(n, 0, "server", "expected a table [server]");
      }
    }
    if (const toml::node* n = root.get("cluster")) {
      if (const toml::table* t = n->as_table()) {
        config.cluster = loadCluster(*t, static_cast<int>(n->source().begin.line));
      } else {
        error(n, 0, "cluster", "expected a table [cluster]");
      }
    }
    if (const toml::node* n = root.get("pool")) {
      if (const toml::table* pools = n->as_table()) {
        for (auto&& [name, v] : *pools) {
          std::string poolName(name.str());
          if (poolName.empty() || poolName.find_first_not_of("abcdefghijklmnopqrstuvwxyz"
                                                             "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                             "0123456789_-") != std::string::npos) {
            error(&v, 0, "pool." + poolName,
                  "pool names may use letters, digits, '_' and '-' only");
            continue;
          }
          if (const toml::table* t = v.as_table()) {
            config.pools.push_back(loadPool(poolName, *t, static_cast<int>(v.source().begin.line)));
          } else {
            error(&v, 0, "pool." + poolName, "expected a table [pool." + poolName + "]");
          }
        }
      } else {
        error(n, 0, "pool", "expected tables [pool.NAME]");
      }
    }
    for (auto& pool : config.pools) {
      pool.memfdThreshold = config.server.memfdThreshold;
      pool.memfdResultThreshold = config.server.memfdResultThreshold;
    }
    for (const auto& pool : config.pools) {
      if (pool.fallback.empty()) continue;
      bool known = false;
      for (const auto& other : config.pools) known = known || other.name == pool.fallback;
      if (!known || pool.fallback == pool.name) {
        error(nullptr, pool.line, "pool." + pool.name + ".fallback",
              "expected the name of another pool, got \"" + pool.fallback + "\"");
      }
    }
    if (config.pools.empty() && errors_.empty()) {
      error(nullptr, 0, "pool", "no pools: expected at least one [pool.NAME] table");
    }
    if (!errors_.empty()) return std::nullopt;
    return config;
  }

  void setBaseDir(std::filesystem::path dir) { baseDir_ = std::move(dir); }

 private:
  std::filesystem::path baseDir_;
};

}  // namespace

std::string ConfigError::describe() const {
  std::ostringstream out;
  out << file;
  if (line > 0) out << ":" << line;
  out << ": ";
  if (!key.empty()) out << key << ": ";
  out << message;
  return out.str();
}

LoadResult loadConfigText(const std::string& text, const std::string& path) {
  LoadResult result;
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    result.errors.push_back({path, static_cast<int>(e.source().begin.line), "",
                             "invalid TOML: " + std::string(e.description())});
    return result;
  }
  Loader loader(path, result.errors);
  std::filesystem::path base = std::filesystem::absolute(std::filesystem::path(path)).parent_path();
  loader.setBaseDir(base);
  result.config = loader.load(root);
  return result;
}

LoadResult loadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    LoadResult r;
    r.errors.push_back({path, 0, "", "cannot read the file: " + std::string(std::strerror(errno))});
    return r;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return loadConfigText(buffer.str(), path);
}

}  // namespace bulkhead::config
