// The real CgroupHost: mkdir/rmdir/read/write under /sys/fs/cgroup, directory listings, and
// SIGKILL for what is left in a cgroup. Everything cgroups.cc decides goes through this
// interface, so tests run it on a fake file tree (tests/os/cgroups_test.cc).

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "os/cgroups.h"
#include "os/unique_fd.h"

namespace bulkhead::os {

namespace {

class LinuxCgroupHost final : public CgroupHost {
 public:
  int makeDirectory(const std::string& path) override {
    return ::mkdir(path.c_str(), 0755) == 0 ? 0 : errno;
  }
  int removeDirectory(const std::string& path) override {
    return ::rmdir(path.c_str()) == 0 ? 0 : errno;
  }
  bool exists(const std::string& path) const override { return ::access(path.c_str(), F_OK) == 0; }
  int readFile(const std::string& path, std::string* out) const override {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return errno;
    out->clear();
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      if (n == 0) return 0;
      out->append(buf, static_cast<std::size_t>(n));
    }
  }
  int writeFile(const std::string& path, std::string_view text) override {
    // No O_CREAT or O_TRUNC: cgroupfs files exist or the write is wrong. One write(2) call: the
    // kernel parses each write on its own.
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.valid()) return errno;
    ssize_t n;
    do {
      n = ::write(fd.get(), text.data(), text.size());
    } while (n < 0 && errno == EINTR);
    if (n < 0) return errno;
    return static_cast<std::size_t>(n) == text.size() ? 0 : EIO;
  }
  int openForWrite(const std::string& path, UniqueFd* out) override {
    out->reset(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    return out->valid() ? 0 : errno;
  }
  int listSubdirectories(const std::string& path, std::vector<std::string>* names) const override {
    names->clear();
    DIR* dir = ::opendir(path.c_str());
    if (!dir) return errno;
    while (dirent* e = ::readdir(dir)) {
      std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      bool isDir = e->d_type == DT_DIR;
      if (e->d_type == DT_UNKNOWN) {
        struct stat st {};
        isDir = ::fstatat(::dirfd(dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                S_ISDIR(st.st_mode);
      }
      if (isDir) names->emplace_back(name);
    }
    ::closedir(dir);
    return 0;
  }
  int killProcess(pid_t pid) override {
    if (pid <= 0) return EINVAL;          // never "every process" or a process group
    if (pid == ::getpid()) return EPERM;  // a supervisor found inside a worker cgroup is a bug
    return ::kill(pid, SIGKILL) == 0 || errno == ESRCH ? 0 : errno;
  }
  bool isAlive(pid_t pid) const override {
    return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM);
  }
  void pause(int milliseconds) override {
    timespec ts{milliseconds / 1000, (milliseconds % 1000) * 1000000L};
    while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
  }
};

}  // namespace

std::unique_ptr<CgroupHost> makeLinuxCgroupHost() { return std::make_unique<LinuxCgroupHost>(); }

}  // namespace bulkhead::os
