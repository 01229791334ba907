#include "jobs/foreign_jobs.h"

namespace bulkhead::jobs {

ForeignJobs::ForeignJobs(SharedJobs& shared, Timers& timers) : shared_(shared), timers_(timers) {}

ForeignJobs::~ForeignJobs() {
  for (auto& [ticket, wait] : waits_) {
    if (wait.timer) timers_.cancelTimer(*wait.timer);
  }
}

void ForeignJobs::get(core::JobId id, core::Duration wait, JobsService::AnswerCallback answer) {
  const std::uint64_t ticket = nextTicket_++;
  waits_[ticket] = Wait{id, timers_.now() + wait, std::move(answer), std::nullopt};
  read(ticket);
}

void ForeignJobs::read(std::uint64_t ticket) {
  auto it = waits_.find(ticket);
  if (it == waits_.end()) return;
  it->second.timer.reset();
  shared_.lookup(it->second.id,
                 [this, life = std::weak_ptr<int>(life_), ticket](SharedLookup found) {
                   if (life.lock()) answerRead(ticket, std::move(found));
                 });
}

void ForeignJobs::answerRead(std::uint64_t ticket, SharedLookup found) {
  auto it = waits_.find(ticket);
  if (it == waits_.end()) return;
  Wait& w = it->second;
  std::optional<JobAnswer> answer;
  if (found.unreachable) {
    answer = LookupError::kClusterUnavailable;
  } else if (!found.record) {
    answer = LookupError::kUnknownJob;
  } else if (found.record->finished && found.record->report) {
    answer = Finished{*found.record->report, found.record->runs};
  } else if (timers_.now() >= w.until) {
    answer = Pending{w.id, "queued"};  // the origin knows whether it runs; the record does not
  }
  if (!answer) {
    const core::Duration left = w.until - timers_.now();
    w.timer = timers_.startTimer(std::min<core::Duration>(left, kPollEvery),
                                 [this, ticket] { read(ticket); });
    return;
  }
  JobsService::AnswerCallback reply = std::move(w.answer);
  waits_.erase(it);
  reply(std::move(*answer));
}

void ForeignJobs::cancel(core::JobId id, JobsService::CancelCallback answer) {
  shared_.lookup(id, [this, life = std::weak_ptr<int>(life_), id,
                      answer = std::move(answer)](SharedLookup found) {
    if (!life.lock()) return;
    if (found.unreachable) return answer(LookupError::kClusterUnavailable);
    if (!found.record) return answer(LookupError::kUnknownJob);
    if (found.record->finished) {
      const std::string outcome =
          found.record->report ? std::string(core::outcomeName(found.record->report->outcome))
                               : "finished";
      return answer(AlreadyFinished{id, outcome});
    }
    shared_.requestCancel(id, found.record->node);
    answer(Cancelling{id});
  });
}

}  // namespace bulkhead::jobs
