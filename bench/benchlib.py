"""Helpers shared by the benchmark scripts (e2e_peers.py, resource_guard.py, async_journal.py).

The scripts run as `/usr/bin/python3 bench/<script>.py`, so bench/ is sys.path[0] and they
`import benchlib` / `from benchlib import ...`.  Standard library only (Debian's /usr/bin/python3).

- paths: HERE (bench/), ROOT (the repository), BIN (build/bulkhead), HANDLERS (bench/handlers),
  PYTHON (/usr/bin/python3), MIB;
- log(): "[TAG  seconds since start] message" on stderr (set_log_tag() picks TAG);
- /proc: loadavg(), meminfo_kb(), proc_status_kb(), cpu_seconds(), cpu_seconds_sum();
- numbers: percentile() (nearest rank), pct() (the same of seconds, in ms), fmt();
- the machine and the tree: cpu_model(), debian_version(), ram_line(), machine_line(),
  git_desc();
- Daemon: one `build/bulkhead serve -c CONFIG` from a config written for it (listen on
  127.0.0.1:0; the port is read from its "listening on http://..." log line), /healthz and idle
  workers waited for with deadlines, control requests on one http.client connection, stopped
  with SIGTERM; kill_daemons() SIGKILLs the ones not stopped yet (on the way out).
"""

import http.client
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, "build", "bulkhead")
HANDLERS = os.path.join(HERE, "handlers")
PYTHON = "/usr/bin/python3"
MIB = 1 << 20

T0 = time.monotonic()
_log_tag = "bench"


def set_log_tag(tag):
    """The TAG of log()'s lines (one per script: "bench", "guard", "journal")."""
    global _log_tag
    _log_tag = tag


def log(msg):
    print("[%s %7.1fs] %s" % (_log_tag, time.monotonic() - T0, msg), file=sys.stderr, flush=True)


# -- /proc --------------------------------------------------------------------------------------

def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def meminfo_kb(field):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def proc_status_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


_RAISE = object()


def cpu_seconds(pid, default=_RAISE):
    """utime+stime of the process (all its threads), seconds (clock-tick resolution).
    A process that is gone raises OSError, or returns `default` when one is given."""
    try:
        ticks = _cpu_ticks(pid)
    except OSError:
        if default is _RAISE:
            raise
        return default
    return ticks / float(os.sysconf("SC_CLK_TCK"))


