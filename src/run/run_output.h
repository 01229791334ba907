#pragma once
// The terminal side of `bulkhead run`: the live block of step lines on stderr (redrawn in place on
// a terminal, plain "[run] ..." lines otherwise) and small file helpers the runner needs.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bulkhead::run {

inline constexpr std::size_t kResultLimit = 1 << 20;

// Every `from` in text replaced by `to` ({step} in the command's arguments).
std::string replaceAll(std::string text, const std::string& from, const std::string& to);
// write(2) until done or error (EINTR retried).
void writeAll(int fd, std::string_view bytes);
// /proc/sys/vm/max_map_count (65530 when unreadable).
int readMaxMapCount();
// A file of at most kResultLimit bytes; *tooLarge when longer. nullopt when it does not exist.
std::optional<std::string> readSmallFile(const std::string& path, bool* tooLarge);

// Live lines on stderr: a block redrawn in place when stderr is a terminal; step output passes
// through after the block is erased.
class Progress {
 public:
  explicit Progress(bool tty) : tty_(tty) {}
  bool tty() const { return tty_; }
  void erase();
  void draw(const std::vector<std::string>& lines);
  void note(const std::string& line);  // "[run] line", above the block

 private:
  bool tty_;
  int drawn_ = 0;
};

}  // namespace bulkhead::run
