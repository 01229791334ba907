#include "cluster/cluster_runner.h"

#include <nlohmann/json.hpp>

#include "core/quarantine.h"
#include "jobs/report_json.h"
#include "os/memfd.h"

namespace bulkhead::cluster {

namespace {

core::JobReport endedHere(core::JobId id, std::string_view pool, core::Outcome outcome,
                          std::string detail) {
  core::JobReport r;
  r.jobId = id;
  r.pool = std::string(pool);
  r.outcome = outcome;
  r.detail = std::move(detail);
  return r;
}

std::int64_t millisecondsOf(core::Duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

}  // namespace

Directory directoryFrom(const std::vector<std::string>& announcements, const std::string& self) {
  Directory out;
  for (const std::string& text : announcements) {
    const nlohmann::json node = nlohmann::json::parse(text, nullptr, false);
    if (!node.is_object() || !node.contains("pools") || !node["pools"].is_array()) continue;
    if (node.value("node", "") == self || node.value("shutting_down", false)) continue;
    for (const nlohmann::json& pool : node["pools"]) {
      if (!pool.is_object() || !pool.contains("name") || !pool["name"].is_string()) continue;
      std::uint64_t limit = UINT64_MAX;
      if (pool.contains("max_payload") && pool["max_payload"].is_number_unsigned()) {
        limit = pool["max_payload"].get<std::uint64_t>();
      }
      RemotePool& entry = out[pool["name"].get<std::string>()];
      entry.maxPayload = entry.nodes == 0 ? limit : std::min(entry.maxPayload, limit);
      ++entry.nodes;
    }
  }
  return out;
}

ClusterRunner::ClusterRunner(jobs::PoolRunner& local, jobs::Timers& timers, JobTransport& transport,
                             std::string node, LocalPools pools,
                             std::function<std::int64_t()> unixMsNow)
    : local_(local),
      timers_(timers),
      transport_(transport),
      node_(std::move(node)),
      pools_(std::move(pools)),
      unixMsNow_(std::move(unixMsNow)) {}

ClusterRunner::~ClusterRunner() {
  for (auto& [id, sent] : sent_) {
    if (sent.deadline) timers_.cancelTimer(*sent.deadline);
  }
}

TransportHandlers ClusterRunner::handlers() {
  return {[this](Delivery d) { run(std::move(d)); },
          [this](OutcomeEntry o) { outcomeArrived(std::move(o)); },
          [this](std::uint64_t id, std::string why) {
            auto it = sent_.find(id);
            if (it == sent_.end()) return;
            answer(id, endedHere(id, it->second.pool, core::Outcome::kUnavailable,
                                 "the cluster could not take the job: " + why));
          },
          {}};  // cancel requests are the jobs service's (cli/cluster_node.cc)
}

void ClusterRunner::setDirectory(const Directory& announced) {
  const core::Time now = timers_.now();
  for (const auto& [pool, remote] : announced) {
    RemotePool& kept = directory_[pool];
    kept = remote;
    kept.lastSeen = now;
  }
  std::erase_if(directory_, [&](const auto& entry) {
    return !announced.count(entry.first) && now - entry.second.lastSeen >= pools_.forgetAfter;
  });
  std::vector<core::JobId> orphaned;
  for (const auto& [id, sent] : sent_) {
    if (!directory_.count(sent.pool) && !local_.hasPool(sent.pool)) orphaned.push_back(id);
  }
  for (core::JobId id : orphaned) {
    const std::string pool = sent_.at(id).pool;
    answer(id, endedHere(id, pool, core::Outcome::kUnavailable,
                         "no live node has had pool '" + pool +
                             "' for claim_after; the job stays queued in the cluster and a node "
                             "that comes back may still run it"));
  }
}

bool ClusterRunner::hasPool(std::string_view pool) const {
  return local_.hasPool(pool) || directory_.find(pool) != directory_.end();
}

std::uint64_t ClusterRunner::maxPayload(std::string_view pool) const {
  if (local_.hasPool(pool)) return local_.maxPayload(pool);
  auto it = directory_.find(pool);
  return it == directory_.end() ? 0 : it->second.maxPayload;
}

std::optional<std::string> ClusterRunner::unreachable(std::string_view pool) const {
  if (local_.hasPool(pool) || transport_.connected()) return std::nullopt;
  return std::string("Redis is not reachable");
}

// Here when a worker of the pool is free now (no Redis round trip), or when no other node has
// the pool, or Redis is away (the local queue holds it as it always did); else through the
// pool's stream, which this node reads too as soon as one of its workers frees.
bool ClusterRunner::runsHere(std::string_view pool) const {
  if (!local_.hasPool(pool)) return false;
  if (pools_.freeWorkers(pool) > 0) return true;
  return directory_.find(pool) == directory_.end() || !transport_.connected();
}

// The poison answer for a payload another node quarantined (none when it is not, or the caller
// allows it). The fingerprint is computed only when the pool's cluster quarantine has entries.
std::optional<core::JobReport> ClusterRunner::refusedAsPoison(
    core::JobId id, std::string_view pool, bool allowPoison,
    const std::function<std::string()>& fingerprintOf) const {
  if (allowPoison) return std::nullopt;
  auto entries = quarantine_.find(std::string(pool));
  if (entries == quarantine_.end() || entries->second.empty()) return std::nullopt;
  const std::string fingerprint = fingerprintOf();
  auto entry = entries->second.find(fingerprint);
  if (entry == entries->second.end()) return std::nullopt;
  auto condemned = jobs::reportFromJson(entry->second);
  core::JobReport r =
      endedHere(id, pool, core::Outcome::kPoison,
                "payload quarantined on node '" + (condemned ? condemned->node : std::string("?")) +
                    "': it crashed the workers of job " +
                    (condemned ? std::to_string(condemned->jobId) : std::string("?")) +
                    " there (send X-Bulkhead-Allow-Poison: 1 to run it anyway)");
  if (condemned) r.attempts = condemned->attempts;  // the evidence that condemned it
  r.fingerprint = fingerprint;
  r.node = condemned ? condemned->node : std::string();
  return r;
}

// A job that ended here got its payload quarantined: every node is told, and this one refuses
// it from now on without waiting for the next heartbeat.
void ClusterRunner::noteQuarantine(const core::JobReport& report) {
  if (!report.quarantined || report.fingerprint.empty()) return;
  core::JobReport named = report;
  named.node = node_;
  named.result.reset();
  Quarantined record{
      report.pool, report.fingerprint,
      jobs::reportToJson(named).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)};
  quarantine_[record.pool][record.fingerprint] = record.reportJson;
  recordedHere_[record.pool][record.fingerprint] = record.reportJson;
  transport_.quarantine(std::move(record));
}

void ClusterRunner::setQuarantine(QuarantineView quarantine) {
  for (auto pool = recordedHere_.begin(); pool != recordedHere_.end();) {
    auto& read = quarantine[pool->first];
    std::erase_if(pool->second, [&](const auto& entry) {
      return !read.emplace(entry.first, entry.second).second;  // already there: read back
    });
    pool = pool->second.empty() ? recordedHere_.erase(pool) : std::next(pool);
  }
  quarantine_ = std::move(quarantine);
  quarantineRead_ = true;
}

std::optional<jobs::RunnerRefusal> ClusterRunner::submitWithId(core::JobId id,
                                                               std::string_view pool,
                                                               core::Payload payload,
                                                               const jobs::RunOptions& options,
                                                               Reply reply) {
  if (hasPool(pool)) {
    if (auto poison = refusedAsPoison(id, pool, options.allowPoison,
                                      [&] { return core::payloadFingerprint(*payload); })) {
      reply(*poison);
      return std::nullopt;
    }
  }
  if (runsHere(pool)) {
    auto refused = local_.submitWithId(
        id, pool, std::move(payload), options,
        [this, reply = std::move(reply), pool = std::string(pool)](const core::JobReport& report) {
          core::JobReport named = report;
          named.node = node_;
          noteQuarantine(named);
          reply(named);
          tend(pool);
        });
    tend(pool);
    return refused;
  }
  if (!hasPool(pool)) return jobs::RunnerRefusal::kUnknownPool;
  if (!transport_.connected()) return jobs::RunnerRefusal::kClusterUnavailable;
  if (payload->size() > maxPayload(pool)) return jobs::RunnerRefusal::kPayloadTooLarge;
  if (sent_.count(id)) return jobs::RunnerRefusal::kDuplicateId;
  send(id, pool, payload, options, std::move(reply));
  return std::nullopt;
}

void ClusterRunner::send(core::JobId id, std::string_view pool, const core::Payload& payload,
                         const jobs::RunOptions& options, Reply reply) {
  JobEntry entry;
  entry.origin = node_;
  entry.originId = id;
  entry.pool = std::string(pool);
  entry.allowPoison = options.allowPoison;
  if (options.timeout)
    entry.timeoutMs = std::max<std::int64_t>(1, millisecondsOf(*options.timeout));
  Sent sent{std::string(pool), std::move(reply), std::nullopt};
  if (options.deadline) {
    const core::Duration left = *options.deadline - timers_.now();
    entry.deadlineUnixMs = unixMsNow_() + millisecondsOf(left);
    // The caller hears at its deadline even when no node took the job by then.
    sent.deadline = timers_.startTimer(left, [this, id] {
      auto it = sent_.find(id);
      if (it == sent_.end()) return;
      it->second.deadline.reset();
      core::JobReport r = endedHere(id, it->second.pool, core::Outcome::kTimedOut,
                                    "no node answered within the job's deadline");
      r.stage = "queued";
      answer(id, std::move(r));
    });
  }
  auto bytes = os::blobBytes(*payload);  // a memfd payload is read for the stream
  if (!bytes) {
    if (sent.deadline) timers_.cancelTimer(*sent.deadline);
    sent_.emplace(id, std::move(sent));
    answer(id, endedHere(id, pool, core::Outcome::kUnavailable, "cannot read the payload"));
    return;
  }
  entry.payload = std::move(*bytes);
  sent_.emplace(id, std::move(sent));
  ++counters_.sent;
  transport_.enqueue(std::move(entry));
}

void ClusterRunner::answer(core::JobId id, core::JobReport report) {
  auto it = sent_.find(id);
  if (it == sent_.end()) return;
  Sent sent = std::move(it->second);
  sent_.erase(it);
  if (sent.deadline) timers_.cancelTimer(*sent.deadline);
  report.jobId = id;
  sent.reply(report);
}

void ClusterRunner::outcomeArrived(OutcomeEntry o) {
  auto it = sent_.find(o.originId);
  if (it == sent_.end()) return;  // answered already (deadline, cancel) or a second run's
  auto report = jobs::reportFromJson(o.reportJson, std::move(o.result));
  if (!report) {
    answer(o.originId, endedHere(o.originId, it->second.pool, core::Outcome::kUnavailable,
                                 "node '" + o.node + "' sent an outcome that is not a report"));
    return;
  }
  report->node = o.node;
  report->runs = o.runs;
  answer(o.originId, std::move(*report));
}

void ClusterRunner::abandonWaiting() {
  while (!sent_.empty()) {
    const core::JobId id = sent_.begin()->first;
    answer(id, endedHere(id, sent_.begin()->second.pool, core::Outcome::kUnavailable,
                         "node '" + node_ +
                             "' stopped before the job's outcome came back (another node may "
                             "still run it)"));
  }
}

void ClusterRunner::cancel(core::JobId id) {
  if (!sent_.count(id)) return local_.cancel(id);
  // Answered here at once; a node already running it finishes it, and its outcome is dropped.
  answer(id, endedHere(id, sent_[id].pool, core::Outcome::kCancelled,
                       "cancelled by the caller (a node already running it finishes it)"));
}

std::optional<std::string> ClusterRunner::jobState(core::JobId id) const {
  if (sent_.count(id)) return std::string("queued");
  return local_.jobState(id);
}

// ---- jobs taken from the streams ----

void ClusterRunner::run(Delivery d) {
  const JobEntry& job = d.job;
  ++counters_.taken;
  if (d.runs > 1) ++counters_.takenOver;
  auto poison = pools_.poisonAfter.find(job.pool);
  const int poisonAfter = poison == pools_.poisonAfter.end() ? 0 : poison->second;
  if (d.payloadLost) {
    finish(d, endedHere(job.originId, job.pool, core::Outcome::kUnavailable,
                        "its payload (Redis key " + job.payloadKey +
                            ") expired before a node took the job"));
  } else if (auto poison = refusedAsPoison(job.originId, job.pool, job.allowPoison, [&] {
               return core::payloadFingerprint(std::string_view(job.payload));
             })) {
    finish(d, std::move(*poison));  // quarantined elsewhere after it was queued
  } else if (!local_.hasPool(job.pool) || local_.shuttingDown()) {
    finish(d, endedHere(
                  job.originId, job.pool, core::Outcome::kUnavailable,
                  "node '" + node_ + "' took the job but cannot run pool '" + job.pool + "' now"));
  } else if (poisonAfter > 0 && d.runs > static_cast<std::uint64_t>(poisonAfter)) {
    // Each earlier run ended without an outcome: its node died or lost Redis while running it.
    const std::uint64_t lost = d.runs - 1;
    core::JobReport r =
        endedHere(job.originId, job.pool, core::Outcome::kPoison,
                  "the cluster handed this job to a node " + std::to_string(lost) +
                      (lost == 1 ? " time" : " times") +
                      " and each node running it died or lost Redis (poison_after = " +
                      std::to_string(poisonAfter) + "): not run again");
    ++counters_.poisoned;
    finish(d, std::move(r));
  } else {
    jobs::RunOptions options;
    options.async = true;  // accepted by the cluster already: no queue limit refuses it here
    options.allowPoison = job.allowPoison;
    if (job.timeoutMs) options.timeout = std::chrono::milliseconds(*job.timeoutMs);
    if (job.deadlineUnixMs) {
      options.deadline =
          timers_.now() + std::chrono::milliseconds(*job.deadlineUnixMs - unixMsNow_());
    }
    const core::JobId localId = local_.reserveJobId();
    core::Payload payload = core::makePayload(std::move(d.job.payload));  // not kept in `d`
    auto refused = local_.submitWithId(localId, job.pool, std::move(payload), options,
                                       [this, d](const core::JobReport& report) {
                                         noteQuarantine(report);
                                         finish(d, report);
                                         tend(d.job.pool);
                                       });
    if (refused) {
      finish(d, endedHere(job.originId, job.pool, core::Outcome::kUnavailable,
                          "node '" + node_ + "' could not start the job"));
    }
  }
  tend();
}

void ClusterRunner::finish(const Delivery& d, core::JobReport report) {
  report.jobId = d.job.originId;
  report.node = node_;
  report.runs = d.runs;
  OutcomeEntry o;
  o.originId = d.job.originId;
  o.node = node_;
  o.runs = d.runs;
  o.reportJson =
      jobs::reportToJson(report).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (report.result) {
    if (auto bytes = os::blobBytes(*report.result)) o.result = std::move(*bytes);
  }
  transport_.finish(d, std::move(o));
}

void ClusterRunner::tend() {
  std::map<std::string, std::size_t, std::less<>> wanted;
  if (quarantineRead_ && !local_.shuttingDown()) {
    for (const std::string& pool : pools_.names()) {
      if (std::size_t n = pools_.freeWorkers(pool)) wanted[pool] = n;
    }
  }
  wanted_ = wanted;
  transport_.wantJobs({wanted.begin(), wanted.end()});
}

void ClusterRunner::tend(std::string_view pool) {
  const bool taking = quarantineRead_ && !local_.shuttingDown();
  const std::size_t n = taking ? pools_.freeWorkers(pool) : 0;
  auto it = wanted_.find(pool);
  const std::size_t before = it == wanted_.end() ? 0 : it->second;
  if (n == before) return;
  if (n == 0) {
    wanted_.erase(it);
  } else {
    wanted_.insert_or_assign(std::string(pool), n);
  }
  transport_.wantJobs({wanted_.begin(), wanted_.end()});
}

}  // namespace bulkhead::cluster
