#pragma once
// The version `bulkhead --version` prints: CMake's project VERSION and the git commit the binary
// was built from (generated into git_commit.h at every build; absent outside a git checkout).

#include <string>

namespace bulkhead::cli {

// "bulkhead 0.1.0 (commit 0123abcd4567)", or "bulkhead 0.1.0" when the build had no commit.
std::string versionText();

}  // namespace bulkhead::cli
