#include "core/recycle_cause.h"

namespace bulkhead::core {

std::string_view recycleCauseName(RecycleCause cause) {
  switch (cause) {
    case RecycleCause::kJobs:
      return "jobs";
    case RecycleCause::kAge:
      return "age";
    case RecycleCause::kExhausted:
      return "exhausted";
    case RecycleCause::kRss:
      return "rss";
    case RecycleCause::kThreads:
      return "threads";
    case RecycleCause::kMaps:
      return "maps";
    case RecycleCause::kFds:
      return "fds";
    case RecycleCause::kGpuMemory:
      return "gpu_memory";
    case RecycleCause::kTrendRss:
      return "trend:rss";
    case RecycleCause::kTrendThreads:
      return "trend:threads";
    case RecycleCause::kTrendMaps:
      return "trend:maps";
    case RecycleCause::kTrendFds:
      return "trend:fds";
    case RecycleCause::kTrendGpuMemory:
      return "trend:gpu_memory";
  }
  return "unknown";
}

bool recycleCauseCrossedBound(RecycleCause cause) {
  switch (cause) {
    case RecycleCause::kExhausted:
    case RecycleCause::kRss:
    case RecycleCause::kThreads:
    case RecycleCause::kMaps:
    case RecycleCause::kFds:
    case RecycleCause::kGpuMemory:
      return true;
    case RecycleCause::kJobs:
    case RecycleCause::kAge:
    case RecycleCause::kTrendRss:
    case RecycleCause::kTrendThreads:
    case RecycleCause::kTrendMaps:
    case RecycleCause::kTrendFds:
    case RecycleCause::kTrendGpuMemory:
      return false;
  }
  return false;
}

}  // namespace bulkhead::core
