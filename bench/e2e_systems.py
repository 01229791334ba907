#!/usr/bin/python3
"""bench/e2e_peers.py's systems under test: bulkhead through its Python client (and a raw socket,
for profiling), and the peers a user would pick instead (ProcessPoolExecutor fork and spawn,
multiprocessing.Pool, loky, Celery prefork + Redis, a fresh interpreter per job), each behind
the same small interface (``call``, ``worker_pids``, ``close``, ``kill``; the pool peers also
``submit_cb`` for throughput).  ``STALL_S`` bounds every wait on a peer (a peer that stops
answering raises ``PeerHung``); ``LIVE`` lists the pool peers not closed yet, killed on the way
out whatever happens.  Set ``e2e_systems.STALL_S`` (the module attribute) to change the bound.
"""

import concurrent.futures
import multiprocessing
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import benchlib
from benchlib import HANDLERS, PYTHON, ROOT, log, proc_status_kb

sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, HANDLERS)

import bulkhead  # noqa: E402
import bench_handlers as bh  # noqa: E402  (imports no torch at module level)


ECHO_PAYLOAD = bytes(range(100))
CNN_PAYLOAD = bytes((i * 7 + 3) % 256 for i in range(bh.PAYLOAD_BYTES))
READY_DEADLINE_S = 180     # CNN workers import torch, on a busy 2-core machine
ECHO_POOL = "echo"
CNN_POOL = "cnn"


# -- small helpers ------------------------------------------------------------------------------

def rss_mb(pids):
    vals = [proc_status_kb(p, "VmRSS") for p in pids]
    if not pids or any(v is None for v in vals):
        return None
    return sum(vals) / 1024.0


# -- systems under test: one sequential-call function each -------------------------------------

class BulkheadSys:
    name = "bulkhead (Python client, HTTP keep-alive)"
    key = "bulkhead"

    def __init__(self, daemon, pool):
        self.daemon, self.pool = daemon, pool
        self.client = bulkhead.Client(daemon.url)

    def call(self, payload):
        return self.client.call(self.pool, payload)

    def worker_pids(self):
        return self.daemon.worker_pids(self.pool)

    def close(self):
        self.client.close()


class TimedSys:
    """A CNN system whose handler appends its own time (bench_handlers.timed_infer): call()
    returns the logits alone and keeps the in-handler seconds in .inner; the rest is the
    wrapped system's."""

    def __init__(self, system):
        self.s, self.key, self.name = system, system.key, system.name
        self.inner = []

    def call(self, payload):
        out = self.s.call(payload)
        self.inner.append(struct.unpack_from("<d", out, len(out) - bh.TIMED_TRAILER)[0])
        return out[:-bh.TIMED_TRAILER]

    def __getattr__(self, attr):
        return getattr(self.s, attr)


