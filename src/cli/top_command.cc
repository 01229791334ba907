// `bulkhead top`: options, fetching, the refresh loop and the terminal (see top_command.h).
//
// The live view owns the terminal while it runs: alternate screen, hidden cursor, input without
// echo or line buffering (q quits without Enter). Terminal, an RAII guard, puts all of it back on
// every way out: q, Ctrl-C, SIGTERM or SIGHUP (then the process dies by that signal, as whoever
// sent it expects), Ctrl-Z (until fg), an exception. Signals reach the loop through a self-pipe,
// so one poll() waits for a key, a signal and the next refresh at once. A fetch that hangs (a
// stopped daemon's kernel accepts the connection, nobody answers) is cut by an interval timer:
// SIGALRM interrupts the blocking socket call (man 7 signal: without SA_RESTART, recv fails with
// EINTR).

#include "cli/top_command.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <system_error>

#include "cli/exit_codes.h"
#include "cli/http_client.h"
#include "cli/top_view.h"
#include "config/units.h"

namespace bulkhead::cli {

struct TopCommand {
  CLI::App* app = nullptr;
  std::string url;
  std::string interval = "1s";
  bool once = false;
};

namespace {

constexpr double kShortestInterval = 0.1;
constexpr double kOnceTimeout = 10;

const char* const kHelpFooter = R"(Examples:
  bulkhead top --url http://127.0.0.1:8787 --interval 2s
  bulkhead top --once | grep crashed

Keys: q (or Ctrl-C) quits. Jobs/s come from the counters' change between two refreshes. While
the daemon does not answer, the view says so and keeps trying.

Exit codes:
  0  quit with q or Ctrl-C; or one frame printed (--once, or stdout not a terminal)
  2  bad usage (e.g. --interval)
  3  --once (or stdout not a terminal) and the daemon did not answer
  128+N  ended by SIGTERM (143) or SIGHUP (129), after restoring the terminal)";

double monotonicSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// ---------------------------------------------------------------- fetching

volatile sig_atomic_t gFetchTimedOut = 0;
void onFetchAlarm(int) { gFetchTimedOut = 1; }

timeval toTimeval(double seconds) {
  auto micros = static_cast<long long>(seconds * 1e6);
  return {static_cast<time_t>(micros / 1000000), static_cast<suseconds_t>(micros % 1000000)};
}

struct Fetched {
  std::optional<nlohmann::json> answer;
  std::string error;
};

// GET /v1/pools within `timeoutSeconds`, however the daemon behaves.
Fetched fetchPools(const std::string& url, double timeoutSeconds) {
  struct sigaction alarm {
  }, previous{};
  alarm.sa_handler = onFetchAlarm;
  sigemptyset(&alarm.sa_mask);
  alarm.sa_flags = 0;  // no SA_RESTART: the blocked socket call must return EINTR
  ::sigaction(SIGALRM, &alarm, &previous);
  gFetchTimedOut = 0;
  // Fires at the deadline, then every 100 ms: an expiry that falls between two socket calls
  // would otherwise leave the next one blocked forever.
  itimerval timer{toTimeval(0.1), toTimeval(timeoutSeconds)};
  ::setitimer(ITIMER_REAL, &timer, nullptr);
  Fetched out;
  try {
    HttpResult res = httpRequest(url, "GET", "/v1/pools", "", {}, timeoutSeconds);
    auto body = nlohmann::json::parse(res.body, nullptr, false);
    if (res.status != 200) {
      out.error = "HTTP " + std::to_string(res.status) + " from " + url + "/v1/pools";
    } else if (body.is_discarded() || !body.is_object() || !body.contains("pools")) {
      out.error = url + "/v1/pools: not a bulkhead answer";
    } else {
      out.answer = std::move(body);
    }
  } catch (const std::exception& e) {
    out.error = e.what();
  }
  itimerval off{};
  ::setitimer(ITIMER_REAL, &off, nullptr);
  ::sigaction(SIGALRM, &previous, nullptr);
  if (gFetchTimedOut && !out.answer) {
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%g", timeoutSeconds);
    out.error = "no answer from " + url + " within " + seconds + "s";
  }
  return out;
}

// ---------------------------------------------------------------- the terminal

struct TerminalSize {
  int width = 80, height = 24;
};

TerminalSize terminalSize() {
  winsize ws{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
    return {ws.ws_col, ws.ws_row};
  }
  return {};
}

// Writes all of `bytes` to stdout; false when the terminal is gone.
bool writeAll(const std::string& bytes) {
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(STDOUT_FILENO, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// The alternate screen, a hidden cursor, and keys read one by one without echo, for as long as
// it is alive (or until leave()).
class Terminal {
 public:
  Terminal() : inputIsTerminal_(::tcgetattr(STDIN_FILENO, &saved_) == 0) { enter(); }
  ~Terminal() { leave(); }
  Terminal(const Terminal&) = delete;
  Terminal& operator=(const Terminal&) = delete;

  void enter() {
    if (active_) return;
    if (inputIsTerminal_) {
      termios keys = saved_;
      keys.c_lflag &= ~(ICANON | ECHO);  // ISIG stays: Ctrl-C and Ctrl-Z arrive as signals
      keys.c_cc[VMIN] = 1;
      keys.c_cc[VTIME] = 0;
      ::tcsetattr(STDIN_FILENO, TCSANOW, &keys);
    }
    active_ = true;
    if (!writeAll("\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J")) throw std::runtime_error("stdout closed");
  }

  void leave() noexcept {
    if (!active_) return;
    active_ = false;
    writeAll("\x1b[?25h\x1b[?1049l");
    if (inputIsTerminal_) ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }

  // One frame in one write, drawn over the last: each row is cleared just before its text (no
  // blank screen in between, so no flicker), and what is below the last row is cleared.
  void draw(const std::vector<std::string>& lines, int height) {
    std::string frame = "\x1b[H";
    for (std::size_t i = 0; i < lines.size(); ++i) {
      // Clearing before the text, not after it: after a full-width row the cursor waits on the
      // last column, where "clear to end of line" would erase that column's character.
      frame += "\x1b[K" + lines[i];
      if (i + 1 < lines.size()) frame += "\r\n";
    }
    if (static_cast<int>(lines.size()) < height) frame += "\r\n\x1b[J";
    if (!writeAll(frame)) throw std::runtime_error("stdout closed");
  }

 private:
  termios saved_{};
  bool inputIsTerminal_;
  bool active_ = false;
};

// ---------------------------------------------------------------- signals

int gSignalPipe[2] = {-1, -1};

void relaySignal(int signal) {
  int saved = errno;
  auto byte = static_cast<unsigned char>(signal);
  [[maybe_unused]] ssize_t n = ::write(gSignalPipe[1], &byte, 1);
  errno = saved;
}

// Turns the signals the live view answers into bytes on a pipe the loop polls.
class SignalRelay {
 public:
  SignalRelay() {
    if (::pipe2(gSignalPipe, O_CLOEXEC | O_NONBLOCK) != 0) {
      throw std::system_error(errno, std::generic_category(), "pipe2");
    }
    // Quitting signals interrupt a fetch in progress (no SA_RESTART); the others let it finish.
    install(SIGINT, false);
    install(SIGTERM, false);
    install(SIGHUP, false);
    install(SIGWINCH, true);
    install(SIGTSTP, true);
  }
  ~SignalRelay() {
    for (const auto& [signal, action] : previous_) ::sigaction(signal, &action, nullptr);
    ::close(gSignalPipe[0]);
    ::close(gSignalPipe[1]);
    gSignalPipe[0] = gSignalPipe[1] = -1;
  }
  SignalRelay(const SignalRelay&) = delete;
  SignalRelay& operator=(const SignalRelay&) = delete;

  int fd() const { return gSignalPipe[0]; }

  std::vector<int> drain() {
    std::vector<int> signals;
    unsigned char bytes[64];
    ssize_t n;
    while ((n = ::read(gSignalPipe[0], bytes, sizeof bytes)) > 0) {
      signals.insert(signals.end(), bytes, bytes + n);
    }
    return signals;
  }

  // Stops the process as Ctrl-Z asked, the terminal already given back; returns after fg.
  static void suspend() {
    struct sigaction ours {};
    ::sigaction(SIGTSTP, nullptr, &ours);
    ::signal(SIGTSTP, SIG_DFL);
    ::raise(SIGTSTP);
    ::sigaction(SIGTSTP, &ours, nullptr);
  }

 private:
  void install(int signal, bool restart) {
    struct sigaction action {
    }, previous{};
    action.sa_handler = relaySignal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = restart ? SA_RESTART : 0;
    ::sigaction(signal, &action, &previous);
    previous_.emplace_back(signal, previous);
  }

  std::vector<std::pair<int, struct sigaction>> previous_;
};

// ---------------------------------------------------------------- the two modes

int printOnce(const std::string& url) {
  Fetched fetched = fetchPools(url, kOnceTimeout);
  if (!fetched.answer) {
    std::fprintf(stderr, "bulkhead top: %s\n", fetched.error.c_str());
    return kExitCannotConnect;
  }
  TopSnapshot snapshot{std::move(*fetched.answer), monotonicSeconds()};
  TopFrameInput input;
  input.url = url;
  input.current = &snapshot;
  input.live = false;
  // On a terminal the frame fits its width; into a pipe or file nothing is cut.
  input.width = ::isatty(STDOUT_FILENO) ? terminalSize().width : 1 << 20;
  input.height = 0;
  for (const auto& line : renderTopFrame(input)) std::printf("%s\n", line.c_str());
  return 0;
}

int runLive(const std::string& url, double interval) {
  SignalRelay signals;
  Terminal terminal;
  std::optional<TopSnapshot> current, previous;
  std::optional<TopOutage> outage;
  double downSince = 0, nextFetch = 0;
  bool watchKeys = true, redraw = false;
  // A slow daemon is still a daemon: allow it more than one interval to answer.
  const double fetchTimeout = std::clamp(2 * interval, 2.0, 10.0);
  for (;;) {
    if (monotonicSeconds() >= nextFetch) {
      Fetched fetched = fetchPools(url, fetchTimeout);
      double at = monotonicSeconds();
      if (fetched.answer) {
        previous = std::move(current);
        current = TopSnapshot{std::move(*fetched.answer), at};
        outage.reset();
      } else {
        if (!outage) outage = TopOutage{};
        if (outage->tries++ == 0) downSince = at;
        outage->error = fetched.error;
        outage->downForSeconds = at - downSince;
      }
      nextFetch = at + interval;
      redraw = true;
    }
    if (redraw) {
      TerminalSize size = terminalSize();
      TopFrameInput input;
      input.url = url;
      input.current = current ? &*current : nullptr;
      input.previous = previous ? &*previous : nullptr;
      input.outage = outage ? &*outage : nullptr;
      input.width = size.width;
      input.height = size.height;
      terminal.draw(renderTopFrame(input), size.height);
      redraw = false;
    }
    pollfd fds[2] = {{signals.fd(), POLLIN, 0}, {watchKeys ? STDIN_FILENO : -1, POLLIN, 0}};
    auto waitMs = static_cast<int>(std::ceil(std::max(0.0, nextFetch - monotonicSeconds()) * 1e3));
    if (::poll(fds, 2, waitMs) < 0 && errno != EINTR) {
      throw std::system_error(errno, std::generic_category(), "poll");
    }
    if (fds[1].revents != 0) {
      char keys[64];
      ssize_t n = ::read(STDIN_FILENO, keys, sizeof keys);
      if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) watchKeys = false;  // no keys
      for (ssize_t i = 0; i < n; ++i) {
        if (keys[i] == 'q' || keys[i] == 'Q') return 0;
      }
    }
    for (int signal : signals.drain()) {
      if (signal == SIGINT) return 0;
      if (signal == SIGTERM || signal == SIGHUP) {
        terminal.leave();
        ::signal(signal, SIG_DFL);
        ::raise(signal);
        return 128 + signal;  // only if the signal is blocked
      }
      if (signal == SIGTSTP) {
        terminal.leave();
        SignalRelay::suspend();
        terminal.enter();
      }
      redraw = true;  // SIGWINCH: the same snapshot at the new size; after fg: the whole screen
    }
  }
}

}  // namespace

std::shared_ptr<TopCommand> addTopCommand(CLI::App& app) {
  auto c = std::make_shared<TopCommand>();
  const char* url = std::getenv("BULKHEAD_URL");
  c->url = url && *url ? url : "http://127.0.0.1:8787";
  CLI::App* top = app.add_subcommand(
      "top", "live view of a running daemon: pools, workers, last failures (docs/top.md)");
  c->app = top;
  top->add_option("--url", c->url,
                  "supervisor URL (default $BULKHEAD_URL or http://127.0.0.1:8787)");
  top->add_option("--interval", c->interval, "time between refreshes (default 1s, at least 100ms)");
  top->add_flag("--once", c->once,
                "print one plain frame and exit (what happens too when stdout is not a terminal)");
  top->footer(kHelpFooter);
  return c;
}

bool topChosen(const TopCommand& c) { return c.app && c.app->parsed(); }

int executeTop(const TopCommand& c) {
  auto interval = config::parseDuration(c.interval);
  double seconds = interval ? std::chrono::duration<double>(*interval).count() : 0;
  if (!interval || seconds < kShortestInterval || seconds > 3600) {
    std::fprintf(stderr, "bulkhead top: bad --interval '%s' (100ms to 1h, e.g. 1s, 500ms)\n",
                 c.interval.c_str());
    return kExitBadConfig;
  }
  if (c.once || !::isatty(STDOUT_FILENO)) return printOnce(c.url);
  return runLive(c.url, seconds);
}

}  // namespace bulkhead::cli
