#pragma once
// What the API reads of this daemon's part in a cluster (GET /v1/cluster, /metrics): its
// membership and its share of the cluster's jobs. Both null without a [cluster] section.

#include "cluster/cluster_runner.h"
#include "cluster/membership.h"

namespace bulkhead::cluster {

struct NodeParts {
  const Membership* membership = nullptr;
  const ClusterRunner* jobs = nullptr;
  explicit operator bool() const { return membership != nullptr; }
};

}  // namespace bulkhead::cluster
