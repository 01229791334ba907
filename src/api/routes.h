#pragma once
#include <boost/beast/http.hpp>
#include <functional>

#include "runtime/supervisor.h"

namespace bulkhead::api {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;
using Respond = std::function<void(Response)>;

class AsyncJobs;

// What the routes need: the supervisor, and the journal-backed async jobs (null: no journal).
struct Services {
  runtime::Supervisor& supervisor;
  AsyncJobs* jobs = nullptr;
};

// Answers one request, now or later (a job's outcome), by calling respond exactly once.
void route(Services& services, Request& request, Respond respond);

// The answer to a finished job, exactly as a sync caller gets it.
Response responseFor(unsigned version, const core::JobReport& report);

Response problemResponse(unsigned version, int status, const nlohmann::json& problem);
Response jsonResponse(unsigned version, int status, const nlohmann::json& body);

}  // namespace bulkhead::api
