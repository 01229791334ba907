#pragma once
// What the API reads of this daemon's part in a cluster (GET /v1/cluster, /metrics): its
// membership, its share of the cluster's jobs and its shared job records. All null without a
// [cluster] section.

#include "cluster/cluster_runner.h"
#include "cluster/job_records.h"
#include "cluster/membership.h"

namespace bulkhead::cluster {

struct NodeParts {
  const Membership* membership = nullptr;
  const ClusterRunner* jobs = nullptr;
  const JobRecords* records = nullptr;
  explicit operator bool() const { return membership != nullptr; }
};

}  // namespace bulkhead::cluster
