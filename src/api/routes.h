#pragma once
#include <boost/beast/http.hpp>
#include <functional>

#include "runtime/supervisor.h"

namespace bulkhead::api {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;
using Respond = std::function<void(Response)>;

// Answers one request, now or later (a job's outcome), by calling respond exactly once.
void route(runtime::Supervisor& supervisor, Request& request, Respond respond);

Response problemResponse(unsigned version, int status, const nlohmann::json& problem);

}  // namespace bulkhead::api
