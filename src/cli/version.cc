// The version text (see version.h). BULKHEAD_VERSION comes from CMakeLists.txt; git_commit.h is
// written by cmake/git_commit.cmake into the build tree, rewritten only when the commit changes so
// that only this file recompiles.

#include "cli/version.h"

#include "git_commit.h"  // BULKHEAD_GIT_COMMIT: "" when not built from a git checkout

#ifndef BULKHEAD_VERSION
#error "BULKHEAD_VERSION must be defined (CMakeLists.txt passes the project VERSION)"
#endif

namespace bulkhead::cli {

std::string versionText() {
  std::string text = "bulkhead " BULKHEAD_VERSION;
  std::string commit = BULKHEAD_GIT_COMMIT;
  if (!commit.empty()) text += " (commit " + commit + ")";
  return text;
}

}  // namespace bulkhead::cli
