#include "api/dashboard.h"

#include "dashboard_files.h"

namespace bulkhead::api {

namespace http = boost::beast::http;

namespace {

constexpr std::string_view kPage = "index.html";

const char* contentType(std::string_view name) {
  auto ends = [&](std::string_view suffix) {
    return name.size() >= suffix.size() && name.substr(name.size() - suffix.size()) == suffix;
  };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  return "application/octet-stream";
}

}  // namespace

std::optional<Response> dashboardFile(unsigned version, std::string_view path) {
  std::string_view name;
  if (path == "/" || path == "/ui" || path == "/ui/") {
    name = kPage;
  } else if (path.substr(0, 4) == "/ui/") {
    name = path.substr(4);
  } else {
    return std::nullopt;
  }
  for (const auto& file : embedded::kEmbeddedFiles) {
    if (file.name != name) continue;
    Response res{http::status::ok, version};
    res.set(http::field::content_type, contentType(name));
    // Revalidate every time: after an upgrade the page and its script must not mix versions.
    res.set(http::field::cache_control, "no-cache");
    res.set("X-Content-Type-Options", "nosniff");
    // Only this origin, nothing inline, no framing: stderr tails shown on the page are text,
    // and even a rendering bug could not load or run anything from elsewhere.
    res.set("Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'");
    res.body().assign(file.bytes.data(), file.bytes.size());
    res.prepare_payload();
    return res;
  }
  return std::nullopt;
}

}  // namespace bulkhead::api
