// libFuzzer target: job and outcome entries (and cancel requests) come out of Redis Streams, and
// job records out of Redis hashes, where any client of the server can write them. Decoding must
// never crash, and whatever it accepts must encode back to an entry that decodes to the same thing.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "cluster/job_entry.h"

namespace {

// The input as field/value pairs: NUL-separated strings, taken two at a time.
bulkhead::cluster::Fields fieldsOf(std::string_view bytes) {
  bulkhead::cluster::Fields fields;
  std::string pending;
  bool haveName = false;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= bytes.size(); ++i) {
    if (i != bytes.size() && bytes[i] != '\0') continue;
    std::string part(bytes.substr(start, i - start));
    start = i + 1;
    if (!haveName) {
      pending = std::move(part);
      haveName = true;
    } else {
      fields.emplace_back(std::move(pending), std::move(part));
      haveName = false;
    }
  }
  return fields;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace bulkhead::cluster;
  const auto fields = fieldsOf(std::string_view(reinterpret_cast<const char*>(data), size));
  auto job = decodeJob(fields);
  if (const auto* j = std::get_if<JobEntry>(&job)) {
    auto again = decodeJob(encodeJob(*j));
    const auto* k = std::get_if<JobEntry>(&again);
    if (!k || k->origin != j->origin || k->originId != j->originId || k->pool != j->pool ||
        k->payload != j->payload || k->payloadKey != j->payloadKey ||
        k->timeoutMs != j->timeoutMs || k->deadlineUnixMs != j->deadlineUnixMs ||
        k->allowPoison != j->allowPoison) {
      std::abort();
    }
  }
  auto outcome = decodeOutcome(fields);
  if (const auto* o = std::get_if<OutcomeEntry>(&outcome)) {
    auto again = decodeOutcome(encodeOutcome(*o));
    const auto* p = std::get_if<OutcomeEntry>(&again);
    if (!p || p->originId != o->originId || p->node != o->node || p->runs != o->runs ||
        p->reportJson != o->reportJson || p->result != o->result) {
      std::abort();
    }
  }
  auto streamEntry = decodeOutcomeStream(fields);
  if (const auto* c = std::get_if<CancelEntry>(&streamEntry)) {
    auto again = decodeOutcomeStream(encodeCancel(*c));
    const auto* d = std::get_if<CancelEntry>(&again);
    if (!d || d->originId != c->originId || d->from != c->from) std::abort();
  }
  auto record = decodeRecord(fields);
  if (const auto* r = std::get_if<RecordEntry>(&record)) {
    auto again = decodeRecord(encodeRecord(*r));
    const auto* q = std::get_if<RecordEntry>(&again);
    if (!q || q->node != r->node || q->pool != r->pool || q->finished != r->finished ||
        q->runs != r->runs || q->reportJson != r->reportJson || q->result != r->result) {
      std::abort();
    }
  }
  return 0;
}
