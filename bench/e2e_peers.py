#!/usr/bin/python3
"""End-to-end benchmark: bulkhead beside what users would pick instead, measured in ONE run.

    /usr/bin/python3 bench/e2e_peers.py            # full run, a few minutes
    /usr/bin/python3 bench/e2e_peers.py --quick    # under a minute

What it measures, on whatever machine it runs on (the numbers in /work/shared/PEERS.md were taken
on a 2-core machine; compare ratios within one run, not absolute times across runs):

1. 100-byte echo round trip, sequential calls, p50/p99 ms: bulkhead (the Python client over HTTP
   keep-alive, pool of 2 workers), concurrent.futures.ProcessPoolExecutor(2) (fork, and spawn with
   max_tasks_per_child), multiprocessing.Pool(2), loky (optional: python3-joblib), and a fresh
   /usr/bin/python3 per job (fewer iterations).  The systems are measured in interleaved rounds so
   that noise from other work on the machine spreads over all of them.
2. Throughput, jobs/s, 2 workers: bulkhead with several caller PROCESSES, each with a few threads
   and one Client per thread (several configurations; the best is reported); the in-process peers
   with 32 jobs in flight; subprocess-per-job with 2 concurrent launchers.
3. Warm inference of a small CNN built in code (bench/handlers/bench_handlers.py), p50 ms: bulkhead
   (model built in the pool's preload), the pool peers (model built in the initializer), and a fresh
   interpreter per job that imports torch and builds the model (a handful of runs).
4. 1 MiB (and, in the full run, 64 MiB) echo round trips.
5. RSS: the bulkhead supervisor's VmRSS (and VmHWM) from /proc/PID/status after the runs, and the
   idle RSS of the 2 warm workers of each system (echo pool and CNN pool).

Profiling rows (not peers): the same daemon driven by a raw-socket Python client (no http.client)
and, if /usr/bin/wrk is installed (Debian package ``wrk``), by wrk, a C load generator: they
separate what the Python client costs from what the daemon costs.  Per-job CPU of the daemon, its
workers and the callers is measured during bulkhead's throughput runs from /proc.

The bench starts its own daemon (build/bulkhead serve) on a temp config listening on a free
127.0.0.1 port, waits for /healthz, and stops it with SIGTERM at the end.
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, "build", "bulkhead")
HANDLERS = os.path.join(HERE, "handlers")
PYTHON = "/usr/bin/python3"

sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, HANDLERS)

import bulkhead  # noqa: E402
import bench_handlers as bh  # noqa: E402  (imports no torch at module level)

ECHO_PAYLOAD = bytes(range(100))
CNN_PAYLOAD = bytes((i * 7 + 3) % 256 for i in range(bh.PAYLOAD_BYTES))
START_DEADLINE_S = 30
READY_DEADLINE_S = 180     # CNN workers import torch, on a busy 2-core machine
ECHO_POOL = "echo"
CNN_POOL = "cnn"
MIB = 1 << 20


def log(msg):
    print("[bench %7.1fs] %s" % (time.monotonic() - T0, msg), file=sys.stderr, flush=True)


T0 = time.monotonic()


# -- small helpers ------------------------------------------------------------------------------

def pct(samples, q):
    """Nearest-rank percentile of a list of seconds, in ms."""
    if not samples:
        return float("nan")
    s = sorted(samples)
    k = max(0, min(len(s) - 1, int(round(q / 100.0 * len(s) + 0.5)) - 1))
    return s[k] * 1000.0


def proc_status_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb(pids):
    vals = [proc_status_kb(p, "VmRSS") for p in pids]
    if not pids or any(v is None for v in vals):
        return None
    return sum(vals) / 1024.0


def cpu_seconds(pids):
    """utime+stime of these processes, seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / float(tick)


def fmt(x, nd=2):
    if x is None or x != x:
        return "-"
    if x >= 1000:
        return "{:,.0f}".format(x)
    if x >= 100:
        return "%.0f" % x
    if x >= 10:
        return "%.1f" % x
    return ("%%.%df" % nd) % x


