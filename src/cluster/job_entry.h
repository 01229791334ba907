#pragma once
// What travels through Redis for one job handed between nodes (docs/cluster.md): the job as an
// entry of its pool's stream, and its outcome (or a request to cancel it) as an entry of the
// origin node's outcome stream; and an async job's record, a hash other nodes read to answer
// GET /v1/jobs/{id}. All are flat lists of field/value pairs, as Redis keeps them.
//
// Owns: the field names, their encoding and the checks on reading them back. Entries come from
// any process that can write to the Redis server, so decoding refuses anything malformed with a
// reason instead of trusting it. It may not talk to Redis (job_queue.h does) or decide anything
// about the job (cluster_runner.h does).

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace bulkhead::cluster {

using Fields = std::vector<std::pair<std::string, std::string>>;

// The keys: one stream per pool, one outcome stream per node; one consumer group on each.
std::string poolStreamKey(const std::string& pool);
std::string outcomeStreamKey(const std::string& node);
// A pool's cluster quarantine (a hash: fingerprint -> report JSON) and its version (a counter
// raised with every change, so that nodes read the hash again only when it changed).
std::string quarantineKey(const std::string& pool);
std::string quarantineVersionKey(const std::string& pool);
// An async job's record (a hash), and an Idempotency-Key's holder (a string: the job id).
std::string jobRecordKey(std::uint64_t id);
std::string idempotencyRedisKey(const std::string& key);
inline constexpr const char* kConsumerGroup = "bulkhead";
// A node's outcome stream is trimmed beyond about this many entries (XADD MAXLEN ~).
inline constexpr const char* kOutcomeStreamLength = "100000";

struct JobEntry {
  std::string origin;          // the node whose caller waits for the outcome
  std::uint64_t originId = 0;  // the job's id there
  std::string pool;
  std::string payload;
  // Set for a payload too large for the entry: it lives in this key (with a TTL) instead, and
  // `payload` is filled from it when a node takes the job.
  std::string payloadKey;
  std::optional<std::int64_t> timeoutMs;       // one attempt's run limit, as the caller set it
  std::optional<std::int64_t> deadlineUnixMs;  // the caller's whole budget ends then
  bool allowPoison = false;
};

struct OutcomeEntry {
  std::uint64_t originId = 0;
  std::string node;        // the node that ran it (or ended it without running it)
  std::uint64_t runs = 1;  // times the cluster handed the job to a node, this one included
  std::string reportJson;  // jobs::reportToJson of the report
  std::string result;      // the result bytes of an ok job
};

// Another node asks the origin to cancel one of its jobs (DELETE /v1/jobs/{id} there).
struct CancelEntry {
  std::uint64_t originId = 0;
  std::string from;  // the node that asked
};

// An async job as the origin records it for the other nodes.
struct RecordEntry {
  std::string node;  // the origin
  std::string pool;
  bool finished = false;
  std::optional<std::int64_t> runs;  // finished: submissions, as the origin's journal counted
  std::string reportJson;            // finished
  std::string result;                // finished: the result bytes of an ok job
};

Fields encodeJob(const JobEntry& job);
Fields encodeOutcome(const OutcomeEntry& outcome);
Fields encodeCancel(const CancelEntry& cancel);
Fields encodeRecord(const RecordEntry& record);
// The entry, or why it is not one (a missing or malformed field).
std::variant<JobEntry, std::string> decodeJob(const Fields& fields);
std::variant<OutcomeEntry, std::string> decodeOutcome(const Fields& fields);
// An entry of a node's outcome stream: an outcome, or a request to cancel a job.
std::variant<OutcomeEntry, CancelEntry, std::string> decodeOutcomeStream(const Fields& fields);
std::variant<RecordEntry, std::string> decodeRecord(const Fields& fields);

}  // namespace bulkhead::cluster
