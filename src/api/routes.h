#pragma once
// HTTP requests to typed calls: each request is matched against one (methods, path pattern)
// table, parsed into the typed command its handler needs, and handed to the jobs service or the
// supervisor's views; what they return is translated by job_answers.h. No check that the jobs
// service makes is repeated here.

#include <boost/beast/http.hpp>
#include <functional>

#include "runtime/supervisor.h"

namespace bulkhead::jobs {
class JobsService;
}

namespace bulkhead::api {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;
using Respond = std::function<void(Response)>;

// What the routes need: the supervisor's views and the jobs service.
struct Services {
  runtime::Supervisor& supervisor;
  jobs::JobsService& jobs;
};

// Answers one request, now or later (a job's outcome), by calling respond exactly once.
void route(Services& services, Request& request, Respond respond);

}  // namespace bulkhead::api
