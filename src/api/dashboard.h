#pragma once
// The web dashboard's files (src/api/dashboard/), compiled into the binary by
// cmake/embed_files.cmake: the daemon serves them with nothing on disk, no build step and no
// CDN. Owns: which path serves which file, and the headers that go with them (content type, a
// Content-Security-Policy that allows only this origin, no caching across upgrades). The page
// itself reads only the public API (GET /v1/pools, /v1/pools/NAME, /v1/outcomes,
// /v1/quarantine, /v1/events).

#include <optional>
#include <string_view>

#include "api/routes.h"

namespace bulkhead::api {

// "/" and "/ui" are the page; "/ui/NAME" a file of it. Nullopt when no file has that path.
std::optional<Response> dashboardFile(unsigned version, std::string_view path);

}  // namespace bulkhead::api
