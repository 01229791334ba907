#include "api/outcome_views.h"

#include <chrono>
#include <string>

#include "core/signal_names.h"
#include "jobs/report_json.h"

namespace bulkhead::api {

using nlohmann::json;

json outcomesJson(const jobs::RecentOutcomes& recent, core::Time now, std::uint64_t since,
                  std::string_view pool, std::size_t limit) {
  json outcomes = json::array();
  for (const auto* e : recent.since(since, pool, limit)) {
    json j = jobs::reportToJson(e->report);
    for (auto& attempt : j["attempts"]) {
      if (attempt["signal_number"].is_number()) {
        attempt["signal"] = core::signalName(attempt["signal_number"].get<int>());
      }
    }
    j["seq"] = e->seq;
    j["age_s"] = std::chrono::duration<double>(now - e->at).count();
    j["async"] = e->async;
    j["result_bytes"] = e->resultBytes;
    outcomes.push_back(std::move(j));
  }
  return {{"outcomes", std::move(outcomes)}, {"last_seq", recent.lastSeq()}};
}

}  // namespace bulkhead::api
