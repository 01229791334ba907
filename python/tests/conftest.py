"""Shared fixtures: a real worker process on a socketpair, and a tiny HTTP peer for the client.

No test sleeps to synchronise: every wait is a poll() on a socket, pipe or pidfd with a bound.
"""

import os
import select
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import ThreadingUnixStreamServer

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
PY_DIR = os.path.dirname(TESTS_DIR)
if PY_DIR not in sys.path:
    sys.path.insert(0, PY_DIR)

from bulkhead import _protocol as P  # noqa: E402

# The interpreter workers run under: the one running the tests (Debian's /usr/bin/python3 in CI).
PYTHON = os.environ.get("BULKHEAD_TEST_PYTHON", sys.executable)
WAIT = 15.0  # upper bound of every wait; tests normally finish their waits in milliseconds


def _exit_code(status):
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _wait_readable(fd, timeout):
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(timeout * 1000))


class WorkerProcess(object):
    """``python -m bulkhead.worker`` with a socketpair on fd 3 and a pipe on fd 4, like the
    supervisor starts it (docs/protocol.md), driven frame by frame by the test."""

    def __init__(self, tmp_path, handler, preload="", env=None, stdout_pipe=False, name="w"):
        self.sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.stacks_r, stacks_w = os.pipe()
        self.stdout_path = str(tmp_path / ("%s.stdout" % name))
        self.stderr_path = str(tmp_path / ("%s.stderr" % name))
        out_fd = os.open(self.stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                         0o600)
        err_fd = os.open(self.stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                         0o600)
        self.stdout_r = None
        if stdout_pipe:
            self.stdout_r, pipe_w = os.pipe()
            os.close(out_fd)
            out_fd = pipe_w
        # dup2(fd, fd) would keep FD_CLOEXEC set: make sure every source is above the targets.
        import fcntl
        sources = []
        for fd in (out_fd, err_fd, child.fileno(), stacks_w):
            sources.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join((PY_DIR, TESTS_DIR)),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "BULKHEAD_CONTROL_FD": "3",
            "BULKHEAD_STACKS_FD": "4",
            "BULKHEAD_DUMP_SIGNAL": str(int(signal.SIGUSR2)),
            "BULKHEAD_HANDLER": handler,
            "BULKHEAD_PRELOAD": preload,
            "BULKHEAD_POOL": "testpool",
            "BULKHEAD_WORKER_ID": "testpool-1",
            "BULKHEAD_MAX_FRAME": str(P.DEFAULT_MAX_PAYLOAD),
        }
        full_env.update(env or {})
        full_env = {k: v for k, v in full_env.items() if v is not None}
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, sources[0], 1),
            (os.POSIX_SPAWN_DUP2, sources[1], 2),
            (os.POSIX_SPAWN_DUP2, sources[2], 3),
            (os.POSIX_SPAWN_DUP2, sources[3], 4),
        ]
        try:
            self.pid = os.posix_spawn(PYTHON, [PYTHON, "-m", "bulkhead.worker"], full_env,
                                      file_actions=actions)
        finally:
            for fd in sources + [out_fd, err_fd, stacks_w]:
                os.close(fd)
            child.close()
        self.pidfd = os.pidfd_open(self.pid) if hasattr(os, "pidfd_open") else None
        self.returncode = None
        self.decoder = P.FrameDecoder(P.WORKER_TO_SUPERVISOR)
        self.stacks = b""
        self.stdout = b""

    # -- frames

    def send(self, frame_type, job_id=0, body=b""):
        self.sock.sendall(P.encode_frame(frame_type, job_id, body))

    def send_raw(self, data):
        self.sock.sendall(data)

    def read_frame(self, timeout=WAIT):
        """The next frame from the worker; None at EOF.  Fails the test after ``timeout``."""
        while True:
            frame = self.decoder.next()
            if frame is not None or self.decoder.eof:
                return frame
            if not _wait_readable(self.sock.fileno(), timeout):
                raise AssertionError("no frame from the worker within %s s; stderr:\n%s"
                                     % (timeout, self.read_stderr()))
            data = self.sock.recv(1 << 20)
            if data:
                self.decoder.feed(data)
            else:
                self.decoder.feed_eof()

    def expect(self, frame_type, job_id=None, timeout=WAIT):
        frame = self.read_frame(timeout)
        assert frame is not None, "EOF instead of %s; stderr:\n%s" % (
            P.TYPE_NAMES[frame_type], self.read_stderr())
        assert frame.type == frame_type, "expected %s, got %r; stderr:\n%s" % (
            P.TYPE_NAMES[frame_type], frame, self.read_stderr())
        if job_id is not None:
            assert frame.job_id == job_id
        return frame

    def run_job(self, job_id, payload, timeout=WAIT):
        self.send(P.JOB, job_id, payload)
        frame = self.read_frame(timeout)
        while frame is not None and frame.type == P.HEARTBEAT:
            frame = self.read_frame(timeout)
        assert frame is not None, "EOF instead of a result; stderr:\n%s" % self.read_stderr()
        assert frame.job_id == job_id
        return frame

    # -- side channels

    def read_stacks_until(self, needle, timeout=WAIT):
        return self._read_fd_until("stacks", self.stacks_r, needle, timeout)

    def read_stdout_until(self, needle, timeout=WAIT):
        return self._read_fd_until("stdout", self.stdout_r, needle, timeout)

    def _read_fd_until(self, attr, fd, needle, timeout):
        while needle not in getattr(self, attr):
            if not _wait_readable(fd, timeout):
                raise AssertionError("%r not in %s within %s s; got %r" % (
                    needle, attr, timeout, getattr(self, attr)))
            data = os.read(fd, 1 << 16)
            if not data:
                raise AssertionError("%s closed before %r appeared; got %r" % (
                    attr, needle, getattr(self, attr)))
            setattr(self, attr, getattr(self, attr) + data)
        return getattr(self, attr)

    def read_stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    # -- process

    def wait(self, timeout=WAIT):
        """The exit code (negative: killed by that signal).  Fails the test after ``timeout``."""
        if self.returncode is not None:
            return self.returncode
        if self.pidfd is not None:
            if not _wait_readable(self.pidfd, timeout):
                raise AssertionError("worker %d still running after %s s" % (self.pid, timeout))
            _, status = os.waitpid(self.pid, 0)
        else:  # pragma: no cover - kernels and Pythons without pidfd_open
            import time
            deadline = time.monotonic() + timeout
            while True:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError("worker %d still running after %s s"
                                         % (self.pid, timeout))
                time.sleep(0.005)
        self.returncode = _exit_code(status)
        return self.returncode

    def signal(self, signum):
        os.kill(self.pid, signum)

    def kill(self):
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait()

    def close(self):
        self.kill()
        self.sock.close()
        for fd in (self.stacks_r, self.stdout_r, self.pidfd):
            if fd is not None:
                os.close(fd)


