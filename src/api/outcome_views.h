#pragma once
// GET /v1/outcomes: the jobs service's recent outcomes as JSON, each in the stored report's shape
// (jobs/report_json.h) with the signal's name beside its number, plus the entry's sequence number
// and age. Owns: that body's shape (docs/api.md). May not touch the jobs service's state.

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>

#include "jobs/recent_outcomes.h"

namespace bulkhead::api {

nlohmann::json outcomesJson(const jobs::RecentOutcomes& recent, core::Time now, std::uint64_t since,
                            std::string_view pool, std::size_t limit);

}  // namespace bulkhead::api