# -- the bulkhead daemon ------------------------------------------------------------------------

CONFIG = """\
[server]
listen = "127.0.0.1:0"
max_request_body = "80MiB"

[pool.{echo}]
handler = "bench_handlers:echo"
python = "{python}"
python_path = [{handlers}]
workers = 2
queue_limit = 10000
max_payload = "80MiB"
job_timeout = "60s"
env = {{ OMP_NUM_THREADS = "1", MKL_NUM_THREADS = "1" }}

[pool.{cnn}]
handler = "bench_handlers:cnn"
preload = "bench_handlers:cnn_preload"
python = "{python}"
python_path = [{handlers}]
workers = 2
queue_limit = 10000
job_timeout = "60s"
startup_timeout = "170s"
env = {{ OMP_NUM_THREADS = "1", MKL_NUM_THREADS = "1" }}
"""


class Daemon:
    def __init__(self, tmpdir):
        self.config = os.path.join(tmpdir, "bulkhead.toml")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(echo=ECHO_POOL, cnn=CNN_POOL, python=PYTHON,
                                  handlers=json.dumps(HANDLERS)))
        self.log_path = os.path.join(tmpdir, "daemon.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([BIN, "serve", "-c", self.config], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.url = None
        self.host = self.port = None

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_healthy(self):
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit("bench: the daemon exited with %s before listening:\n%s"
                         % (self.proc.returncode, self.log()))
            m = re.search(r"listening on http://([0-9.]+):(\d+)", self.log())
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                self.url = "http://%s:%d" % (self.host, self.port)
                break
            time.sleep(0.02)
        else:
            self.kill()
            sys.exit("bench: the daemon did not log 'listening on' within %d s:\n%s"
                     % (START_DEADLINE_S, self.log()))
        client = bulkhead.Client(self.url)
        while time.monotonic() < deadline:
            try:
                if client.health().get("status") == "ok":
                    client.close()
                    return
            except Exception:
                pass
            time.sleep(0.05)
        self.kill()
        sys.exit("bench: /healthz not ok within %d s:\n%s" % (START_DEADLINE_S, self.log()))

    def pools(self):
        with bulkhead.Client(self.url) as c:
            return {p["name"]: p for p in c.pools()["pools"]}

    def wait_ready(self):
        deadline = time.monotonic() + READY_DEADLINE_S
        while time.monotonic() < deadline:
            pools = self.pools()
            if all(len([w for w in p["workers"] if w["state"] == "idle"]) >= p["workers_target"]
                   for p in pools.values()):
                return pools
            if self.proc.poll() is not None:
                sys.exit("bench: the daemon died:\n%s" % self.log())
            time.sleep(0.1)
        self.kill()
        sys.exit("bench: pools not ready within %d s: %s\n%s"
                 % (READY_DEADLINE_S, json.dumps(self.pools()), self.log()))

    def worker_pids(self, pool):
        return [w["pid"] for w in self.pools()[pool]["workers"] if w.get("pid")]

    def stop(self):
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


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


class RawSocketSys:
    """Profiling: the same HTTP request over a raw keep-alive socket, minimal parsing (no
    http.client): what is left is the daemon, the worker and the kernel."""
    name = "bulkhead, raw-socket Python client (profiling)"
    key = "bulkhead-raw"

    def __init__(self, daemon, pool):
        self.sock = socket.create_connection((daemon.host, daemon.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = ("POST /v1/pools/%s/jobs HTTP/1.1\r\nHost: x\r\n"
                     "Content-Type: application/octet-stream\r\nContent-Length: " % pool).encode()
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


class ExecutorSys:
    """concurrent.futures-like executors: ProcessPoolExecutor, loky."""

    def __init__(self, name, key, executor, fn, warm_payload):
        self.name, self.key, self.ex, self.fn = name, key, executor, fn
        # start both workers (and their initializers) before measuring
        futs = [self.ex.submit(fn, warm_payload) for _ in range(64)]
        for f in futs:
            f.result()

    def call(self, payload):
        return self.ex.submit(self.fn, payload).result()

    def submit_cb(self, payload, cb):
        self.ex.submit(self.fn, payload).add_done_callback(cb)

    def worker_pids(self):
        procs = getattr(self.ex, "_processes", None) or {}
        return [p.pid for p in procs.values()]

    def close(self):
        self.ex.shutdown(wait=True)


class MpPoolSys:
    name = "multiprocessing.Pool"
    key = "mp.Pool"

    def __init__(self, fn, warm_payload, initializer=None):
        self.pool = multiprocessing.Pool(2, initializer=initializer)
        self.fn = fn
        for r in [self.pool.apply_async(fn, (warm_payload,)) for _ in range(64)]:
            r.get()

    def call(self, payload):
        return self.pool.apply_async(self.fn, (payload,)).get()

    def submit_cb(self, payload, cb):
        self.pool.apply_async(self.fn, (payload,), callback=cb, error_callback=cb)

    def worker_pids(self):
        return [p.pid for p in self.pool._pool]

    def close(self):
        self.pool.close()
        self.pool.join()


ECHO_SUBPROCESS = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"


class SubprocessSys:
    name = "fresh subprocess per job"
    key = "subprocess"

    def __init__(self, argv):
        self.argv = argv

    def call(self, payload):
        r = subprocess.run(self.argv, input=payload, stdout=subprocess.PIPE, check=True,
                           cwd=HANDLERS)
        return r.stdout

    def close(self):
        pass


def have_loky():
    try:
        from joblib.externals import loky  # noqa: F401
        return True
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


# -- measurements -------------------------------------------------------------------------------

def sequential_latency(systems, payload, n, rounds, check=None):
    """Interleaved rounds of n/rounds sequential calls per system; returns {key: [seconds]}."""
    per = max(1, n // rounds)
    samples = {s.key: [] for s in systems}
    for _ in range(rounds):
        for s in systems:
            out = s.call(payload)  # one unmeasured call: wake the path after the other systems
            if check is not None and not check(out):
                raise RuntimeError("%s returned a wrong result" % s.name)
            acc = samples[s.key]
            clock = time.perf_counter
            for _ in range(per):
                t = clock()
                s.call(payload)
                acc.append(clock() - t)
    return samples


def inflight_throughput(system, payload, duration, inflight=32):
    """Keep `inflight` jobs outstanding for `duration` seconds; jobs/s over the whole run."""
    sem = threading.BoundedSemaphore(inflight)
    done = [0]
    lock = threading.Lock()

    def cb(_):
        with lock:
            done[0] += 1
        sem.release()

    t0 = time.perf_counter()
    end = t0 + duration
    submitted = 0
    while time.perf_counter() < end:
        sem.acquire()
        system.submit_cb(payload, cb)
        submitted += 1
    for _ in range(inflight):  # wait for the outstanding ones
        sem.acquire()
    elapsed = time.perf_counter() - t0
    for _ in range(inflight):
        sem.release()
    return done[0] / elapsed


def subprocess_throughput(system, payload, duration, launchers=2):
    count = [0] * launchers
    end = time.perf_counter() + duration

    def run(i):
        while time.perf_counter() < end:
            system.call(payload)
            count[i] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(launchers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(count) / (time.perf_counter() - t0)


def caller_main(argv):
    """--caller URL POOL THREADS: a load-generating process for bulkhead's throughput test.
    Prints 'ready', reads 'START END' (time.monotonic values) on stdin, runs until END, prints
    a JSON line with the jobs completed inside [START, END] and this process's CPU seconds."""
    url, pool, nthreads = argv[0], argv[1], int(argv[2])
    payload = ECHO_PAYLOAD
    window = {}
    go = threading.Event()
    counts = [0] * nthreads
    errors = []
    ready = threading.Barrier(nthreads + 1)

    def run(i):
        try:
            c = bulkhead.Client(url)
            for _ in range(5):
                c.call(pool, payload)
            ready.wait()
            go.wait()
            start, end = window["start"], window["end"]
            while time.monotonic() < start:
                time.sleep(0.0005)
            n = 0
            call, mono = c.call, time.monotonic
            while True:
                call(pool, payload)
                now = mono()
                if now >= end:
                    break
                n += 1
            counts[i] = n
            c.close()
        except Exception as exc:  # report, don't hang the barrier
            errors.append(repr(exc))
            try:
                ready.abort()
            except Exception:
                pass

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(nthreads)]
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    print("ready", flush=True)
    line = sys.stdin.readline().split()
    window["start"], window["end"] = float(line[0]), float(line[1])
    go.set()
    while time.monotonic() < window["start"]:
        time.sleep(0.001)
    cpu0 = time.process_time()
    for t in threads:
        t.join()
    cpu = time.process_time() - cpu0
    print(json.dumps({"jobs": sum(counts), "cpu_s": cpu, "errors": errors}), flush=True)


def bulkhead_throughput(daemon, procs, threads, duration):
    """Caller processes x threads, one Client per thread; returns (jobs/s, cpu breakdown)."""
    argv = [PYTHON, os.path.abspath(__file__), "--caller", daemon.url, ECHO_POOL, str(threads)]
    callers = [subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True) for _ in range(procs)]
    try:
        for c in callers:
            if c.stdout.readline().strip() != "ready":
                raise RuntimeError("a caller process did not start")
        start = time.monotonic() + 0.2
        end = start + duration
        for c in callers:
            c.stdin.write("%r %r\n" % (start, end))
            c.stdin.flush()
        wpids = daemon.worker_pids(ECHO_POOL)
        while time.monotonic() < start:
            time.sleep(0.001)
        d0, w0 = cpu_seconds([daemon.pid]), cpu_seconds(wpids)
        while time.monotonic() < end:
            time.sleep(0.005)
        d1, w1 = cpu_seconds([daemon.pid]), cpu_seconds(wpids)
        jobs, ccpu, errors = 0, 0.0, []
        for c in callers:
            r = json.loads(c.stdout.readline())
            jobs += r["jobs"]
            ccpu += r["cpu_s"]
            errors += r["errors"]
        for c in callers:
            c.wait(30)
    finally:
        for c in callers:
            if c.poll() is None:
                c.kill()
                c.wait()
    if errors:
        raise RuntimeError("caller errors: %s" % errors[:3])
    rate = jobs / duration
    per_job_us = lambda s: s / max(jobs, 1) * 1e6  # noqa: E731
    return rate, {"daemon_us": per_job_us(d1 - d0), "workers_us": per_job_us(w1 - w0),
                  "callers_us": per_job_us(ccpu)}


def wrk_run(daemon, conns, duration, tmpdir, latency=False):
    """wrk (C) against the same endpoint: requests/s and, with -c1 --latency, p50/p99 ms."""
    if not shutil.which("wrk"):
        return None
    script = os.path.join(tmpdir, "post.lua")
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = string.rep("x", %d)\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n'
                'done = function(summary, latency, requests)\n'
                '  io.write(string.format("LAT %%d %%d\\n", latency:percentile(50), '
                'latency:percentile(99)))\n'
                '  io.write(string.format("ERR %%d\\n", summary.errors.status))\nend\n'
                % len(ECHO_PAYLOAD))
    out = subprocess.run(["wrk", "-t1", "-c%d" % conns, "-d%ds" % duration, "-s", script,
                          "%s/v1/pools/%s/jobs" % (daemon.url, ECHO_POOL)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    rps = re.search(r"Requests/sec:\s*([0-9.]+)", out)
    lat = re.search(r"LAT (\d+) (\d+)", out)
    err = re.search(r"ERR (\d+)", out)
    if not rps:
        return None
    return {"rps": float(rps.group(1)),
            "p50": int(lat.group(1)) / 1000.0 if lat else None,
            "p99": int(lat.group(2)) / 1000.0 if lat else None,
            "non2xx": int(err.group(1)) if err else None}


# -- main ---------------------------------------------------------------------------------------

def machine_line():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/etc/debian_version") as f:
            deb = f.read().strip()
    except OSError:
        deb = "?"
    return "nproc %d, %s, kernel %s, Debian %s, Python %s" % (
        os.cpu_count(), cpu, platform.release(), deb, platform.python_version())


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    import faulthandler
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1 PID: where is it stuck
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    args = ap.parse_args()
    q = args.quick
    cfg = {
        "echo_n": 1500 if q else 8000, "rounds": 3 if q else 8,
        "echo_sub_n": 15 if q else 60,
        "tput_s": 1.5 if q else 3.0,
        "tput_configs": [(4, 8)] if q else [(1, 8), (2, 4), (2, 8), (4, 4), (4, 8), (8, 4)],
        "tput_repeats": 1 if q else 2,
        "cnn_n": 60 if q else 300, "cnn_sub_n": 3 if q else 7,
        "mib_n": 10 if q else 40, "big_n": 0 if q else 3,
    }
    if not os.path.exists(BIN):
        sys.exit("bench: %s not built (ninja -C build)" % BIN)
    tmpdir = tempfile.mkdtemp(prefix="bulkhead-bench-")
    res = {}     # key -> dict of measurements
    names = {}
    prof = {}

    def put(key, name, **kw):
        names.setdefault(key, name)
        res.setdefault(key, {}).update(kw)

    log("machine: %s; load average %s" % (machine_line(), loadavg()))
    load_start = loadavg()
    daemon = Daemon(tmpdir)
    try:
        daemon.wait_healthy()
        log("daemon pid %d at %s, /healthz ok; waiting for 4 workers (2 import torch)"
            % (daemon.pid, daemon.url))
        daemon.wait_ready()
        sup_rss_start = proc_status_kb(daemon.pid, "VmRSS") / 1024.0
        optional = []

        # ---- 1. echo latency -------------------------------------------------------------------
        log("echo latency: starting the pool peers")
        systems = [BulkheadSys(daemon, ECHO_POOL)]
        systems.append(make_ppe(bh.echo, ECHO_PAYLOAD))
        systems.append(make_ppe_spawn(bh.echo, ECHO_PAYLOAD))
        systems.append(MpPoolSys(bh.echo, ECHO_PAYLOAD))
        if have_loky():
            systems.append(make_loky(bh.echo, ECHO_PAYLOAD))
        else:
            optional.append("loky skipped: joblib not importable (apt-get install python3-joblib)")
        raw = RawSocketSys(daemon, ECHO_POOL)
        log("echo latency: %d sequential calls each, %d interleaved rounds"
            % (cfg["echo_n"], cfg["rounds"]))
        lat = sequential_latency(systems + [raw], ECHO_PAYLOAD, cfg["echo_n"], cfg["rounds"],
                                 check=lambda out: out == ECHO_PAYLOAD)
        for s in systems + [raw]:
            put(s.key, s.name, echo_p50=pct(lat[s.key], 50), echo_p99=pct(lat[s.key], 99))
        sub = SubprocessSys([PYTHON, "-c", ECHO_SUBPROCESS])
        log("echo latency: %d fresh subprocesses" % cfg["echo_sub_n"])
        sl = sequential_latency([sub], ECHO_PAYLOAD, cfg["echo_sub_n"], 1)
        put(sub.key, sub.name, echo_p50=pct(sl[sub.key], 50), echo_p99=pct(sl[sub.key], 99))

        # ---- 2. throughput ---------------------------------------------------------------------
        best = None
        tried = []
        for rep in range(cfg["tput_repeats"]):
            for procs, threads in cfg["tput_configs"]:
                rate, cpu = bulkhead_throughput(daemon, procs, threads, cfg["tput_s"])
                tried.append((procs, threads, rate, cpu))
                log("throughput bulkhead %d procs x %d threads: %.0f jobs/s (CPU per job: daemon "
                    "%.0f us, workers %.0f us, callers %.0f us)"
                    % (procs, threads, rate, cpu["daemon_us"], cpu["workers_us"],
                       cpu["callers_us"]))
                if best is None or rate > best[2]:
                    best = (procs, threads, rate, cpu)
        put("bulkhead", None, tput=best[2], tput_cfg="%d procs x %d threads" % best[:2])
        prof["tput_tried"] = tried
        prof["tput_best"] = best
        for s in systems[1:]:
            rate = inflight_throughput(s, ECHO_PAYLOAD, cfg["tput_s"])
            log("throughput %s, 32 in flight: %.0f jobs/s" % (s.key, rate))
            put(s.key, None, tput=rate)
        rate = subprocess_throughput(sub, ECHO_PAYLOAD, cfg["tput_s"])
        log("throughput subprocess, 2 launchers: %.0f jobs/s" % rate)
        put(sub.key, None, tput=rate)
        w = wrk_run(daemon, 1, 2 if q else 3, tmpdir, latency=True)
        if w:
            put("wrk", "bulkhead driven by wrk, C (profiling)", echo_p50=w["p50"],
                echo_p99=w["p99"])
            best_w = None
            for conns in ([32] if q else [8, 32, 64]):
                ww = wrk_run(daemon, conns, 2 if q else 3, tmpdir)
                log("wrk -c%d: %.0f req/s, non-2xx %s" % (conns, ww["rps"], ww["non2xx"]))
                if best_w is None or ww["rps"] > best_w[1]:
                    best_w = (conns, ww["rps"])
            put("wrk", None, tput=best_w[1], tput_cfg="1 thread, %d connections" % best_w[0])
        else:
            optional.append("wrk rows skipped: /usr/bin/wrk not installed (apt-get install wrk)")
        echo_worker_rss = {s.key: rss_mb(s.worker_pids()) for s in systems}
        raw.close()
        for s in systems[1:]:
            s.close()

        # ---- 3. warm CNN inference ----------------------------------------------------------
        log("CNN: starting the pool peers with the model built in their initializer")
        cnn_systems = [BulkheadSys(daemon, CNN_POOL), make_ppe(bh.cnn_global, CNN_PAYLOAD,
                                                               bh.init_model)]
        if not q:
            cnn_systems.append(MpPoolSys(bh.cnn_global, CNN_PAYLOAD, bh.init_model))
            cnn_systems.append(make_ppe_spawn(bh.cnn_global, CNN_PAYLOAD, bh.init_model))
            if have_loky():
                cnn_systems.append(make_loky(bh.cnn_global, CNN_PAYLOAD, bh.init_model))
        expected = None
        log("CNN: %d sequential inferences each" % cfg["cnn_n"])

        def same_result(out):
            return expected is None or out == expected
        expected = cnn_systems[0].call(CNN_PAYLOAD)
        cl = sequential_latency(cnn_systems, CNN_PAYLOAD, cfg["cnn_n"], cfg["rounds"],
                                check=same_result)
        for s in cnn_systems:
            put(s.key, None, cnn_p50=pct(cl[s.key], 50), cnn_p99=pct(cl[s.key], 99))
        cnn_worker_rss = {s.key: rss_mb(s.worker_pids()) for s in cnn_systems}
        for s in cnn_systems[1:]:
            s.close()
        cnn_sub = SubprocessSys([PYTHON, os.path.join(HANDLERS, "bench_handlers.py")])
        log("CNN: %d fresh interpreters that import torch and build the model"
            % cfg["cnn_sub_n"])
        if cnn_sub.call(CNN_PAYLOAD) != expected:
            raise RuntimeError("subprocess CNN result differs from bulkhead's")
        csl = sequential_latency([cnn_sub], CNN_PAYLOAD, cfg["cnn_sub_n"], 1)
        put("subprocess", None, cnn_p50=pct(csl["subprocess"], 50))
        t = time.perf_counter()
        subprocess.run([PYTHON, "-c", "import torch"], check=True)
        import_torch_s = time.perf_counter() - t
        sub_peak = subprocess.run(
            [PYTHON, "-c", "import resource, subprocess, sys; subprocess.run(sys.argv[1:], "
             "input=bytes(%d), stdout=subprocess.DEVNULL, check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)" % bh.PAYLOAD_BYTES,
             PYTHON, os.path.join(HANDLERS, "bench_handlers.py")],
            stdout=subprocess.PIPE, text=True, check=True).stdout
        sub_peak_mb = int(sub_peak.strip()) / 1024.0

        sup_rss_runs = proc_status_kb(daemon.pid, "VmRSS") / 1024.0
        sup_hwm_runs = proc_status_kb(daemon.pid, "VmHWM") / 1024.0
        log("supervisor after echo/throughput/CNN: VmRSS %.1f MB, VmHWM %.1f MB"
            % (sup_rss_runs, sup_hwm_runs))

        # ---- 4. large payloads (last: they may grow the supervisor's heap) ------------------
        big_systems = [BulkheadSys(daemon, ECHO_POOL), make_ppe(bh.echo, ECHO_PAYLOAD),
                       MpPoolSys(bh.echo, ECHO_PAYLOAD)]
        if not q:
            big_systems.append(make_ppe_spawn(bh.echo, ECHO_PAYLOAD))
            if have_loky():
                big_systems.append(make_loky(bh.echo, ECHO_PAYLOAD))
        sizes = [(MIB, cfg["mib_n"], "mib")] + ([(64 * MIB, cfg["big_n"], "big")]
                                                 if cfg["big_n"] else [])
        for size, n, tag in sizes:
            payload = os.urandom(size)
            log("round trips of %d MiB: %d each" % (size // MIB, n))
            bl = sequential_latency(big_systems, payload, n, min(n, cfg["rounds"]),
                                    check=lambda out, p=payload: out == p)
            for s in big_systems:
                put(s.key, None, **{tag: pct(bl[s.key], 50)})
            sl = sequential_latency([sub], payload, max(1, min(n, 5 if size == MIB else 2)), 1)
            put("subprocess", None, **{tag: pct(sl["subprocess"], 50)})
            del payload
        for s in big_systems:
            s.close()
        for s in systems[:1] + cnn_systems[:1]:
            s.close()
        time.sleep(0.5)
        sup_rss_end = proc_status_kb(daemon.pid, "VmRSS") / 1024.0
        sup_hwm_end = proc_status_kb(daemon.pid, "VmHWM") / 1024.0
        log("supervisor at the end: VmRSS %.1f MB, VmHWM %.1f MB" % (sup_rss_end, sup_hwm_end))
    finally:
        rc = daemon.stop()
        log("daemon stopped with SIGTERM: exit %s" % rc)
    load_end = loadavg()

    # ---- report -------------------------------------------------------------------------------
    order = ["subprocess", "PPE", "PPE-spawn", "mp.Pool", "loky", "bulkhead", "bulkhead-raw",
             "wrk"]
    out = []
    w = out.append
    w("## bulkhead vs peers, %s run" % ("quick" if q else "full"))
    w("")
    w("Machine: %s. Load average at start %s, at end %s." % (machine_line(), load_start,
                                                            load_end))
    w("")
    w("| system | echo p50 / p99 ms | jobs/s | 1 MiB / 64 MiB round trip ms | warm CNN p50 ms "
      "| idle RSS of 2 warm workers MB (echo / CNN) |")
    w("|---|---|---|---|---|---|")
    for key in order:
        if key not in res:
            continue
        r = res[key]
        big = "%s / %s" % (fmt(r.get("mib"), 1), fmt(r.get("big"), 0))
        if key == "subprocess":
            rss = "0 (%s per job)" % fmt(sub_peak_mb, 0)
            cnn = "%s (import torch %.1f s)" % (fmt(r.get("cnn_p50")), import_torch_s)
        else:
            rss = "%s / %s" % (fmt(echo_worker_rss.get(key), 0), fmt(cnn_worker_rss.get(key), 0))
            cnn = fmt(r.get("cnn_p50"))
        tput = fmt(r.get("tput"), 0)
        if r.get("tput_cfg"):
            tput += " (%s)" % r["tput_cfg"]
        elif key in ("PPE", "PPE-spawn", "mp.Pool", "loky"):
            tput += " (32 in flight)"
        elif key == "subprocess":
            tput += " (2 launchers)"
        if key in ("bulkhead-raw", "wrk"):
            rss = big = cnn = "-"
        w("| %s | %s / %s | %s | %s | %s | %s |" % (
            names.get(key) or key, fmt(r.get("echo_p50"), 3), fmt(r.get("echo_p99"), 3), tput,
            big, cnn, rss))
    w("")
    w("bulkhead supervisor (daemon) RSS: %.1f MB idle after start; %.1f MB after the echo, "
      "throughput and CNN runs (VmHWM %.1f); %.1f MB at the end, after the 1 MiB%s round trips "
      "(VmHWM %.1f)." % (sup_rss_start, sup_rss_runs, sup_hwm_runs, sup_rss_end,
                         " and 64 MiB" if cfg["big_n"] else "", sup_hwm_end))
    if prof.get("tput_tried"):
        w("")
        w("bulkhead throughput by caller configuration (processes x threads, one Client per "
          "thread): " + "; ".join("%dx%d: %.0f/s" % (p, t, r) for p, t, r, _ in
                                  prof["tput_tried"]) + ".")
        c = prof["tput_best"][3]
        w("CPU per job at the best configuration (from /proc, over the measuring window): "
          "daemon %.0f us, its 2 workers %.0f us, caller processes %.0f us (total %.0f us on %d "
          "cores = %.0f jobs/s if CPU-bound)."
          % (c["daemon_us"], c["workers_us"], c["callers_us"],
             c["daemon_us"] + c["workers_us"] + c["callers_us"], os.cpu_count(),
             os.cpu_count() * 1e6 / (c["daemon_us"] + c["workers_us"] + c["callers_us"])))
    for line in optional:
        w("")
        w("Note: " + line)

    # ---- targets ------------------------------------------------------------------------------
    b, p = res["bulkhead"], res["PPE"]
    speedup = res["subprocess"]["cnn_p50"] / b["cnn_p50"]
    targets = [
        ("echo p50 <= 1.5x ProcessPoolExecutor's",
         "%.3f ms vs %.3f ms = %.2fx" % (b["echo_p50"], p["echo_p50"],
                                         b["echo_p50"] / p["echo_p50"]),
         b["echo_p50"] <= 1.5 * p["echo_p50"]),
        (">= 5,000 echo jobs/s", "%s jobs/s (%s)" % (fmt(b["tput"], 0), b["tput_cfg"]),
         b["tput"] >= 5000),
        ("warm inference >= 50x faster than subprocess-per-job",
         "%.0f ms / %.2f ms = %.0fx" % (res["subprocess"]["cnn_p50"], b["cnn_p50"], speedup),
         speedup >= 50),
        ("supervisor RSS <= 20 MB", "%.1f MB after the runs (%.1f MB at the very end)"
         % (sup_rss_runs, sup_rss_end), max(sup_rss_runs, sup_rss_end) <= 20),
    ]
    w("")
    w("| target | measured | result |")
    w("|---|---|---|")
    for name, measured, ok in targets:
        w("| %s | %s | %s |" % (name, measured, "PASS" if ok else "MISS"))
    text = "\n".join(out)
    print(text, flush=True)
    with open(os.path.join(tmpdir, "result.md"), "w") as f:
        f.write(text + "\n")
    log("report also in %s/result.md" % tmpdir)
    return 0 if all(ok for _, _, ok in targets) else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--caller":
        caller_main(sys.argv[2:])
    else:
        sys.exit(main())
