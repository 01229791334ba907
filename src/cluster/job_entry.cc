#include "cluster/job_entry.h"

#include <charconv>
#include <map>
#include <string_view>

namespace bulkhead::cluster {

namespace {

constexpr std::string_view kVersion = "1";

// Field name -> value; a repeated field is malformed (nullopt).
std::optional<std::map<std::string_view, std::string_view>> index(const Fields& fields) {
  std::map<std::string_view, std::string_view> byName;
  for (const auto& [name, value] : fields) {
    if (!byName.emplace(name, value).second) return std::nullopt;
  }
  return byName;
}

template <typename Int>
std::optional<Int> parseInt(std::string_view text) {
  Int value{};
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

struct Reader {
  const std::map<std::string_view, std::string_view>& fields;
  std::string error;

  std::optional<std::string_view> required(std::string_view name) {
    auto it = fields.find(name);
    if (it != fields.end()) return it->second;
    if (error.empty()) error = "missing field '" + std::string(name) + "'";
    return std::nullopt;
  }
  template <typename Int>
  std::optional<Int> integer(std::string_view name, bool optional) {
    auto it = fields.find(name);
    if (it == fields.end()) {
      if (!optional && error.empty()) error = "missing field '" + std::string(name) + "'";
      return std::nullopt;
    }
    auto value = parseInt<Int>(it->second);
    if (!value && error.empty()) error = "field '" + std::string(name) + "' is not an integer";
    return value;
  }
};

std::string versionProblem(const std::map<std::string_view, std::string_view>& fields) {
  auto it = fields.find("v");
  if (it == fields.end()) return "missing field 'v'";
  if (it->second != kVersion) return "unknown entry version '" + std::string(it->second) + "'";
  return {};
}

}  // namespace

std::string poolStreamKey(const std::string& pool) { return "bulkhead:pool:" + pool + ":jobs"; }
std::string outcomeStreamKey(const std::string& node) { return "bulkhead:outcomes:" + node; }
std::string quarantineKey(const std::string& pool) { return "bulkhead:quarantine:" + pool; }
std::string quarantineVersionKey(const std::string& pool) {
  return "bulkhead:quarantine:" + pool + ":version";
}

std::string jobRecordKey(std::uint64_t id) { return "bulkhead:job:" + std::to_string(id); }
std::string idempotencyRedisKey(const std::string& key) { return "bulkhead:idempotency:" + key; }

Fields encodeJob(const JobEntry& job) {
  Fields f{{"v", std::string(kVersion)},
           {"origin", job.origin},
           {"job", std::to_string(job.originId)},
           {"pool", job.pool},
           {"allow_poison", job.allowPoison ? "1" : "0"}};
  if (job.timeoutMs) f.emplace_back("timeout_ms", std::to_string(*job.timeoutMs));
  if (job.deadlineUnixMs) f.emplace_back("deadline_unix_ms", std::to_string(*job.deadlineUnixMs));
  if (!job.payloadKey.empty()) {
    f.emplace_back("payload_key", job.payloadKey);
  } else {
    f.emplace_back("payload", job.payload);  // last: the long one
  }
  return f;
}

Fields encodeOutcome(const OutcomeEntry& o) {
  return {{"v", std::string(kVersion)},
          {"job", std::to_string(o.originId)},
          {"node", o.node},
          {"runs", std::to_string(o.runs)},
          {"report", o.reportJson},
          {"result", o.result}};
}

std::variant<JobEntry, std::string> decodeJob(const Fields& fields) {
  auto byName = index(fields);
  if (!byName) return std::string("a field appears twice");
  if (std::string problem = versionProblem(*byName); !problem.empty()) return problem;
  Reader r{*byName, {}};
  JobEntry job;
  auto origin = r.required("origin");
  auto id = r.integer<std::uint64_t>("job", false);
  auto pool = r.required("pool");
  auto inKey = byName->find("payload_key");
  const bool keyed = inKey != byName->end();
  std::optional<std::string_view> payload;
  if (keyed) {
    if (byName->count("payload")) return std::string("both 'payload' and 'payload_key'");
    if (inKey->second.empty()) return std::string("empty payload_key");
    payload = std::string_view();
  } else {
    payload = r.required("payload");
  }
  auto allow = r.required("allow_poison");
  job.timeoutMs = r.integer<std::int64_t>("timeout_ms", true);
  job.deadlineUnixMs = r.integer<std::int64_t>("deadline_unix_ms", true);
  if (!r.error.empty()) return r.error;
  if (origin->empty() || pool->empty()) return std::string("empty origin or pool");
  if (*allow != "0" && *allow != "1") return std::string("field 'allow_poison' is not 0 or 1");
  if (job.timeoutMs && *job.timeoutMs <= 0) return std::string("field 'timeout_ms' is not > 0");
  job.origin = *origin;
  job.originId = *id;
  job.pool = *pool;
  job.payload = *payload;
  if (keyed) job.payloadKey = inKey->second;
  job.allowPoison = *allow == "1";
  return job;
}

std::variant<OutcomeEntry, std::string> decodeOutcome(const Fields& fields) {
  auto byName = index(fields);
  if (!byName) return std::string("a field appears twice");
  if (std::string problem = versionProblem(*byName); !problem.empty()) return problem;
  Reader r{*byName, {}};
  OutcomeEntry o;
  auto id = r.integer<std::uint64_t>("job", false);
  auto node = r.required("node");
  auto runs = r.integer<std::uint64_t>("runs", false);
  auto report = r.required("report");
  auto result = r.required("result");
  if (!r.error.empty()) return r.error;
  if (*runs == 0) return std::string("field 'runs' is 0");
  o.originId = *id;
  o.node = *node;
  o.runs = *runs;
  o.reportJson = *report;
  o.result = *result;
  return o;
}

Fields encodeCancel(const CancelEntry& c) {
  return {{"v", std::string(kVersion)}, {"cancel", std::to_string(c.originId)}, {"from", c.from}};
}

std::variant<OutcomeEntry, CancelEntry, std::string> decodeOutcomeStream(const Fields& fields) {
  auto byName = index(fields);
  if (!byName) return std::string("a field appears twice");
  if (!byName->count("cancel")) {
    auto outcome = decodeOutcome(fields);
    if (auto* o = std::get_if<OutcomeEntry>(&outcome)) return std::move(*o);
    return std::get<std::string>(outcome);
  }
  if (std::string problem = versionProblem(*byName); !problem.empty()) return problem;
  Reader r{*byName, {}};
  auto id = r.integer<std::uint64_t>("cancel", false);
  auto from = r.required("from");
  if (!r.error.empty()) return r.error;
  return CancelEntry{*id, std::string(*from)};
}

Fields encodeRecord(const RecordEntry& record) {
  Fields f{{"v", std::string(kVersion)},
           {"node", record.node},
           {"pool", record.pool},
           {"state", record.finished ? "finished" : "queued"}};
  if (!record.finished) return f;
  if (record.runs) f.emplace_back("runs", std::to_string(*record.runs));
  f.emplace_back("report", record.reportJson);
  f.emplace_back("result", record.result);
  return f;
}

std::variant<RecordEntry, std::string> decodeRecord(const Fields& fields) {
  auto byName = index(fields);
  if (!byName) return std::string("a field appears twice");
  if (std::string problem = versionProblem(*byName); !problem.empty()) return problem;
  Reader r{*byName, {}};
  RecordEntry record;
  auto node = r.required("node");
  auto pool = r.required("pool");
  auto state = r.required("state");
  if (!r.error.empty()) return r.error;
  if (*state != "queued" && *state != "finished") {
    return "unknown state '" + std::string(*state) + "'";
  }
  record.node = *node;
  record.pool = *pool;
  record.finished = *state == "finished";
  if (!record.finished) return record;
  record.runs = r.integer<std::int64_t>("runs", true);
  auto report = r.required("report");
  auto result = r.required("result");
  if (!r.error.empty()) return r.error;
  record.reportJson = *report;
  record.result = *result;
  return record;
}

}  // namespace bulkhead::cluster
