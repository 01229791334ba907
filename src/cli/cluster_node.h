#pragma once
// This daemon as a node of a cluster ([cluster], docs/cluster.md), assembled: its membership
// (who is alive, with which pools), its job queues in Redis Streams, the runner that chooses
// between this node's workers and the streams, and the shared job records (its job-id range,
// lookups, idempotency keys, cancels). main.cc builds one when the config has [cluster], hands
// its runner to the jobs service, and the jobs service to start().
//
// Owns: the wiring of those three to the supervisor and the event loop (post, the heartbeat
// that refreshes what this node announces and what it knows of the others, the tending of how
// many jobs it wants). It may not decide anything about jobs (cluster/cluster_runner.h does).

#include <boost/asio.hpp>
#include <memory>
#include <string>

#include "cluster/cluster_runner.h"
#include "cluster/job_queue.h"
#include "cluster/job_records.h"
#include "cluster/membership.h"
#include "config/config.h"
#include "jobs/jobs_service.h"
#include "jobs/supervisor_runner.h"

namespace bulkhead::cli {

class ClusterNode {
 public:
  // Throws std::runtime_error when password_env names an unset variable.
  ClusterNode(boost::asio::io_context& io, const config::Config& config,
              runtime::Supervisor& supervisor, jobs::PoolRunner& local, jobs::Timers& timers);
  ~ClusterNode();

  cluster::ClusterRunner& runner() { return *runner_; }
  const cluster::Membership& membership() const { return *membership_; }
  const cluster::JobRecords& records() const { return *records_; }
  // Starts reading and writing jobs, and the heartbeat; `address` is what this node announces.
  // `jobs` shares its async jobs with the cluster from then on.
  void start(std::string address, jobs::JobsService& jobs);
  void stop();  // cancels the timers (the queues flush when destroyed)

 private:
  void beat();
  void applyView();
  void tendSoon();

  boost::asio::io_context& io_;
  runtime::Supervisor& supervisor_;
  const std::chrono::nanoseconds heartbeat_;
  std::string address_;
  std::unique_ptr<cluster::Membership> membership_;
  std::unique_ptr<cluster::JobQueue> queue_;
  std::unique_ptr<cluster::JobRecords> records_;
  std::unique_ptr<cluster::ClusterRunner> runner_;
  std::shared_ptr<const cluster::MembershipView> applied_;  // the view the runner has
  boost::asio::steady_timer beatTimer_;
  boost::asio::steady_timer tendTimer_;
};

}  // namespace bulkhead::cli