def cpu_seconds_sum(pids):
    """utime+stime of these processes, seconds; processes that are gone count 0."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            total += _cpu_ticks(pid)
        except OSError:
            pass
    return total / float(tick)


# -- numbers ------------------------------------------------------------------------------------

def percentile(samples, q):
    """Nearest-rank percentile, in the samples' unit."""
    if not samples:
        return float("nan")
    s = sorted(samples)
    k = max(0, min(len(s) - 1, int(round(q / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def pct(samples, q):
    """Nearest-rank percentile of a list of seconds, in ms."""
    return percentile(samples, q) * 1000.0


def fmt(x, nd=2):
    """A number for a table: "-" for None/NaN, 1,234 / 123 / 12.3 / 1.23 (nd decimals below 10)."""
    if x is None or x != x:
        return "-"
    if abs(x) >= 1000:
        return "{:,.0f}".format(x)
    if abs(x) >= 100:
        return "%.0f" % x
    if abs(x) >= 10:
        return "%.1f" % x
    return ("%%.%df" % nd) % x


# -- the machine and the tree -------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def debian_version():
    try:
        with open("/etc/debian_version") as f:
            return f.read().strip()
    except OSError:
        return "?"


def ram_line():
    kb = meminfo_kb("MemTotal")
    return "?" if kb is None else "%.1f GB RAM" % (kb / 1e6)


def begin_run(cfg, built_note=""):
    """The start of a bench run: SIGTERM stops it like ^C (so daemons are stopped on the way
    out); cfg gets "bin_desc" (the binary and when it was built) and "load_start"."""
    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    st = os.stat(cfg["bin"])
    cfg["bin_desc"] = "%s (built %s%s)" % (
        cfg["bin"], time.strftime("%Y-%m-%d %H:%M", time.localtime(st.st_mtime)), built_note)
    cfg["load_start"] = loadavg()
    log("machine: %s; load average %s; MemAvailable %.1f GB"
        % (machine_line(ram=True), cfg["load_start"], meminfo_kb("MemAvailable") / 1e6))


def run_and_report(cfg, tmpdir, keep, run, report):
    """Runs run(); SIGKILLs leftover daemons either way; keeps tmpdir when it fails. Then prints
    report()'s text (it returns (text, ok)), writes it to tmpdir/result.md when keep, else
    removes tmpdir. Returns the exit status: 0 when every target was met."""
    try:
        run()
    except BaseException:
        log("failed; configs and logs kept in %s" % tmpdir)
        raise
    finally:
        kill_daemons()
    cfg["load_end"] = loadavg()
    text, ok = report()
    print(text, flush=True)
    log("total %.0f s" % (time.monotonic() - T0))
    if keep:
        with open(os.path.join(tmpdir, "result.md"), "w") as f:
            f.write(text + "\n")
        log("configs, logs and result.md kept in %s" % tmpdir)
    else:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return 0 if ok else 1


def machine_line(ram=False):
    """nproc, CPU model, [RAM,] kernel, Debian and Python versions."""
    return "nproc %d, %s, %skernel %s, Debian %s, Python %s" % (
        os.cpu_count(), cpu_model(), ram_line() + ", " if ram else "", platform.release(),
        debian_version(), platform.python_version())


def git_desc(dirty_word="with"):
    """HEAD's short hash, plus " <dirty_word> uncommitted changes in src/" if src/ is dirty."""
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, timeout=10).stdout.strip()
        return head + (" %s uncommitted changes in src/" % dirty_word if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


# -- the daemon ---------------------------------------------------------------------------------

class RawJobConnection:
    """One keep-alive connection that posts echo jobs to a pool with hand-built HTTP and the
    least parsing that still checks the answer (no http.client): what a client cannot go below.
    ``sock`` is connected; ``extra_headers`` are whole header lines ("Name: value\\r\\n")."""

    def __init__(self, sock, pool, extra_headers=""):
        self.sock = sock
        self.head = ("POST /v1/pools/%s/jobs HTTP/1.1\r\nHost: x\r\n%s"
                     "Content-Type: application/octet-stream\r\nContent-Length: "
                     % (pool, extra_headers)).encode()
        self.buf = b""

    def call(self, payload):
        self.sock.sendall(self.head + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        buf = self.buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        head = buf[:end + 2]
        i = head.lower().find(b"content-length:")
        n = int(head[i + 15:head.find(b"\r\n", i)])
        body_end = end + 4 + n
        while len(buf) < body_end:
            buf += self.sock.recv(max(65536, body_end - len(buf)))
        self.buf = buf[body_end:]
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head[:200])
        return buf[end + 4:body_end]

    def close(self):
        self.sock.close()


LISTENING = re.compile(r"listening on (?:http://([0-9.]+):(\d+)|(unix:\S+))")


class _UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a Unix socket (a daemon listening on ``unix:/path``)."""

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        import socket
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)
DAEMONS = []   # started, not stopped or killed yet: kill_daemons() on the way out


def kill_daemons():
    for d in list(DAEMONS):
        d.kill()


class Daemon:
    """One `bulkhead serve -c CONFIG` (the config's [server] listen should be 127.0.0.1:0, or a
    ``unix:/path``: url is then that, and host and port are None).

    label starts every error message ("the daemon", "bench: daemon on"); error is the exception
    raised (SystemExit to end the bench with the message, RuntimeError to let it clean up).
    Control requests (/healthz, /v1/pools) go over one http.client connection, opened on first
    use and reopened after an error; keep_alive=False closes it after each of them."""

    def __init__(self, binary, config, text, label="the daemon", error=SystemExit,
                 http_timeout=90, keep_alive=True, stop_timeout=30):
        self.binary, self.config, self.label, self.error = binary, config, label, error
        self.http_timeout, self.keep_alive, self.stop_timeout = (http_timeout, keep_alive,
                                                                 stop_timeout)
        with open(config, "w") as f:
            f.write(text)
        self.proc = self.pid = self.log_path = self._log = None
        self.host = self.port = self.url = None
        self.conn = None

    def spawn(self, log_path):
        """Starts the daemon (own session; stdout and stderr to log_path); does not wait.
        self.spawned / self.started: time.monotonic() just before / after the Popen."""
        self.close_conn()
        if self._log is not None:
            self._log.close()
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.spawned = time.monotonic()
        self.proc = subprocess.Popen([self.binary, "serve", "-c", self.config],
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        self.started = time.monotonic()
        DAEMONS.append(self)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_healthy(self, deadline_s=30, listen_poll_s=0.02, health_poll_s=0.05):
        """Waits for the "listening on" log line (sets host, port, url), then for /healthz
        {"status": "ok"}, both within deadline_s; returns the seconds from the Popen to the log
        line.  Kills the daemon and raises self.error if one of them does not come."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self.error("%s exited with %s before listening:\n%s"
                                 % (self.label, self.proc.returncode, self.log()))
            m = LISTENING.search(self.log())
            if m:
                listening = time.monotonic() - self.spawned
                if m.group(3):
                    self.url = m.group(3)
                else:
                    self.host, self.port = m.group(1), int(m.group(2))
                    self.url = "http://%s:%d" % (self.host, self.port)
                break
            time.sleep(listen_poll_s)
        else:
            self.kill()
            raise self.error("%s did not log 'listening on' within %d s:\n%s"
                             % (self.label, deadline_s, self.log()))
        while time.monotonic() < deadline:
            try:
                if self.get_json("/healthz").get("status") == "ok":
                    return listening
            except (OSError, http.client.HTTPException, ValueError):
                self.close_conn()
            time.sleep(health_poll_s)
        self.kill()
        raise self.error("%s: /healthz not ok within %d s:\n%s"
                         % (self.label, deadline_s, self.log()))

    def close_conn(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, headers=None):
        """One request on the connection; returns (status, response, body)."""
        if self.conn is None and self.url.startswith("unix:"):
            self.conn = _UnixHTTPConnection(self.url[len("unix:"):], self.http_timeout)
        elif self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port,
                                                   timeout=self.http_timeout)
        self.conn.request(method, path, body, headers or {})
        r = self.conn.getresponse()
        return r.status, r, r.read()

    def get_json(self, path):
        """GET path, its body parsed as JSON (the connection is reopened once after an error)."""
        try:
            for attempt in (0, 1):
                try:
                    return json.loads(self.request("GET", path)[2])
                except (OSError, http.client.HTTPException):
                    self.close_conn()
                    if attempt:
                        raise
        finally:
            if not self.keep_alive:
                self.close_conn()

    def pools(self):
        """GET /v1/pools: {name: pool}."""
        return {p["name"]: p for p in self.get_json("/v1/pools")["pools"]}

    def pool(self, name):
        return self.get_json("/v1/pools/" + name)

    def worker_pids(self, pool=None):
        """The pids of the workers of one pool, or of all pools."""
        pools = self.pools()
        return [w["pid"] for name, p in pools.items() if pool is None or name == pool
                for w in p["workers"] if w.get("pid")]

    def wait_ready(self, deadline_s, poll_s=0.05, progress_s=None):
        """Waits until every pool has workers_target idle workers; returns the pools ({name:
        pool}), or None if that did not happen within deadline_s.  Raises self.error if the
        daemon dies; logs how many are idle every progress_s seconds if progress_s is given."""
        t0 = time.monotonic()
        deadline = t0 + deadline_s
        next_note = t0 + progress_s if progress_s else None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise self.error("%s died:\n%s" % (self.label, self.log()))
            pools = self.pools()
            idle = {name: len([w for w in p["workers"] if w["state"] == "idle"])
                    for name, p in pools.items()}
            if all(idle[name] >= p["workers_target"] for name, p in pools.items()):
                return pools
            if next_note is not None and time.monotonic() >= next_note:
                log("  %d of %d workers idle after %.0f s (load %s)"
                    % (sum(idle.values()), sum(p["workers_target"] for p in pools.values()),
                       time.monotonic() - t0, loadavg()))
                next_note += progress_s
            time.sleep(poll_s)
        return None

    def stop(self):
        """SIGTERM, then waits up to stop_timeout s for the exit (SIGKILL to the process group
        after that); returns the exit status, None if it had to be killed (or never started)."""
        self.close_conn()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        self._forget()
        return self.proc.returncode

    def kill(self):
        """SIGKILL to the daemon's process group: the supervisor and its workers."""
        self.close_conn()
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait()
        self._forget()

    def _forget(self):
        """Out of DAEMONS, log file closed (log() still reads it)."""
        if self in DAEMONS:
            DAEMONS.remove(self)
        if self._log is not None:
            self._log.close()
            self._log = None
