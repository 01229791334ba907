"""The private supervisor of a ``bulkhead.Executor``: finding the binary, starting
``bulkhead serve --stop-when-stdin-closes`` on a Unix socket in a private temp dir, waiting for
it to listen, and stopping it (the Executor keeps the write end of its stdin: if the owner dies,
even by SIGKILL, the daemon drains and exits, and its workers with it)."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from ._executor_config import render_toml
from .errors import BulkheadError

DEFAULT_STOP_TIMEOUT = 60.0
_LISTEN_RE = re.compile(r"listening on (unix:[^\s\"']+)")


class ExecutorStartError(BulkheadError):
    """The private supervisor did not start (bad option, binary missing, workers never ready).
    ``log`` is the tail of its log."""

    def __init__(self, message, log=""):
        BulkheadError.__init__(self, message)
        self.log = log

    def __str__(self):
        text = self.args[0]
        if self.log:
            text += "\n--- bulkhead log (tail) ---\n" + self.log
        return text


def find_binary(explicit=None):
    """``$BULKHEAD_BIN``, then ``bulkhead_bin=``, then ``build/bulkhead`` of a checkout, then
    ``bulkhead`` on PATH."""
    candidates = []
    env = os.environ.get("BULKHEAD_BIN")
    if env:
        candidates.append(("$BULKHEAD_BIN", env))
    if explicit:
        candidates.append(("bulkhead_bin=", explicit))
    here = os.path.dirname(os.path.abspath(__file__))
    candidates.append(("checkout", os.path.join(here, "..", "..", "build", "bulkhead")))
    for what, path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.abspath(path)
        if what != "checkout":
            raise ExecutorStartError("bulkhead binary from %s not found or not executable: %s"
                                     % (what, path))
    found = shutil.which("bulkhead")
    if found:
        return found
    raise ExecutorStartError(
        "bulkhead binary not found: set $BULKHEAD_BIN, pass bulkhead_bin=, build the checkout "
        "(build/bulkhead) or put `bulkhead` on PATH")


class _Daemon(object):
    """A private ``bulkhead serve``: its process, temp dir and log.  ``stop()`` is idempotent
    and safe from a finalizer."""

    def __init__(self, binary, pool_keys, pool_name, start_timeout):
        self.dir = tempfile.mkdtemp(prefix="bkx-", dir="/tmp")
        self.sock = os.path.join(self.dir, "s.sock")
        self.config = os.path.join(self.dir, "bulkhead.toml")
        self.log_path = os.path.join(self.dir, "bulkhead.log")
        self.proc = None
        self._stopped = False
        server = {"listen": "unix:" + self.sock, "journal": "",
                  "max_request_body": pool_keys.get("max_payload", "1GiB")}
        with open(self.config, "w") as f:
            f.write(render_toml(server, {pool_name: pool_keys}))
        self._log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [binary, "serve", "-c", self.config, "--stop-when-stdin-closes"],
                stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT,
                cwd=self.dir, start_new_session=True, close_fds=True)
        except OSError as exc:
            self.stop()
            raise ExecutorStartError("cannot start %s: %s" % (binary, exc))

    def log_tail(self, size=4000):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - size))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_listening(self, deadline):
        while True:
            if self.proc.poll() is not None:
                raise ExecutorStartError("bulkhead exited with status %s during start-up"
                                         % self.proc.returncode, self.log_tail())
            try:
                with open(self.log_path, "rb") as f:
                    m = _LISTEN_RE.search(f.read().decode("utf-8", "replace"))
            except OSError:
                m = None
            if m:
                return m.group(1).rstrip(".,;")
            if time.monotonic() > deadline:
                raise ExecutorStartError("bulkhead did not listen within the start timeout",
                                         self.log_tail())
            time.sleep(0.01)

    def stop(self, timeout=DEFAULT_STOP_TIMEOUT):
        if self._stopped:
            return
        self._stopped = True
        proc = self.proc
        if proc is not None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()   # --stop-when-stdin-closes: drain and exit
            except OSError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout)
                except (subprocess.TimeoutExpired, OSError):
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except OSError:
                        pass
                    proc.wait()
        try:
            self._log.close()
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
