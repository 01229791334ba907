// Terminal output and file helpers of `bulkhead run` (see run_output.h).

#include "run/run_output.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>

namespace bulkhead::run {

std::string replaceAll(std::string text, const std::string& from, const std::string& to) {
  for (std::size_t at = text.find(from); at != std::string::npos;
       at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

void writeAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

int readMaxMapCount() {
  int fd = ::open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 65530;
  char text[32] = {};
  ssize_t n = ::read(fd, text, sizeof text - 1);
  ::close(fd);
  int value = n > 0 ? std::atoi(text) : 0;
  return value > 0 ? value : 65530;
}

std::optional<std::string> readSmallFile(const std::string& path, bool* tooLarge) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buffer, static_cast<std::size_t>(n));
    if (out.size() > kResultLimit) {
      *tooLarge = true;
      break;
    }
  }
  ::close(fd);
  return out;
}

void Progress::erase() {
  if (!tty_ || drawn_ == 0) return;
  writeAll(2, "\x1b[" + std::to_string(drawn_) + "F\x1b[J");
  drawn_ = 0;
}

void Progress::draw(const std::vector<std::string>& lines) {
  erase();
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  writeAll(2, text);
  drawn_ = static_cast<int>(lines.size());
}

void Progress::note(const std::string& line) {
  erase();
  writeAll(2, "[run] " + line + "\n");
}

}  // namespace bulkhead::run
