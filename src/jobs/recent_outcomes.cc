#include "jobs/recent_outcomes.h"

#include <algorithm>

namespace bulkhead::jobs {

void RecentOutcomes::add(const core::JobReport& report, core::Time at, bool async) {
  Entry entry;
  entry.seq = nextSeq_++;
  entry.at = at;
  entry.async = async;
  entry.resultBytes = report.result ? report.result->size() : 0;
  entry.report = report;
  entry.report.result.reset();
  entries_.push_back(std::move(entry));
  if (entries_.size() > kKept) entries_.pop_front();
}

std::vector<const RecentOutcomes::Entry*> RecentOutcomes::since(std::uint64_t since,
                                                                std::string_view pool,
                                                                std::size_t limit) const {
  std::vector<const Entry*> newestFirst;
  for (auto it = entries_.rbegin(); it != entries_.rend() && newestFirst.size() < limit; ++it) {
    if (it->seq <= since) break;  // seqs grow towards the back: nothing older can match
    if (!pool.empty() && it->report.pool != pool) continue;
    newestFirst.push_back(&*it);
  }
  std::reverse(newestFirst.begin(), newestFirst.end());
  return newestFirst;
}

}  // namespace bulkhead::jobs
