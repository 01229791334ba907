#include "cli/cluster_node.h"

#include <cstdlib>
#include <stdexcept>

#include "api/cluster_views.h"
#include "cli/version.h"
#include "runtime/operator_log.h"

namespace bulkhead::cli {

namespace {

// How often the free workers are counted again besides every job's end: a worker that became
// ready (started, replaced, recycled) is offered to the streams within this.
constexpr auto kTendEvery = std::chrono::milliseconds(100);

std::string passwordFrom(const config::ClusterConfig& c) {
  if (c.passwordEnv.empty()) return {};
  const char* value = std::getenv(c.passwordEnv.c_str());
  if (!value) {
    throw std::runtime_error("[cluster] password_env names " + c.passwordEnv +
                             ", which is not set in the daemon's environment");
  }
  return value;
}

std::size_t freeWorkers(const runtime::Supervisor& supervisor, std::string_view pool) {
  std::size_t free = 0;
  supervisor.visitPool(pool, [&](const runtime::Supervisor::PoolView& v) {
    const std::size_t busy = v.pool.inFlight() + v.pool.queueLength();
    const std::size_t ready = v.pool.readyWorkers();
    free = ready > busy ? ready - busy : 0;
  });
  return free;
}

}  // namespace

ClusterNode::ClusterNode(boost::asio::io_context& io, const config::Config& config,
                         runtime::Supervisor& supervisor, jobs::PoolRunner& local,
                         jobs::Timers& timers)
    : io_(io),
      supervisor_(supervisor),
      heartbeat_(config.cluster->heartbeat),
      beatTimer_(io),
      tendTimer_(io) {
  const config::ClusterConfig& c = *config.cluster;
  const std::string password = passwordFrom(c);
  const std::string node = cluster::nodeNameOf(c);
  membership_ = std::make_unique<cluster::Membership>(c, node, password);
  cluster::ClusterRunner::LocalPools pools;
  std::vector<std::string> names;
  for (const auto& pool : config.pools) {
    names.push_back(pool.name);
    pools.poisonAfter[pool.name] = pool.poisonAfter;
  }
  pools.names = [names] { return names; };
  pools.forgetAfter = c.claimAfter;
  pools.freeWorkers = [&supervisor](std::string_view pool) {
    return freeWorkers(supervisor, pool);
  };
  auto post = [&io](std::function<void()> f) { boost::asio::post(io, std::move(f)); };
  auto log = [](const std::string& line) {
    runtime::logAt(runtime::LogLevel::kWarning, line, {{"event", "cluster"}});
  };
  queue_ = std::make_unique<cluster::JobQueue>(c, node, password, names, post, log);
  records_ = std::make_unique<cluster::JobRecords>(c, node, password, post, log);
  runner_ =
      std::make_unique<cluster::ClusterRunner>(local, timers, *queue_, node, std::move(pools), [] {
        return std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
            .count();
      });
}

ClusterNode::~ClusterNode() {
  queue_.reset();  // flushes outcomes before the runner they were for goes
  records_.reset();
}

void ClusterNode::start(std::string address, jobs::JobsService& jobs) {
  address_ = std::move(address);
  cluster::TransportHandlers handlers = runner_->handlers();
  handlers.cancel = [&jobs](cluster::CancelEntry k) {
    auto answer = jobs.cancel(k.originId);
    runtime::logAt(runtime::LogLevel::kInfo,
                   "job " + std::to_string(k.originId) + ": node " + k.from +
                       " asked to cancel it" +
                       (std::holds_alternative<jobs::Cancelling>(answer) ? "" : " (not running)"),
                   {{"event", "cancel_requested"}, {"job", k.originId}});
  };
  queue_->start(std::move(handlers));
  // This node's job ids carry its number, so that any node can tell whose they are.
  records_->start(supervisor_.lastJobId(),
                  [this](std::uint64_t firstId) { runner_->startJobIdsAfter(firstId); });
  jobs.shareWith(*records_);
  // Before the first request: the others' pools are known and jobs can be sent from the start
  // (a job for a pool only they have is neither unknown_pool nor cluster_unavailable for a
  // heartbeat). Redis away delays serving by 2 s at most.
  const auto atMost = std::min<std::chrono::nanoseconds>(3 * heartbeat_, std::chrono::seconds(2));
  // Each new view reaches the runner as soon as it is read, not at the next heartbeat.
  membership_->onRead([this] { boost::asio::post(io_, [this] { applyView(); }); });
  membership_->waitForFirstRead(atMost);
  queue_->waitConnected(atMost);
  if (auto firstId = records_->waitNumbered(atMost)) runner_->startJobIdsAfter(*firstId);
  beat();
  tendSoon();
}

void ClusterNode::stop() {
  beatTimer_.cancel();
  tendTimer_.cancel();
}

// What this node knows of the others' pools and quarantine, from the view just read.
void ClusterNode::applyView() {
  const auto view = membership_->view();
  if (view.get() == applied_.get()) return;  // a read and a heartbeat can both ask
  applied_ = view;
  runner_->setDirectory(cluster::directoryFrom(view->nodes, membership_->nodeName()));
  if (view->readAt.time_since_epoch().count() != 0) {  // Redis read at least once
    runner_->setQuarantine(view->quarantine);
  }
}

// What this node announces every heartbeat. The view is applied here too (not only when a read
// tells the loop), so pools age out of the directory while Redis is away.
void ClusterNode::beat() {
  membership_->describe(
      api::nodeDescription(supervisor_, membership_->nodeName(), address_, versionText()).dump());
  applyView();
  beatTimer_.expires_after(heartbeat_);
  beatTimer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) beat();
  });
}

void ClusterNode::tendSoon() {
  runner_->tend();
  tendTimer_.expires_after(kTendEvery);
  tendTimer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) tendSoon();
  });
}

}  // namespace bulkhead::cli