class RawSocketSys:
    """Profiling: the same HTTP request over a raw keep-alive socket, minimal parsing (no
    http.client): what is left is the daemon, the worker and the kernel."""
    name = "bulkhead, raw-socket Python client (profiling)"
    key = "bulkhead-raw"

    def __init__(self, daemon, pool):
        sock = socket.create_connection((daemon.host, daemon.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = benchlib.RawJobConnection(sock, pool)
        self.call = self.conn.call
        self.close = self.conn.close


class PeerHung(Exception):
    """A peer stopped answering (no job finished for STALL_S seconds)."""


STALL_S = 15.0     # --quick: 5
LIVE = []   # pool peers not closed yet: killed on the way out, whatever happens


class ExecutorSys:
    """concurrent.futures-like executors: ProcessPoolExecutor, loky."""

    def __init__(self, name, key, executor, fn, warm_payload):
        self.name, self.key, self.ex, self.fn = name, key, executor, fn
        LIVE.append(self)
        # start both workers (and their initializers) before measuring
        futs = [self.ex.submit(fn, warm_payload) for _ in range(64)]
        for f in futs:
            f.result(timeout=READY_DEADLINE_S)

    def call(self, payload):
        try:
            return self.ex.submit(self.fn, payload).result(timeout=STALL_S)
        except concurrent.futures.TimeoutError:
            raise PeerHung("no answer within %g s" % STALL_S) from None

    def submit_cb(self, payload, cb):
        self.ex.submit(self.fn, payload).add_done_callback(cb)

    def worker_pids(self):
        procs = getattr(self.ex, "_processes", None) or {}
        return [p.pid for p in procs.values()]

    def close(self):
        if self in LIVE:
            LIVE.remove(self)
        self.ex.shutdown(wait=True)

    def kill(self):
        """After a hang: SIGKILL the workers and abandon the executor."""
        if self in LIVE:
            LIVE.remove(self)
        for pid in self.worker_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.ex.shutdown(wait=False, cancel_futures=True)
        except Exception:
            pass


class MpPoolSys:
    name = "multiprocessing.Pool"
    key = "mp.Pool"

    def __init__(self, fn, warm_payload, initializer=None):
        self.pool = multiprocessing.Pool(2, initializer=initializer)
        self.fn = fn
        LIVE.append(self)
        for r in [self.pool.apply_async(fn, (warm_payload,)) for _ in range(64)]:
            r.get(READY_DEADLINE_S)

    def call(self, payload):
        try:
            return self.pool.apply_async(self.fn, (payload,)).get(STALL_S)
        except multiprocessing.TimeoutError:
            raise PeerHung("no answer within %g s" % STALL_S) from None

    def submit_cb(self, payload, cb):
        self.pool.apply_async(self.fn, (payload,), callback=cb, error_callback=cb)

    def worker_pids(self):
        return [p.pid for p in self.pool._pool]

    def close(self):
        if self in LIVE:
            LIVE.remove(self)
        self.pool.close()
        self.pool.join()

    def kill(self):
        if self in LIVE:
            LIVE.remove(self)
        self.pool.terminate()


class CelerySys:
    """Optional peer: Celery 5 prefork (2 children) with Redis as broker and result backend, as
    Debian packages them (python3-celery, python3-redis, redis-server).  The bench starts its own
    redis-server on a unix socket in the temp dir and its own `celery worker`."""
    name = "Celery prefork + Redis (optional)"
    key = "celery"
    redis = None

    @staticmethod
    def missing():
        import importlib.util
        if not shutil.which("redis-server"):
            return "redis-server not installed"
        for mod in ("celery", "redis"):
            if importlib.util.find_spec(mod) is None:
                return "python3-%s not installed" % mod
        return None

    @classmethod
    def start_redis(cls, tmpdir):
        cls.sock = os.path.join(tmpdir, "redis.sock")
        cls.redis = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", cls.sock, "--save", "",
             "--appendonly", "no", "--loglevel", "warning"],
            stdout=open(os.path.join(tmpdir, "redis.log"), "wb"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(cls.sock):
            if time.monotonic() > deadline or cls.redis.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        os.environ["BENCH_CELERY_REDIS"] = cls.sock

    @classmethod
    def stop_redis(cls):
        if cls.redis is not None and cls.redis.poll() is None:
            cls.redis.terminate()
            cls.redis.wait(10)

    def __init__(self, tmpdir, cnn):
        import bench_celery
        self.bc = bench_celery
        self.fn = bench_celery.cnn if cnn else bench_celery.echo
        env = dict(os.environ, C_FORCE_ROOT="1", BENCH_CELERY_CNN="1" if cnn else "0",
                   PYTHONPATH=HANDLERS, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "celery", "-A", "bench_celery", "worker", "--pool=prefork", "-c", "2",
             "--loglevel=WARNING", "-n", "bench%d@localhost" % os.getpid()],
            cwd=HANDLERS, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
            stdout=open(os.path.join(tmpdir, "celery.log"), "ab"), stderr=subprocess.STDOUT)
        LIVE.append(self)
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:   # until both children answer (and, for the CNN, built the model)
            try:
                self.bc.pid.delay().get(timeout=5)
                if len(self.worker_pids()) >= 2:
                    break
            except Exception:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("celery worker did not start")
        for res in [self.fn.delay(bh.PAYLOAD_BYTES * b"\0" if cnn else ECHO_PAYLOAD)
                    for _ in range(8)]:
            res.get(timeout=READY_DEADLINE_S)

    def call(self, payload):
        import celery.exceptions
        try:
            return self.fn.delay(payload).get(timeout=STALL_S)
        except celery.exceptions.TimeoutError:
            raise PeerHung("no answer within %g s" % STALL_S) from None

    def throughput(self, payload, duration, inflight=32):
        """A window of `inflight` jobs: submit, wait for the oldest, submit the next."""
        from collections import deque
        window = deque()
        done = 0
        t0 = time.perf_counter()
        end = t0 + duration
        while True:
            now = time.perf_counter()
            if now < end:
                while len(window) < inflight:
                    window.append(self.fn.delay(payload))
            elif not window:
                break
            window.popleft().get(timeout=STALL_S)
            done += 1
        return done / (time.perf_counter() - t0)

    def worker_pids(self):
        """The prefork children (processes whose parent is the celery main process)."""
        kids = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d) as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                            kids.append(int(d))
                except (OSError, ValueError, IndexError):
                    pass
        return kids

    def main_rss_mb(self):
        return rss_mb([self.proc.pid])

    def close(self):
        if self in LIVE:
            LIVE.remove(self)
        self.proc.terminate()   # warm shutdown
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        if self in LIVE:
            LIVE.remove(self)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


ECHO_SUBPROCESS = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"


class SubprocessSys:
    name = "fresh subprocess per job"
    key = "subprocess"

    def __init__(self, argv):
        self.argv = argv
        self.reports = []   # "BENCH k=v ..." lines the CNN script writes on stderr

    def call(self, payload):
        r = subprocess.run(self.argv, input=payload, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, check=True, cwd=HANDLERS)
        for line in r.stderr.decode("utf-8", "replace").splitlines():
            if line.startswith("BENCH "):
                self.reports.append(dict(kv.split("=", 1) for kv in line.split()[1:]))
        return r.stdout

    def close(self):
        pass


def have_loky():
    try:
        import importlib.util
        return importlib.util.find_spec("joblib.externals.loky") is not None
    except ImportError:
        return False


def make_loky(fn, warm_payload, initializer=None):
    from joblib.externals import loky
    ex = loky.get_reusable_executor(max_workers=2, timeout=3600, initializer=initializer,
                                    reuse=False)
    return ExecutorSys("loky (joblib.externals.loky, optional)", "loky", ex, fn, warm_payload)


def make_ppe(fn, warm_payload, initializer=None):
    ex = concurrent.futures.ProcessPoolExecutor(2, initializer=initializer)
    return ExecutorSys("ProcessPoolExecutor (fork)", "PPE", ex, fn, warm_payload)


def make_ppe_spawn(fn, warm_payload, initializer=None):
    ex = concurrent.futures.ProcessPoolExecutor(
        2, mp_context=multiprocessing.get_context("spawn"), initializer=initializer,
        max_tasks_per_child=1000)
    return ExecutorSys("PPE, spawn, max_tasks_per_child=1000", "PPE-spawn", ex, fn,
                       warm_payload)


def close_all(systems):
    for s in systems:
        try:
            s.close()
        except Exception as exc:
            log("closing %s: %r" % (s.key, exc))
