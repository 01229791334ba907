#pragma once
// A JobReport as JSON and back: the form in which the journal keeps a finished job (its result
// bytes go beside it, in their own BLOB column). Every field of the report survives the round
// trip, so a stored job is answered exactly as it was when it ended.
//
// Owns: the stored report format, and reading what a schema-1 journal kept instead (the HTTP
// answer). Its key names follow the problem+json documents of docs/api.md where the two share a
// field, which is what lets a schema-1 problem body be read back as a report. It may not render
// HTTP answers (src/api does) or touch the journal's database.

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/outcome.h"
#include "journal/journal.h"

namespace bulkhead::jobs {

// Without the result bytes (JobReport::result): store those with resultBytes().
nlohmann::json reportToJson(const core::JobReport& report);
// Nullopt when the text is not a report (not JSON, no known outcome, a field of the wrong type).
std::optional<core::JobReport> reportFromJson(const std::string& text, std::string result = {});

// The stored pair for the journal.
journal::FinishedJob finishedJobFrom(const core::JobReport& report);
// A finished journal row back as a report (schema 2, or the answer schema 1 kept).
std::optional<core::JobReport> reportFromRow(const journal::JobRow& row);

std::optional<core::Outcome> outcomeFromName(std::string_view name);

}  // namespace bulkhead::jobs
