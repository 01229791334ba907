#pragma once
// The exit codes of the bulkhead command line, shared by every subcommand but `run` (whose codes
// are run/step_runner.h's). The help footers and the man page list them from here.

namespace bulkhead::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitJobFailed = 1;      // the job did not end ok (its outcome is printed)
inline constexpr int kExitBadConfig = 2;      // bad config or bad usage (unknown command, option)
inline constexpr int kExitCannotConnect = 3;  // the daemon cannot be reached

}  // namespace bulkhead::cli
