#!/usr/bin/python3
"""Daemon CPU per job as the pool grows ("O(1) dispatch"), end to end.

    /usr/bin/python3 bench/dispatch_scaling.py                      # N = 2, 16, 64, 256
    /usr/bin/python3 bench/dispatch_scaling.py --workers 2,16,64,128 --jobs 4000
    /usr/bin/python3 bench/dispatch_scaling.py --bin /path/to/other/bulkhead   # compare builds

For each N it starts `build/bulkhead serve` with one echo pool of N workers
(bench/handlers/bench_handlers.py:echo), waits until all N are idle, measures the daemon's idle
CPU for a few seconds (periodic sampling of N workers costs CPU whether jobs run or not), then
drives --jobs 100-byte echo jobs with --callers raw keep-alive socket callers
(benchlib.RawJobConnection, one thread each) and reads the daemon's CPU from /proc
(benchlib.cpu_seconds). It prints, per N: jobs/s, daemon CPU per job, the same net of the idle
rate over the run, and each relative to N = 2. The goal: net CPU per job within 1.2x from 2 to
256 workers. --no-maps-bound sets max_maps = 0, which turns off the after-job /proc samples: their
maps-reading budget is per worker (core/sampling_schedule.h), so with many workers nearly every
job ends with a /proc/PID/maps read, a cost per job that grows with the pool outside core::Pool.
On a shared machine compare runs taken back to back (--bin selects the other build).

Memory: a worker is a Python interpreter (~20 MB): 256 workers need about 5 GB. The bench refuses
a size whose workers would not fit in MemAvailable (less a margin) and says so; pass a smaller
--workers list then. Standard library only.
"""

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time

import benchlib
from benchlib import BIN, HANDLERS, PYTHON, cpu_seconds, fmt, log, meminfo_kb

benchlib.set_log_tag("scale")
POOL = "echo"
PAYLOAD = bytes(range(100))
WORKER_MB = 25        # per-worker memory assumed when checking that N workers fit
READY_DEADLINE_S = 600

CONFIG = """\
[server]
listen = "127.0.0.1:0"

[pool.{pool}]
handler = "bench_handlers:echo"
python = "{python}"
python_path = [{handlers}]
workers = {workers}
queue_limit = 10000
job_timeout = "60s"
startup_timeout = "300s"
env = {{ OMP_NUM_THREADS = "1", MKL_NUM_THREADS = "1" }}
{extra}"""


def drive(daemon, jobs, callers):
    """`jobs` echo calls spread over `callers` threads, each on its own keep-alive socket;
    returns the wall seconds."""
    conns = []
    for _ in range(callers):
        sock = socket.create_connection((daemon.host, daemon.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(benchlib.RawJobConnection(sock, POOL))
    errors = []

    def run(conn, n):
        try:
            for _ in range(n):
                if conn.call(PAYLOAD) != PAYLOAD:
                    raise RuntimeError("echo answered something else")
        except Exception as e:  # reported by the main thread
            errors.append(e)

    share = [jobs // callers + (1 if i < jobs % callers else 0) for i in range(callers)]
    threads = [threading.Thread(target=run, args=(c, n)) for c, n in zip(conns, share)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    for c in conns:
        c.close()
    if errors:
        raise RuntimeError("a caller failed: %r" % errors[0])
    return wall


def measure(binary, workers, args, tmpdir):
    d = benchlib.Daemon(binary, os.path.join(tmpdir, "bulkhead-%d.toml" % workers),
                        CONFIG.format(pool=POOL, python=PYTHON, workers=workers,
                                      handlers=json.dumps(HANDLERS),
                                      extra=("max_maps = 0\n" if args.no_maps_bound else "")
                                      + 'prefetch_below = "%s"\n' % args.prefetch_below),
                        label="scale: daemon with %d workers" % workers)
    d.spawn(os.path.join(tmpdir, "daemon-%d.log" % workers))
    try:
        d.wait_healthy(60)
        if d.wait_ready(READY_DEADLINE_S, poll_s=0.5, progress_s=10) is None:
            raise SystemExit("scale: %d workers not idle within %d s" % (workers,
                                                                         READY_DEADLINE_S))
        drive(d, min(args.jobs, 500), args.callers)  # warm up: connections, allocator, caches
        c0, t0 = cpu_seconds(d.pid), time.monotonic()
        time.sleep(args.idle_s)
        idle_rate = (cpu_seconds(d.pid) - c0) / (time.monotonic() - t0)
        c1 = cpu_seconds(d.pid)
        wall = drive(d, args.jobs, args.callers)
        cpu = cpu_seconds(d.pid) - c1
    finally:
        d.stop()
    return {"workers": workers, "wall": wall, "rate": args.jobs / wall,
            "us": cpu / args.jobs * 1e6, "idle_pct": idle_rate * 100,
            "net_us": max(0.0, cpu - idle_rate * wall) / args.jobs * 1e6}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="2,16,64,256", help="pool sizes, comma-separated")
    ap.add_argument("--jobs", type=int, default=5000, help="measured jobs per size")
    ap.add_argument("--callers", type=int, default=4, help="concurrent socket callers")
    ap.add_argument("--idle-s", type=float, default=3.0, help="idle CPU measured this long")
    ap.add_argument("--bin", default=BIN, help="the bulkhead binary (default build/bulkhead)")
    ap.add_argument("--prefetch-below", default="0s",
                    help="the pool's prefetch_below (default %(default)s: off). With 4 callers "
                    "and 2 workers jobs queue, so prefetch would make N=2 cheaper per job while "
                    "N=256 never queues: off, both ends measure the same dispatch")
    ap.add_argument("--no-maps-bound", action="store_true",
                    help="max_maps = 0: no after-job /proc samples (their maps-reading budget is "
                    "per worker, so their cost per job grows with the pool)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.workers.split(",")]
    avail_mb = meminfo_kb("MemAvailable") / 1024
    for n in sizes:
        if n * WORKER_MB > avail_mb - 2048:
            raise SystemExit("scale: %d workers need about %d MB, MemAvailable is %d MB: pass a "
                             "smaller --workers list" % (n, n * WORKER_MB, avail_mb))
    log("binary %s; load average %s" % (args.bin, benchlib.loadavg()))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bulkhead-scale-") as tmpdir:
        try:
            for n in sizes:
                log("%d workers: starting" % n)
                rows.append(measure(args.bin, n, args, tmpdir))
                r = rows[-1]
                log("%d workers: %.0f jobs/s, %.1f us CPU per job (%.1f net of idle %.1f%%)"
                    % (n, r["rate"], r["us"], r["net_us"], r["idle_pct"]))
        finally:
            benchlib.kill_daemons()
    base = rows[0]
    print("daemon CPU per job, %d echo jobs, %d raw socket callers, %s%s; load %s"
          % (args.jobs, args.callers, args.bin,
             (", max_maps = 0" if args.no_maps_bound else "")
             + ", prefetch_below = %s" % args.prefetch_below,
             benchlib.loadavg()))
    print("| workers | jobs/s | CPU us/job | idle CPU %% | net us/job | net vs N=%d |"
          % base["workers"])
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = r["net_us"] / base["net_us"] if base["net_us"] else float("nan")
        print("| %d | %s | %s | %s | %s | %.2fx |" % (r["workers"], fmt(r["rate"]), fmt(r["us"]),
                                                     fmt(r["idle_pct"]), fmt(r["net_us"]), ratio))
    return 0


if __name__ == "__main__":
    sys.exit(main())
