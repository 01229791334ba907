"""Integration fixtures: a real ``bulkhead serve`` per test, on port 0 or a temp Unix socket.

Every wait is bounded: helpers poll with a deadline, never sleep as synchronisation. A per-test
watchdog (no pytest-timeout plugin here) kills the daemons of a test that overruns, which unblocks
any request waiting on them, and fails the test.

Teardown sends SIGTERM, expects exit 0 within a bound, and checks through /proc that nothing from
the daemon's tree survives: every pool's ``env`` carries ``BULKHEAD_TEST_TAG=<unique>``, which
workers and their grandchildren inherit, and every worker pid seen in ``/v1/pools`` is recorded.
"""

import faulthandler
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("BULKHEAD_BIN", os.path.join(REPO, "build", "bulkhead"))
PYTHON = "/usr/bin/python3"

sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, HERE)

DEFAULT_TEST_LIMIT_S = 60
START_DEADLINE_S = 20
STOP_DEADLINE_S = 20

_LISTEN_RE = re.compile(r"listening on (http://[0-9.:\[\]a-zA-Z-]+|unix:[^\s\"']+)")


# -- suite-level skip -----------------------------------------------------------------------


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "limit(seconds): per-test watchdog limit (default %d s)" % DEFAULT_TEST_LIMIT_S)
    config.addinivalue_line(
        "markers", "exclusive: needs the machine's daemons to itself (it kills one with SIGKILL "
        "and checks what the next start cleans up, which any other daemon starting meanwhile "
        "would clean first); a parallel run (.ci/run) runs these alone, after the others")


def pytest_collection_modifyitems(config, items):
    if os.access(BIN, os.X_OK):
        return
    skip = pytest.mark.skip(
        reason="daemon binary %s not found: build it with `cmake -S %s -B %s/build -G Ninja && "
               "ninja -C %s/build`" % (BIN, REPO, REPO, REPO))
    for item in items:
        item.add_marker(skip)


# -- small helpers --------------------------------------------------------------------------


# -- waiting and processes (proc_helpers.py, re-exported for the tests) ---------------------

from proc_helpers import Abort, pid_alive, pid_cmdline, tagged_pids, wait_until  # noqa: E402


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join("%s = %s" % (k, _toml_value(v)) for k, v in value.items()) + " }"
    raise TypeError("cannot write %r as TOML" % (value,))


def render_config(server, pools, extra_sections=None):
    lines = ["[server]"]
    lines += ["%s = %s" % (k, _toml_value(v)) for k, v in server.items()]
    for section, keys in (extra_sections or {}).items():   # e.g. {"cluster": {...}}
        lines += ["", "[%s]" % section]
        lines += ["%s = %s" % (k, _toml_value(v)) for k, v in keys.items()]
    for name, keys in pools.items():
        lines += ["", "[pool.%s]" % name]
        lines += ["%s = %s" % (k, _toml_value(v)) for k, v in keys.items()]
    return "\n".join(lines) + "\n"


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-cased names
        self.body = body

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def outcome(self):
        return self.headers.get("x-bulkhead-outcome")

    def __repr__(self):
        return "<Response %d %s %r>" % (self.status, self.headers.get("content-type"),
                                        self.body[:2000])


# -- the daemon -----------------------------------------------------------------------------


