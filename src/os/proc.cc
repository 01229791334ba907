#include "os/proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "os/unique_fd.h"

namespace bulkhead::os {

namespace {

// Large enough for any /proc/PID/status or stat in one piece; maps and getdents64 go through it
// in chunks of this size.
constexpr std::size_t kBufferSize = 64 * 1024;

bool isGoneErrno(int error) { return error == ENOENT || error == ESRCH; }

std::string_view trimLeft(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  return s;
}

template <typename T>
bool parseNumber(std::string_view s, T* out) {
  s = trimLeft(s);
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end != s.data();
}

// The value after "Key:" on the line that starts with it, or nullopt.
std::optional<std::string_view> statusValue(std::string_view text, std::string_view key) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    if (line.size() > key.size() && line.substr(0, key.size()) == key && line[key.size()] == ':') {
      return line.substr(key.size() + 1);
    }
    pos = eol + 1;
  }
  return std::nullopt;
}

// Reads a whole (small) file relative to dirFd into buf. Returns the byte count, or -errno.
ssize_t readSmallFile(int dirFd, const char* name, char* buf, std::size_t size) {
  UniqueFd fd(::openat(dirFd, name, O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return -errno;
  std::size_t used = 0;
  while (used < size) {
    ssize_t n = ::read(fd.get(), buf + used, size - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
  }
  return static_cast<ssize_t>(used);
}

// Counts the lines of /proc/PID/maps without holding the file: each read() of a seq_file returns
// whole lines, but nothing here relies on that. Returns the count or -errno.
long countMapsLines(int dirFd, char* buf, std::size_t size) {
  UniqueFd fd(::openat(dirFd, "maps", O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return -errno;
  long lines = 0;
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) break;
    lines += static_cast<long>(std::count(buf, buf + n, '\n'));
  }
  return lines;
}

// Counts the entries of /proc/PID/fd with getdents64 (man 2 getdents), skipping "." and "..".
// Returns the count or -errno.
long countFds(int dirFd, char* buf, std::size_t size) {
  UniqueFd fd(::openat(dirFd, "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return -errno;
  long count = 0;
  for (;;) {
    long n = ::syscall(SYS_getdents64, fd.get(), buf, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) break;
    for (long off = 0; off < n;) {
      // struct linux_dirent64 { u64 d_ino; s64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
      unsigned short reclen;
      std::memcpy(&reclen, buf + off + 16, sizeof reclen);
      const char* name = buf + off + 19;
      if (!(name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0')))) ++count;
      if (reclen == 0) return -EIO;  // never from a sane kernel; don't spin
      off += reclen;
    }
  }
  return count;
}

}  // namespace

std::optional<StatusFields> parseProcStatus(std::string_view statusText) {
  StatusFields out;
  auto threads = statusValue(statusText, "Threads");
  if (!threads || !parseNumber(*threads, &out.threads) || out.threads < 0) return std::nullopt;
  if (auto rss = statusValue(statusText, "VmRSS")) {
    // "VmRSS:\t  123456 kB": the kernel always reports kB here.
    std::uint64_t kb = 0;
    if (!parseNumber(*rss, &kb)) return std::nullopt;
    out.rssBytes = kb * 1024;
  }
  if (auto state = statusValue(statusText, "State")) {
    std::string_view s = trimLeft(*state);
    out.exited = !s.empty() && (s.front() == 'Z' || s.front() == 'X');
  }
  return out;
}

std::optional<std::string_view> procStatField(std::string_view statText, int field) {
  if (field < 3) return std::nullopt;
  std::size_t close = statText.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  std::string_view rest = statText.substr(close + 1);
  // rest is " S ppid pgrp ...": its first token is field 3.
  std::size_t pos = 0;
  for (int index = 3;; ++index) {
    while (pos < rest.size() && rest[pos] == ' ') ++pos;
    if (pos >= rest.size() || rest[pos] == '\n') return std::nullopt;
    std::size_t end = rest.find_first_of(" \n", pos);
    if (end == std::string_view::npos) end = rest.size();
    if (index == field) return rest.substr(pos, end - pos);
    pos = end;
  }
}

std::optional<double> parseProcStatCpuSeconds(std::string_view statText, long ticksPerSecond) {
  if (ticksPerSecond <= 0) return std::nullopt;
  auto utimeText = procStatField(statText, 14);
  auto stimeText = procStatField(statText, 15);
  std::uint64_t utime = 0, stime = 0;
  if (!utimeText || !stimeText || !parseNumber(*utimeText, &utime) ||
      !parseNumber(*stimeText, &stime)) {
    return std::nullopt;
  }
  return static_cast<double>(utime + stime) / static_cast<double>(ticksPerSecond);
}

std::optional<ProcessIds> parseProcStatIds(std::string_view statText) {
  auto ppidText = procStatField(statText, 4);
  auto pgidText = procStatField(statText, 5);
  std::uint64_t ppid = 0, pgid = 0;
  if (!ppidText || !pgidText || !parseNumber(*ppidText, &ppid) || !parseNumber(*pgidText, &pgid)) {
    return std::nullopt;
  }
  return ProcessIds{static_cast<pid_t>(ppid), static_cast<pid_t>(pgid)};
}

std::size_t countLines(std::string_view text) {
  std::size_t n = static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
  if (!text.empty() && text.back() != '\n') ++n;
  return n;
}

ProcReader::ProcReader(std::string procRoot)
    : procRoot_(std::move(procRoot)),
      root_(::open(procRoot_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)),
      ticksPerSecond_(::sysconf(_SC_CLK_TCK)),
      buffer_(new char[kBufferSize]) {}

ProcReader::~ProcReader() = default;
ProcReader::ProcReader(ProcReader&&) noexcept = default;
ProcReader& ProcReader::operator=(ProcReader&&) noexcept = default;

std::optional<ProcSample> ProcReader::sample(pid_t pid, bool readMaps) const {
  if (pid <= 0) return std::nullopt;
  // One directory fd for the pid, then openat: every file read belongs to the same process even
  // if the pid were recycled meanwhile (reads through a stale /proc/PID fd fail with ESRCH).
  char path[64];
  auto [end, ec] = std::to_chars(path, path + sizeof path - 1, pid);
  *end = '\0';
  if (!root_.valid()) return std::nullopt;
  UniqueFd dir(::openat(root_.get(), path, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) return std::nullopt;

  char* buf = buffer_.get();
  ProcSample out;

  ssize_t n = readSmallFile(dir.get(), "status", buf, kBufferSize);
  if (n < 0) return std::nullopt;
  auto status = parseProcStatus(std::string_view(buf, static_cast<std::size_t>(n)));
  if (!status || status->exited) return std::nullopt;
  out.rssBytes = status->rssBytes;
  out.threads = status->threads;

  n = readSmallFile(dir.get(), "stat", buf, kBufferSize);
  if (n < 0) return std::nullopt;
  auto cpu =
      parseProcStatCpuSeconds(std::string_view(buf, static_cast<std::size_t>(n)), ticksPerSecond_);
  if (!cpu) return std::nullopt;
  out.cpuSeconds = *cpu;

  long fds = countFds(dir.get(), buf, kBufferSize);
  if (fds < 0 && isGoneErrno(static_cast<int>(-fds))) return std::nullopt;
  out.fds = fds < 0 ? -1 : static_cast<int>(fds);

  if (readMaps) {
    long maps = countMapsLines(dir.get(), buf, kBufferSize);
    if (maps < 0 && isGoneErrno(static_cast<int>(-maps))) return std::nullopt;
    out.maps = maps < 0 ? -1 : static_cast<int>(maps);
  }
  return out;
}

std::optional<ProcessIds> ProcReader::ids(pid_t pid) const {
  if (pid <= 0 || !root_.valid()) return std::nullopt;
  char path[64];
  auto [end, ec] = std::to_chars(path, path + sizeof path - 1, pid);
  *end = '\0';
  UniqueFd dir(::openat(root_.get(), path, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) return std::nullopt;
  char* buf = buffer_.get();
  ssize_t n = readSmallFile(dir.get(), "stat", buf, kBufferSize);
  if (n < 0) return std::nullopt;
  return parseProcStatIds(std::string_view(buf, static_cast<std::size_t>(n)));
}

}  // namespace bulkhead::os
