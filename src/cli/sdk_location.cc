#include "cli/sdk_location.h"

#include <cstdlib>
#include <filesystem>
#include <system_error>

// Set by CMake: the python/ directory of the checkout this binary was built from.
#ifndef BULKHEAD_SDK_DIR
#define BULKHEAD_SDK_DIR ""
#endif

namespace bulkhead::cli {

namespace {

bool holdsSdk(const std::filesystem::path& dir) {
  std::error_code ec;
  return !dir.empty() && std::filesystem::is_regular_file(dir / "bulkhead" / "worker.py", ec);
}

}  // namespace

std::string locateSdkDirectory() {
  if (const char* env = std::getenv("BULKHEAD_SDK_DIR"); env && *env) return env;
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    // <prefix>/bin/bulkhead: the package's <prefix>/lib/python3/dist-packages, or a local
    // install's <prefix>/lib/python3.X/dist-packages (cmake/install.cmake).
    auto lib = (exe.parent_path() / ".." / "lib").lexically_normal();
    if (holdsSdk(lib / "python3" / "dist-packages"))
      return (lib / "python3/dist-packages").string();
    for (const auto& entry : std::filesystem::directory_iterator(lib, ec)) {
      auto candidate = entry.path() / "dist-packages";
      if (entry.path().filename().string().starts_with("python3.") && holdsSdk(candidate)) {
        return candidate.string();
      }
    }
  }
  if (holdsSdk(BULKHEAD_SDK_DIR)) return BULKHEAD_SDK_DIR;
  return "";
}

}  // namespace bulkhead::cli
