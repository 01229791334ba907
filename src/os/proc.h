#pragma once
// Sampling a worker's resource use from /proc: RSS, threads, memory maps, open fds, CPU time.
//
// The parsers are pure functions over the text of one /proc file, tested on fixtures in
// tests/data/proc/. ProcReader does the I/O against a /proc root passed in (a temp dir in tests)
// and is built to be sampled often: no iostreams and no allocation per sample (one buffer, made
// once), the maps file is counted chunk by chunk and never held whole, fds are counted with
// getdents64.
//
// Races are normal here: a worker can exit between any two reads. Every "the process is gone"
// errno (ENOENT, ESRCH) turns into nullopt, never into an error.

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "os/unique_fd.h"

namespace bulkhead::os {

struct ProcSample {
  std::uint64_t rssBytes = 0;  // VmRSS
  int threads = 0;             // Threads:
  int maps = -1;               // lines of /proc/PID/maps; -1 when not read this time
  int fds = 0;                 // entries of /proc/PID/fd; -1 when it could not be listed (EACCES)
  double cpuSeconds = 0;       // utime+stime (/proc/PID/stat fields 14, 15) in seconds
};

struct StatusFields {
  std::uint64_t rssBytes = 0;  // 0 when the process has no VmRSS line (zombie, kernel thread)
  int threads = 0;
  bool exited = false;  // State: Z (zombie) or X (dead): the process is gone, only not yet reaped
};

// Parses /proc/PID/status (man 5 proc). nullopt when there is no valid Threads: line.
std::optional<StatusFields> parseProcStatus(std::string_view statusText);

// utime + stime of /proc/PID/stat in seconds. The comm field (2) is in parentheses and may itself
// contain spaces and ')', so the fields are counted from the LAST ')'. nullopt when malformed.
std::optional<double> parseProcStatCpuSeconds(std::string_view statText, long ticksPerSecond);

// Field `field` (numbered as in man 5 proc, 3 or more) of /proc/PID/stat; nullopt if missing.
std::optional<std::string_view> procStatField(std::string_view statText, int field);

struct ProcessIds {
  pid_t parent = 0;
  pid_t group = 0;
};
// ppid and pgrp (fields 4 and 5) of /proc/PID/stat.
std::optional<ProcessIds> parseProcStatIds(std::string_view statText);

// Lines in text; a last line without '\n' counts too.
std::size_t countLines(std::string_view text);

class ProcReader {
 public:
  // Opens procRoot once, here; if that fails, every sample() is nullopt.
  explicit ProcReader(std::string procRoot = "/proc");
  ~ProcReader();
  ProcReader(ProcReader&&) noexcept;
  ProcReader& operator=(ProcReader&&) noexcept;
  ProcReader(const ProcReader&) = delete;
  ProcReader& operator=(const ProcReader&) = delete;

  // nullopt when the process is gone: no such pid, exited (a zombie counts as exited), or it
  // exited between two reads. readMaps: also count /proc/PID/maps. That read is O(number of maps)
  // inside the kernel: measured on this project's VMs for a Python process with torch imported
  // (1,687 maps), about 26 us per sample without maps and 1.5-2.5 ms with them, all of the
  // difference spent generating the maps text. Sample maps at a bounded rate.
  //
  // Not thread-safe (it reuses one buffer): one ProcReader per sampling thread. A pid can only be
  // reused after its parent reaps it, so a supervisor that samples its own children on the thread
  // that reaps them never reads a stranger.
  std::optional<ProcSample> sample(pid_t pid, bool readMaps) const;
  // Parent and process group of a process (a zombie too); nullopt when there is no such pid.
  std::optional<ProcessIds> ids(pid_t pid) const;

 private:
  std::string procRoot_;
  UniqueFd root_;  // procRoot_, opened once; every sample opens PID relative to it
  long ticksPerSecond_;
  std::unique_ptr<char[]> buffer_;
};

}  // namespace bulkhead::os
