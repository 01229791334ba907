// Requests through the route table to the jobs service (on fake pools and fake timers) and back
// as HTTP answers: the subtle cases callers depend on, without a daemon.
#include "api/routes.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "jobs/jobs_service.h"
#include "testlib/fake_jobs.h"

namespace bulkhead::api {
namespace {

namespace http = boost::beast::http;
using nlohmann::json;

class RoutesTest : public ::testing::Test {
 protected:
  RoutesTest() : supervisor_(io_, config_, options()) {}
  static runtime::SupervisorOptions options() {
    runtime::SupervisorOptions o;
    o.cgroups = os::makeNoCgroups("test");
    return o;
  }
  void TearDown() override {
    jobs_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  void withJournal() {
    dir_ = std::filesystem::temp_directory_path() /
           ("bulkhead-routes-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    jobs_ = std::make_unique<jobs::JobsService>(
        runner_, timers_, std::make_unique<journal::Journal>((dir_ / "j.db").string()));
  }
  void withoutJournal() { jobs_ = std::make_unique<jobs::JobsService>(runner_, timers_, nullptr); }
  // Routes one request; the answer, if one came before returning.
  std::optional<Response> call(http::verb method, std::string target, std::string body = "",
                               std::map<std::string, std::string> headers = {}) {
    Request req{method, target, 11};
    for (const auto& [k, v] : headers) req.set(k, v);
    req.body() = std::move(body);
    Services services{supervisor_, *jobs_};
    answers_.clear();
    route(services, req, [this](Answer a) { answers_.push_back(std::move(a.response)); });
    if (answers_.empty()) return std::nullopt;
    EXPECT_EQ(answers_.size(), 1u);
    return answers_.front();
  }
  static std::string error(const Response& r) { return json::parse(r.body()).value("error", ""); }

  boost::asio::io_context io_;
  config::Config config_;
  runtime::Supervisor supervisor_;
  testlib::FakeRunner runner_;
  testlib::FakeTimers timers_;
  std::filesystem::path dir_;
  std::unique_ptr<jobs::JobsService> jobs_;
  std::vector<Response> answers_;
};

TEST_F(RoutesTest, AMalformedTimeoutDuringShutdownIsAnsweredAsShutdown) {
  withoutJournal();
  runner_.shuttingDown_ = true;
  auto r = call(http::verb::post, "/v1/pools/p/jobs", "x", {{"X-Bulkhead-Timeout", "soon"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 503u);
  EXPECT_EQ(error(*r), "shutting_down");
  EXPECT_EQ((*r)[http::field::retry_after], "1");
  runner_.shuttingDown_ = false;
  r = call(http::verb::post, "/v1/pools/p/jobs", "x", {{"X-Bulkhead-Timeout", "soon"}});
  EXPECT_EQ(r->result_int(), 400u);
  EXPECT_EQ(error(*r), "bad_request");
}

TEST_F(RoutesTest, ASyncJobIsAnsweredWhenItEnds) {
  withoutJournal();
  EXPECT_FALSE(call(http::verb::post, "/v1/pools/p/jobs", "hello"));
  runner_.end(1);
  ASSERT_EQ(answers_.size(), 1u);
  EXPECT_EQ(answers_[0].result_int(), 200u);
  EXPECT_EQ(answers_[0].body(), "hello");
  EXPECT_EQ(answers_[0]["X-Bulkhead-Outcome"], "ok");
}

TEST_F(RoutesTest, FinishedJobsAreListedInOutcomesAfterASeq) {
  withJournal();
  EXPECT_FALSE(call(http::verb::post, "/v1/pools/p/jobs", "sync"));
  runner_.end(1);
  timers_.advance(std::chrono::seconds(3));
  ASSERT_EQ(call(http::verb::post, "/v1/pools/p/jobs?wait=0", "async")->result_int(), 202u);
  runner_.end(2, core::Outcome::kCrashed);
  auto r = call(http::verb::get, "/v1/outcomes");
  ASSERT_EQ(r->result_int(), 200u);
  auto body = json::parse(r->body());
  ASSERT_EQ(body["outcomes"].size(), 2u);
  EXPECT_EQ(body["last_seq"], 2);
  EXPECT_EQ(body["outcomes"][0]["job"], "1");
  EXPECT_EQ(body["outcomes"][0]["outcome"], "ok");
  EXPECT_EQ(body["outcomes"][0]["result_bytes"], 4);
  EXPECT_EQ(body["outcomes"][0]["age_s"], 3.0);
  EXPECT_EQ(body["outcomes"][0]["async"], false);
  EXPECT_EQ(body["outcomes"][1]["outcome"], "crashed");
  EXPECT_EQ(body["outcomes"][1]["async"], true);
  body = json::parse(call(http::verb::get, "/v1/outcomes?since=1")->body());
  ASSERT_EQ(body["outcomes"].size(), 1u);
  EXPECT_EQ(body["outcomes"][0]["job"], "2");
  EXPECT_EQ(call(http::verb::get, "/v1/outcomes?since=1x")->result_int(), 400u);
  EXPECT_EQ(call(http::verb::get, "/v1/outcomes?limit=-1")->result_int(), 400u);
  EXPECT_EQ(error(*call(http::verb::get, "/v1/outcomes?pool=nope")), "unknown_pool");
}

TEST_F(RoutesTest, TheDashboardIsServedFromTheBinary) {
  withoutJournal();
  for (const char* path : {"/", "/ui", "/ui/", "/ui/index.html"}) {
    auto r = call(http::verb::get, path);
    ASSERT_EQ(r->result_int(), 200u) << path;
    EXPECT_EQ((*r)[http::field::content_type], "text/html; charset=utf-8");
    EXPECT_NE(r->body().find("/ui/dashboard.js"), std::string::npos);
  }
  auto js = call(http::verb::get, "/ui/dashboard.js");
  EXPECT_EQ((*js)[http::field::content_type], "text/javascript; charset=utf-8");
  EXPECT_NE(js->body().find("/v1/outcomes"), std::string::npos);
  EXPECT_EQ(error(*call(http::verb::get, "/ui/../metrics")), "not_found");
  EXPECT_EQ(call(http::verb::post, "/")->result_int(), 405u);
}

TEST_F(RoutesTest, ADuplicateJobIdIsAnsweredNotLeftHanging) {
  withoutJournal();
  runner_.refuseNext_ = jobs::RunnerRefusal::kDuplicateId;
  auto r = call(http::verb::post, "/v1/pools/p/jobs", "x");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 500u);
  EXPECT_EQ(error(*r), "duplicate_id");
}

TEST_F(RoutesTest, AWrongMethodOnAJobIsUnknownWithoutAJournalAndNotAllowedWithOne) {
  withoutJournal();
  auto r = call(http::verb::post, "/v1/jobs/1");
  EXPECT_EQ(r->result_int(), 404u);
  EXPECT_EQ(json::parse(r->body())["detail"], "there is no journal");
  EXPECT_EQ(call(http::verb::post, "/v1/jobs/x1")->result_int(), 400u) << "the id comes first";
  withJournal();
  r = call(http::verb::post, "/v1/jobs/1");
  EXPECT_EQ(r->result_int(), 405u);
  EXPECT_EQ((*r)[http::field::allow], "GET, DELETE");
}

TEST_F(RoutesTest, PathsOutsideTheTableAndWrongMethodsOnIt) {
  withoutJournal();
  auto r = call(http::verb::get, "/v1/pools/a/b/jobs");
  EXPECT_EQ(r->result_int(), 404u);
  EXPECT_EQ(json::parse(r->body())["detail"], "no such resource");
  r = call(http::verb::get, "/v1/pools/p/jobs");
  EXPECT_EQ(r->result_int(), 405u);
  EXPECT_EQ((*r)[http::field::allow], "POST");
  EXPECT_EQ(json::parse(r->body())["detail"],
            "GET is not allowed on /v1/pools/p/jobs (allowed: POST)");
  EXPECT_EQ(call(http::verb::get, "/v1/pools//jobs")->result_int(), 404u);
  EXPECT_EQ(call(http::verb::head, "/metrics")->result_int(), 405u);
  EXPECT_EQ(call(http::verb::get, "/v1/pools/nope")->result_int(), 404u);
  EXPECT_EQ(error(*call(http::verb::get, "/nothing")), "not_found");
}

TEST_F(RoutesTest, AnAsyncJobIsAcceptedPolledAndAnsweredWithItsRuns) {
  withJournal();
  auto r = call(http::verb::post, "/v1/pools/p/jobs?wait=0", "x");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 202u);
  EXPECT_EQ((*r)[http::field::location], "/v1/jobs/1");
  EXPECT_EQ(r->body(), R"({"duplicate":false,"job":"1","pool":"p","state":"running"})");
  EXPECT_FALSE(call(http::verb::get, "/v1/jobs/1?wait=5s"));
  timers_.advance(std::chrono::seconds(5));
  ASSERT_EQ(answers_.size(), 1u);
  EXPECT_EQ(answers_[0].result_int(), 202u);
  EXPECT_EQ(answers_[0].body(), R"({"job":"1","state":"running"})");
  EXPECT_FALSE(call(http::verb::get, "/v1/jobs/1?wait=5s"));
  runner_.end(1);
  ASSERT_EQ(answers_.size(), 1u);
  EXPECT_EQ(answers_[0].result_int(), 200u);
  EXPECT_EQ(answers_[0]["X-Bulkhead-Runs"], "1");
  EXPECT_EQ(call(http::verb::delete_, "/v1/jobs/1")->result_int(), 409u);
  EXPECT_EQ(call(http::verb::get, "/v1/jobs/1?wait=later")->result_int(), 400u);
}

// The session asks which pool a body is for before reading it (its memfd threshold), the way
// route() reads the target.
TEST(SubmittedPool, ReadsTheSubmitRouteOnly) {
  EXPECT_EQ(submittedPool("/v1/pools/faces/jobs"), std::optional<std::string_view>("faces"));
  EXPECT_EQ(submittedPool("/v1/pools/faces/jobs?wait=0"), std::optional<std::string_view>("faces"));
  EXPECT_EQ(submittedPool("/v1/pools/faces"), std::nullopt);
  EXPECT_EQ(submittedPool("/v1/pools/a/b/jobs"), std::nullopt);  // one path segment, as routed
  EXPECT_EQ(submittedPool("/v1/pools//jobs"), std::nullopt);
  EXPECT_EQ(submittedPool("/v1/jobs/7"), std::nullopt);
  EXPECT_EQ(submittedPool("/v1/pools/faces/jobsx?x=/jobs"), std::nullopt);
}

}  // namespace
}  // namespace bulkhead::api
