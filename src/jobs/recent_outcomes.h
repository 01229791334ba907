#pragma once
// The last kKept finished jobs, newest last, each with a sequence number that only grows: what
// GET /v1/outcomes and the dashboard show. Owns: that bounded log and what each entry keeps (the
// report without its result bytes, so a 64 MiB result is not pinned by a list of recent jobs).
// It may not read a clock (the caller passes the time) or render JSON (src/api does).

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string_view>
#include <vector>

#include "core/outcome.h"
#include "core/time.h"

namespace bulkhead::jobs {

class RecentOutcomes {
 public:
  static constexpr std::size_t kKept = 200;

  struct Entry {
    std::uint64_t seq = 0;
    core::Time at{};
    bool async = false;
    std::uint64_t resultBytes = 0;  // the size of the result that was dropped (ok only)
    core::JobReport report;         // report.result is always empty here
  };

  void add(const core::JobReport& report, core::Time at, bool async);
  // Entries with seq > since, for one pool or every pool (empty), the newest `limit` of them,
  // oldest first.
  std::vector<const Entry*> since(std::uint64_t since, std::string_view pool,
                                  std::size_t limit) const;
  // The seq of the newest entry; 0 before the first.
  std::uint64_t lastSeq() const { return nextSeq_ - 1; }

 private:
  std::deque<Entry> entries_;
  std::uint64_t nextSeq_ = 1;
};

}  // namespace bulkhead::jobs
