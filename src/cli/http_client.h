#pragma once
// A blocking one-request HTTP client for the CLI (TCP or Unix socket).

#include <functional>
#include <map>
#include <string>

namespace bulkhead::cli {

struct HttpResult {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

// url: "http://host:port" or "unix:/path". Throws std::runtime_error on connection failures.
HttpResult httpRequest(const std::string& url, const std::string& method, const std::string& target,
                       const std::string& body, const std::map<std::string, std::string>& headers,
                       double timeoutSeconds);

// Reads a Server-Sent Events stream and calls onData with each event's data line until the
// server closes the stream (or forever). Throws std::runtime_error on connection failures.
void streamEvents(const std::string& url, const std::string& target,
                  const std::function<void(const std::string& data)>& onData);

}  // namespace bulkhead::cli