class Daemon:
    """One real ``bulkhead serve`` process and helpers to talk to it."""

    def __init__(self, workdir, pools, server=None, unix=False, wrapper=None, args=(),
                 extra_sections=None):
        self.tag = uuid.uuid4().hex
        # argv prefix the daemon runs under, e.g. ["prlimit", "--nofile=256:256", "--"]: it must
        # exec the daemon (so self.proc.pid is the daemon's pid).
        self.wrapper = list(wrapper or [])
        self.args = list(args)  # more `bulkhead serve` flags, e.g. ["--log-format", "json"]
        self.stdin = subprocess.DEVNULL  # subprocess.PIPE: the test holds the daemon's stdin
        self.workdir = workdir
        self.scratch = os.path.join(workdir, "scratch")
        os.makedirs(self.scratch, exist_ok=True)
        self.config_path = os.path.join(workdir, "bulkhead.toml")
        self.log_path = os.path.join(workdir, "daemon.log")
        self.seen_pids = set()
        self.proc = None
        self.url = None
        self._client = None
        self._sockdir = None
        server = dict(server or {})
        if "listen" not in server:
            if unix:
                # sun_path is 108 bytes: pytest's tmp_path can be longer than that.
                self._sockdir = tempfile.mkdtemp(prefix="bkt-", dir="/tmp")
                server["listen"] = "unix:" + os.path.join(self._sockdir, "bulkhead.sock")
            else:
                server["listen"] = "127.0.0.1:0"
        self.pools = {name: self._pool_defaults(keys) for name, keys in pools.items()}
        with open(self.config_path, "w") as f:
            f.write(render_config(server, self.pools, extra_sections))

    def _pool_defaults(self, keys):
        keys = dict(keys)
        handler = keys.get("handler", "echo")
        if ":" not in handler:
            keys["handler"] = "fault_handlers:" + handler
        preload = keys.get("preload")
        if preload and ":" not in preload:
            keys["preload"] = "fault_handlers:" + preload
        merged = {
            "python": PYTHON,
            "python_path": [HERE],
            "workers": 1,
            "job_timeout": "10s",
            "startup_timeout": "20s",
            "retries": 0,
        }
        merged.update(keys)
        env = dict(keys.get("env", {}))
        env.update({"BULKHEAD_TEST_DIR": self.scratch, "BULKHEAD_TEST_TAG": self.tag})
        merged["env"] = env
        return merged

    # lifecycle

    def start(self):
        env = dict(os.environ)
        env["BULKHEAD_TEST_TAG"] = self.tag
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.wrapper + [BIN, "serve", "-c", self.config_path] + self.args,
            stdin=self.stdin, stdout=self._log, stderr=subprocess.STDOUT,
            env=env, cwd=self.workdir, start_new_session=True)

        def listening():
            if self.proc.poll() is not None:
                raise Abort("daemon exited with %s before listening; log:\n%s"
                                   % (self.proc.returncode, self.log()))
            m = _LISTEN_RE.search(self.log())
            return m and m.group(1).rstrip(".,;")

        try:
            self.url = wait_until(listening, START_DEADLINE_S, "the 'listening on' line")
        except Abort as exc:
            raise AssertionError(str(exc)) from None
        except AssertionError:
            raise AssertionError("daemon never logged 'listening on'; log:\n" + self.log())
        wait_until(lambda: self.http("GET", "/healthz", timeout=2).status == 200,
                   START_DEADLINE_S, "GET /healthz to answer 200")
        return self

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, deadline=STOP_DEADLINE_S):
        """SIGTERM, bounded wait; returns the exit status (None if it had to be SIGKILLed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(deadline)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.proc.returncode

    def kill(self):
        """Emergency stop: SIGKILL the daemon and everything tagged as ours."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for pid in tagged_pids(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def survivors(self):
        """Processes of this daemon's tree still alive (tagged, or worker pids seen)."""
        alive = set(tagged_pids(self.tag))
        alive |= {pid for pid in self.seen_pids if pid_alive(pid)}
        return {pid: pid_cmdline(pid) for pid in sorted(alive)}

    def close(self):
        if self._client is not None and hasattr(self._client, "close"):
            try:
                self._client.close()
            except Exception:  # noqa: BLE001
                pass
        if getattr(self, "_log", None):
            self._log.close()
        if self._sockdir:
            for name in os.listdir(self._sockdir):
                try:
                    os.unlink(os.path.join(self._sockdir, name))
                except OSError:
                    pass
            try:
                os.rmdir(self._sockdir)
            except OSError:
                pass

    # clients

    @property
    def client(self):
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def new_client(self):
        try:
            import bulkhead
        except ImportError as exc:
            pytest.skip("python client package `bulkhead` not importable: %s" % exc)
        return bulkhead.Client(self.url)

    def connection(self, timeout=30):
        if self.url.startswith("unix:"):
            return _UnixHTTPConnection(self.url[len("unix:"):], timeout)
        hostport = self.url[len("http://"):]
        host, port = hostport.rsplit(":", 1)
        return http.client.HTTPConnection(host, int(port), timeout=timeout)

    def raw_socket(self, timeout=10):
        if self.url.startswith("unix:"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(self.url[len("unix:"):])
            return sock
        host, port = self.url[len("http://"):].rsplit(":", 1)
        return socket.create_connection((host, int(port)), timeout=timeout)

    def http(self, method, path, body=None, headers=None, timeout=30):
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
            return Response(resp.status, hdrs, data)
        finally:
            conn.close()

    def job(self, pool, payload=b"", headers=None, timeout=30):
        if isinstance(payload, str):
            payload = payload.encode()
        return self.http("POST", "/v1/pools/%s/jobs" % pool, body=payload,
                         headers=headers, timeout=timeout)

    def healthz(self):
        return self.http("GET", "/healthz", timeout=5)

    def get_json(self, path):
        resp = self.http("GET", path, timeout=5)
        assert resp.status == 200, resp
        return resp.json

    def pool_status(self, pool):
        resp = self.http("GET", "/v1/pools", timeout=5)
        assert resp.status == 200, resp
        for p in resp.json["pools"]:
            for w in p.get("workers", []):
                if w.get("pid"):
                    self.seen_pids.add(int(w["pid"]))
            if p["name"] == pool:
                return p
        raise AssertionError("pool %s not in /v1/pools: %s" % (pool, resp.body))

    def workers(self, pool):
        return self.pool_status(pool)["workers"]

    def wait_ready(self, pool, count=None, timeout=20):
        """Waits until ``count`` (default: the pool's target) workers are idle."""
        want = count if count is not None else self.pools[pool].get("workers", 1)

        def ready():
            idle = [w for w in self.workers(pool) if w["state"] == "idle" and w.get("pid")]
            return idle if len(idle) >= want else None

        return wait_until(ready, timeout, "%d idle worker(s) in pool %s" % (want, pool))

    def idle_pids(self, pool):
        return sorted(int(w["pid"]) for w in self.workers(pool)
                      if w["state"] == "idle" and w.get("pid"))

    def wait_replaced(self, pool, dead_pids, timeout=20):
        """Waits until the pool is back to full strength with none of ``dead_pids`` in it, and
        those processes are gone from /proc. Returns the new idle pids."""
        dead = {int(p) for p in ([dead_pids] if isinstance(dead_pids, int) else dead_pids)}
        want = self.pools[pool].get("workers", 1)

        def replaced():
            ws = self.workers(pool)
            pids = {int(w["pid"]) for w in ws if w.get("pid")}
            idle = [w for w in ws if w["state"] == "idle" and w.get("pid")]
            if pids & dead or len(idle) < want:
                return None
            return sorted(int(w["pid"]) for w in idle)

        new = wait_until(replaced, timeout, "pool %s to replace worker(s) %s" % (pool, dead))
        wait_until(lambda: not any(pid_alive(p) for p in dead), 10,
                   "dead worker pid(s) %s to leave /proc" % dead)
        return new

    def assert_serving(self, pool="echo", payload=b"still alive"):
        """The supervisor answers /healthz and a normal job on ``pool`` succeeds."""
        h = self.healthz()
        assert h.status == 200, h
        r = self.job(pool, payload)
        assert r.status == 200, r
        assert r.body == payload
        assert r.outcome == "ok"
        return r


# -- fixtures -------------------------------------------------------------------------------


class _Watchdog:
    def __init__(self, limit, daemons, name):
        self.fired = False
        self._daemons = daemons
        self._name = name
        self._timer = threading.Timer(limit, self._fire)
        self._timer.daemon = True

    def _fire(self):
        self.fired = True
        sys.stderr.write("\nwatchdog: %s overran its limit; killing its daemons\n" % self._name)
        faulthandler.dump_traceback(all_threads=True)
        for d in list(self._daemons):
            d.kill()

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()


@pytest.fixture
def _daemons(request):
    daemons = []
    marker = request.node.get_closest_marker("limit")
    limit = marker.args[0] if marker else DEFAULT_TEST_LIMIT_S
    # Last resort should the watchdog itself be stuck: dump stacks and exit the run.
    faulthandler.dump_traceback_later(limit + 60, exit=True)
    with _Watchdog(limit, daemons, request.node.nodeid) as dog:
        yield daemons
    faulthandler.cancel_dump_traceback_later()
    problems = []
    for d in daemons:
        try:
            rc = d.stop()
            if rc != 0:
                problems.append("daemon exit status %r after SIGTERM (want 0); log tail:\n%s"
                                % (rc, d.log()[-3000:]))
            try:
                wait_until(lambda: not d.survivors(), 5, "daemon tree to be gone")
            except AssertionError:
                problems.append("processes of the daemon's tree survived shutdown: %r"
                                % d.survivors())
        finally:
            d.kill()
            d.close()
    if dog.fired:
        problems.insert(0, "watchdog: test overran its limit of %ss" % limit)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def start_daemon(_daemons, tmp_path):
    """``start_daemon(pools, server=None, unix=False, wrapper=None, args=())`` -> a started
    :class:`Daemon` (``args``: more ``bulkhead serve`` flags).

    ``pools`` maps pool name to keys; a handler without ``:`` names a function in
    fault_handlers.py. Defaults: 1 worker, retries 0, job_timeout 10s.
    """
    counter = [0]

    def start(pools, server=None, unix=False, wrapper=None, args=(), extra_sections=None):
        counter[0] += 1
        workdir = str(tmp_path / ("d%d" % counter[0]))
        os.makedirs(workdir)
        d = Daemon(workdir, pools, server=server, unix=unix, wrapper=wrapper, args=args,
                   extra_sections=extra_sections)
        _daemons.append(d)
        return d.start()

    return start


@pytest.fixture
def daemon(start_daemon):
    """A daemon with an ``echo`` pool (2 workers) and a ``whoami`` pool: the common case."""
    return start_daemon({"echo": {"handler": "echo", "workers": 2},
                         "whoami": {"handler": "whoami", "workers": 1}})


@pytest.fixture
def client(daemon):
    """A bulkhead.Client connected to the ``daemon`` fixture."""
    return daemon.client


def run_bulkhead(*args, timeout=20):
    """Runs the CLI with a bounded wait; returns CompletedProcess."""
    return subprocess.run([BIN, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout)