@pytest.fixture
def spawn_worker(tmp_path):
    """Factory: ``spawn_worker(handler, preload="", env=None, stdout_pipe=False)``."""
    workers = []

    def spawn(handler, preload="", env=None, stdout_pipe=False):
        proc = WorkerProcess(tmp_path, handler, preload, env, stdout_pipe,
                             name="w%d" % len(workers))
        workers.append(proc)
        return proc

    yield spawn
    for proc in workers:
        proc.close()


@pytest.fixture
def ready_worker(spawn_worker):
    """Factory: a worker that already sent HELLO and READY."""
    def start(handler="handlers_for_tests:echo", preload="", env=None, stdout_pipe=False):
        proc = spawn_worker(handler, preload, env, stdout_pipe)
        proc.expect(P.HELLO)
        proc.expect(P.READY)
        return proc
    return start


# -- the HTTP peer of the client -------------------------------------------------------------


class FakeDaemon(object):
    """A tiny HTTP/1.1 keep-alive server standing in for the daemon's API.

    ``routes[(method, path)]`` is a function ``(request) -> (status, headers, body)`` or such a
    tuple; ``request`` has ``method``, ``path``, ``headers``, ``body``, ``connection`` (an id).
    ``close_after_response`` closes the connection after each response without announcing it (an
    idle keep-alive connection dropped by the server).  Requests are recorded in ``requests``.
    """

    def __init__(self, unix_path=None):
        self.routes = {}
        self.requests = []
        self.connections = 0
        self.close_after_response = False
        self.release = threading.Event()   # set at teardown: frees handlers that wait on it
        daemon = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                with lock:
                    daemon.connections += 1
                    self.connection_id = daemon.connections

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(self.command, self.path, self.headers, body,
                                  self.connection_id, self.wfile)
                with lock:
                    daemon.requests.append(request)
                route = daemon.routes.get((self.command, self.path))
                if route is None:
                    response = (404, {"Content-Type": "application/problem+json"},
                                b'{"status":404,"error":"not_found","title":"no route"}')
                elif callable(route):
                    response = route(request)
                else:
                    response = route
                if response is None:        # the route wrote (or broke) the response itself
                    self.close_connection = True
                    return
                status, headers, payload = response
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
                if daemon.close_after_response:
                    self.close_connection = True

            do_GET = do_POST = do_DELETE = _handle

        lock = threading.Lock()
        self.Handler = Handler
        if unix_path is None:
            self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        else:
            class UnixHandler(Handler):
                def address_string(self):
                    return "unix"
            self.server = ThreadingUnixStreamServer(unix_path, UnixHandler)
            self.url = "unix:" + unix_path
        self.server.daemon_threads = True
        self.closed = 0
        self._closed_cond = threading.Condition()
        close_request = self.server.shutdown_request

        def shutdown_request(request):
            close_request(request)
            with self._closed_cond:
                self.closed += 1
                self._closed_cond.notify_all()
        self.server.shutdown_request = shutdown_request
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def wait_closed(self, count, timeout=WAIT):
        """Wait until the server has closed ``count`` connections."""
        with self._closed_cond:
            if not self._closed_cond.wait_for(lambda: self.closed >= count, timeout):
                raise AssertionError("server closed %d connections, expected %d"
                                     % (self.closed, count))

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(WAIT)


class Request(object):
    def __init__(self, method, path, headers, body, connection, wfile):
        self.wfile = wfile
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.connection = connection


@pytest.fixture
def daemon():
    server = FakeDaemon()
    yield server
    server.close()


@pytest.fixture
def unix_daemon(tmp_path):
    server = FakeDaemon(unix_path=str(tmp_path / "bulkhead.sock"))
    yield server
    server.close()
