#!/usr/bin/python3
"""bench/e2e_peers.py's load generators: sequential latency in interleaved rounds, throughput
with a window of jobs in flight (the pool peers), subprocess-per-job launchers, bulkhead's
caller processes (threads with a Client each, or asyncio tasks on one AsyncClient: run as
``e2e_load.py --caller URL POOL N [async]``) and wrk.  Waits on peers are bounded by
``e2e_systems.STALL_S``.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

from benchlib import HANDLERS, PYTHON, ROOT, cpu_seconds_sum, log

sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, HANDLERS)

import bulkhead  # noqa: E402
import e2e_systems  # noqa: E402
from e2e_systems import ECHO_PAYLOAD, ECHO_POOL, PeerHung  # noqa: E402


# -- measurements -------------------------------------------------------------------------------

def sequential_latency(systems, payload, n, rounds, check=None, hung=None, warm=True):
    """Interleaved rounds of n/rounds sequential calls per system; returns {key: [seconds]}.
    A system that hangs (PeerHung) is killed, noted in ``hung`` and left out of later rounds."""
    per = max(1, n // rounds)
    samples = {s.key: [] for s in systems}
    active = list(systems)
    for _ in range(rounds):
        for s in list(active):
            acc = samples[s.key]
            clock = time.perf_counter
            try:
                if warm:  # one unmeasured call: wake the path up after the other systems
                    out = s.call(payload)
                    if check is not None and not check(out):
                        raise RuntimeError("%s returned a wrong result" % s.name)
                for _ in range(per):
                    t = clock()
                    out = s.call(payload)
                    acc.append(clock() - t)
                    if not warm and check is not None and not check(out):
                        raise RuntimeError("%s returned a wrong result" % s.name)
            except PeerHung as exc:
                log("%s HUNG during sequential calls: %s" % (s.key, exc))
                if hung is not None:
                    hung[s.key] = "hung after %d sequential calls" % len(acc)
                active.remove(s)
                s.kill()
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
        if not sem.acquire(timeout=e2e_systems.STALL_S):
            raise PeerHung("no job finished for %g s, %d of %d done"
                           % (e2e_systems.STALL_S, done[0], submitted))
        system.submit_cb(payload, cb)
        submitted += 1
    for _ in range(inflight):  # wait for the outstanding ones
        if not sem.acquire(timeout=e2e_systems.STALL_S):
            raise PeerHung("no job finished for %g s, %d of %d done"
                           % (e2e_systems.STALL_S, done[0], submitted))
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


def async_caller_main(url, pool, ntasks):
    """caller_main with ``ntasks`` asyncio tasks on one ``AsyncClient`` (as many connections)
    instead of threads: one caller process with ``ntasks`` in flight, without the GIL handoffs
    of as many threads."""
    import asyncio
    payload = ECHO_PAYLOAD

    async def main():
        async with bulkhead.AsyncClient(url, max_connections=ntasks) as client:
            await asyncio.gather(*(client.call(pool, payload) for _ in range(ntasks * 5)))
            print("ready", flush=True)
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            start, end = (float(x) for x in line.split())
            while time.monotonic() < start:
                await asyncio.sleep(0.0005)
            cpu0 = time.process_time()

            async def run():
                n = 0
                call, mono = client.call, time.monotonic
                while True:
                    await call(pool, payload)
                    if mono() >= end:
                        return n
                    n += 1
            counts = await asyncio.gather(*(run() for _ in range(ntasks)),
                                          return_exceptions=True)
            return counts, time.process_time() - cpu0

    counts, cpu = asyncio.run(main())
    errors = [repr(c) for c in counts if isinstance(c, BaseException)]
    jobs = sum(c for c in counts if not isinstance(c, BaseException))
    print(json.dumps({"jobs": jobs, "cpu_s": cpu, "errors": errors}), flush=True)


def caller_main(argv):
    """--caller URL POOL THREADS [async]: a load-generating process for bulkhead's throughput
    test.  Prints 'ready', reads 'START END' (time.monotonic values) on stdin, runs until END,
    prints a JSON line with the jobs completed inside [START, END] and this process's CPU
    seconds.  With "async": THREADS asyncio tasks on one AsyncClient instead."""
    url, pool, nthreads = argv[0], argv[1], int(argv[2])
    if argv[3:] == ["async"]:
        return async_caller_main(url, pool, nthreads)
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


def bulkhead_throughput(daemon, procs, threads, duration, use_async=False):
    """Caller processes x threads, one Client per thread (``use_async``: x asyncio tasks on one
    AsyncClient); returns (jobs/s, cpu breakdown)."""
    argv = [PYTHON, os.path.abspath(__file__), "--caller", daemon.url, ECHO_POOL, str(threads)]
    if use_async:
        argv.append("async")
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
        d0, w0 = cpu_seconds_sum([daemon.pid]), cpu_seconds_sum(wpids)
        while time.monotonic() < end:
            time.sleep(0.005)
        d1, w1 = cpu_seconds_sum([daemon.pid]), cpu_seconds_sum(wpids)
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


def wrk_run(daemon, conns, duration, tmpdir):
    """wrk (C) against the same endpoint: requests/s, p50/p99 ms, and the daemon's CPU time per
    request over the run (utime+stime from /proc)."""
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
    cpu0 = cpu_seconds_sum([daemon.pid])
    out = subprocess.run(["wrk", "-t1", "-c%d" % conns, "-d%ds" % duration, "--timeout", "60s",
                          "-s", script, "%s/v1/pools/%s/jobs" % (daemon.url, ECHO_POOL)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    cpu = cpu_seconds_sum([daemon.pid]) - cpu0
    rps = re.search(r"Requests/sec:\s*([0-9.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    lat = re.search(r"LAT (\d+) (\d+)", out)
    err = re.search(r"ERR (\d+)", out)
    if not rps:
        return None
    return {"rps": float(rps.group(1)),
            "p50": int(lat.group(1)) / 1000.0 if lat else None,
            "p99": int(lat.group(2)) / 1000.0 if lat else None,
            "non2xx": int(err.group(1)) if err else None,
            "daemon_us": cpu / int(n.group(1)) * 1e6 if n and int(n.group(1)) else None}


if __name__ == "__main__" and sys.argv[1:2] == ["--caller"]:
    caller_main(sys.argv[2:])
