#pragma once
// HTTP requests to typed calls: each request is matched against one (methods, path pattern)
// table, parsed into the typed command its handler needs, and handed to the jobs service or the
// supervisor's views; what they return is translated by job_answers.h. No check that the jobs
// service makes is repeated here.

#include <boost/beast/http.hpp>
#include <functional>
#include <optional>
#include <string_view>

#include "cluster/node_parts.h"
#include "runtime/supervisor.h"

namespace bulkhead::jobs {
class JobsService;
}

namespace bulkhead::api {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;
// A response, and for a job result held in a memfd the file that is its body: the session writes
// the head and then the file with sendfile(2), and response.body() stays empty (Content-Length
// is set). Every other answer is the response alone.
struct Answer {
  Answer(Response r) : response(std::move(r)) {}  // NOLINT: implicit, most answers are this
  Answer(Response r, core::Payload file) : response(std::move(r)), fileBody(std::move(file)) {}
  Response response;
  core::Payload fileBody;
};
using Respond = std::function<void(Answer)>;

// What the routes need: the supervisor's views, the jobs service and, with [cluster], this
// node's membership and cluster jobs.
struct Services {
  runtime::Supervisor& supervisor;
  jobs::JobsService& jobs;
  cluster::NodeParts cluster{};
};

// Answers one request, now or later (a job's outcome), by calling respond exactly once.
// `fileBody`: the request's body when the session read it into a memfd (request.body() is then
// empty).
void route(Services& services, Request& request, Respond respond, core::Payload fileBody = {});

// The pool a request target submits a job to (POST /v1/pools/{pool}/jobs, query ignored), read
// as route() reads it; none for any other target. The session asks it before reading a body.
std::optional<std::string_view> submittedPool(std::string_view target);

}  // namespace bulkhead::api
