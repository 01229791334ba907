#!/usr/bin/python3
"""End-to-end benchmark: bulkhead beside what users would pick instead, measured in ONE run.

    /usr/bin/python3 bench/e2e_peers.py            # full run, a few minutes
    /usr/bin/python3 bench/e2e_peers.py --quick    # under a minute

What it measures, on whatever machine it runs on (BENCHMARKS.md's numbers were taken
on a 2-core machine; compare ratios within one run, not absolute times across runs):

1. 100-byte echo round trip, sequential calls, p50/p99 ms: bulkhead (the Python client over HTTP
   keep-alive, pool of 2 workers), concurrent.futures.ProcessPoolExecutor(2) (fork, and spawn with
   max_tasks_per_child), multiprocessing.Pool(2), loky (optional: python3-joblib), Celery
   prefork + Redis (optional: python3-celery python3-redis redis-server; full run only), and a
   fresh /usr/bin/python3 per job (fewer iterations).  The systems are measured in interleaved rounds so
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

Data path targets (bench/data_path_table.py): a second table after the targets, bulkhead vs the
best pool peer per metric, with echo throughput from ONE caller process with 32 in flight (32
threads with a Client each, and one AsyncClient with 32 tasks; each over TCP and, through a second
daemon with the echo pool alone, over a Unix socket), and the CNN's time outside the
handler (the handler times itself: bench_handlers.cnn_timed).  --with-scaling runs
bench/dispatch_scaling.py --workers 2,256 and --with-zygote bench/zygote.py --latency-only for
two more rows, after the rest.  The exit status follows the first targets only, unless
--data-path-targets-strict.

Profiling rows (not peers): the same daemon driven by a raw-socket Python client (no http.client)
and, if /usr/bin/wrk is installed (Debian package ``wrk``), by wrk, a C load generator: they
separate what the Python client costs from what the daemon costs.  Per-job CPU of the daemon, its
workers and the callers is measured during bulkhead's throughput runs from /proc.

The bench starts its own daemon (build/bulkhead serve) on a temp config listening on a free
127.0.0.1 port, waits for /healthz, and stops it with SIGTERM at the end.

This file owns the run (the daemon, the order of the measurements, the results); the systems
under test are bench/e2e_systems.py's, the load generators (and bulkhead's caller processes)
bench/e2e_load.py's, and the report bench/e2e_report.py's.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time

import benchlib
import data_path_table
from benchlib import (BIN, HANDLERS, MIB, PYTHON, ROOT, git_desc, loadavg, log, machine_line,
                      pct, proc_status_kb)

sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, HANDLERS)

import bench_handlers as bh  # noqa: E402  (imports no torch at module level)
import e2e_systems  # noqa: E402
from e2e_load import (bulkhead_throughput, inflight_throughput, sequential_latency,  # noqa: E402
                      subprocess_throughput, wrk_run)
from e2e_report import report  # noqa: E402
from e2e_systems import (CNN_PAYLOAD, CNN_POOL, ECHO_PAYLOAD, ECHO_POOL,  # noqa: E402
                         ECHO_SUBPROCESS, LIVE, READY_DEADLINE_S, BulkheadSys, CelerySys,
                         MpPoolSys, PeerHung, RawSocketSys, SubprocessSys, TimedSys, close_all,
                         have_loky, make_loky, make_ppe, make_ppe_spawn, rss_mb)

benchlib.set_log_tag("bench")
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
handler = "bench_handlers:cnn_timed"
preload = "bench_handlers:cnn_preload"
python = "{python}"
python_path = [{handlers}]
workers = 2
queue_limit = 10000
job_timeout = "60s"
startup_timeout = "170s"
env = {{ OMP_NUM_THREADS = "1", MKL_NUM_THREADS = "1" }}
"""


class Daemon(benchlib.Daemon):
    def __init__(self, tmpdir, binary=BIN):
        super().__init__(binary, os.path.join(tmpdir, "bulkhead.toml"),
                         CONFIG.format(echo=ECHO_POOL, cnn=CNN_POOL, python=PYTHON,
                                       handlers=json.dumps(HANDLERS)),
                         label="bench: the daemon", error=SystemExit, keep_alive=False)
        self.spawn(os.path.join(tmpdir, "daemon.log"))

    def wait_ready(self):
        pools = super().wait_ready(READY_DEADLINE_S, poll_s=0.1)
        if pools is None:
            state = json.dumps(self.pools())
            self.kill()
            sys.exit("bench: pools not ready within %d s: %s\n%s"
                     % (READY_DEADLINE_S, state, self.log()))
        return pools


class UnixEchoDaemon(benchlib.Daemon):
    """A second daemon, the echo pool alone, listening on a Unix socket: the one-process
    throughput rows also run over it (a caller on the same machine, as the in-process peers'
    pipes are)."""

    def __init__(self, tmpdir, binary=BIN):
        text = CONFIG[:CONFIG.index("[pool.{cnn}]")].replace(
            'listen = "127.0.0.1:0"', 'listen = "unix:%s"' % os.path.join(tmpdir, "echo.sock"))
        super().__init__(binary, os.path.join(tmpdir, "bulkhead-unix.toml"),
                         text.format(echo=ECHO_POOL, python=PYTHON,
                                     handlers=json.dumps(HANDLERS)),
                         label="bench: the unix-socket daemon", error=SystemExit,
                         keep_alive=False)
        self.spawn(os.path.join(tmpdir, "daemon-unix.log"))
        self.wait_healthy()
        if super().wait_ready(READY_DEADLINE_S, poll_s=0.1) is None:
            self.kill()
            sys.exit("bench: the unix-socket daemon's pool did not get ready:\n" + self.log())


# -- main ---------------------------------------------------------------------------------------

def main():
    import faulthandler
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1 PID: where is it stuck
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    ap.add_argument("--bin", default=BIN, help="the bulkhead binary (default: %(default)s)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temp dir (config, daemon/celery logs, result.md)")
    ap.add_argument("--with-scaling", action="store_true",
                    help="data path table: also run bench/dispatch_scaling.py --workers 2,256 "
                    "(about 20 s on 2 cores; 256 workers need about 6.5 GB)")
    ap.add_argument("--with-zygote", action="store_true",
                    help="data path table: also run bench/zygote.py --latency-only (about 15 s "
                    "on 2 cores)")
    ap.add_argument("--data-path-targets-strict", action="store_true",
                    help="a missed data path target fails the run too (exit status 1)")
    args = ap.parse_args()
    q = args.quick
    if q:
        e2e_systems.STALL_S = 5.0
    cfg = {
        "quick": q, "bin": os.path.abspath(args.bin),
        "echo_n": 1500 if q else 8000, "rounds": 3 if q else 8,
        "echo_sub_n": 15 if q else 60,
        "tput_s": 1.5 if q else 3.0,
        "tput_configs": [(2, 8), (4, 8)] if q else [(1, 8), (2, 4), (2, 8), (4, 4), (4, 8),
                                                    (8, 4)],
        "tput_repeats": 1 if q else 3,
        "cnn_n": 60 if q else 300, "cnn_sub_n": 3 if q else 7,
        "mib_n": 10 if q else 40, "big_n": 0 if q else 7,
        "celery_n": 1000, "celery_cnn_n": 100,
    }
    if not os.path.exists(cfg["bin"]):
        sys.exit("bench: %s not built (ninja -C build)" % cfg["bin"])

    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)

    tmpdir = tempfile.mkdtemp(prefix="bulkhead-bench-")
    log("machine: %s; load average %s" % (machine_line(), loadavg()))
    st = os.stat(cfg["bin"])
    cfg["bin_desc"] = "%s (%.1f MB, built %s)" % (
        cfg["bin"], st.st_size / 1e6, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime)))
    cfg["git"] = git_desc()
    cfg["load_start"] = loadavg()
    daemon = Daemon(tmpdir, cfg["bin"])
    r = None
    try:
        r = run_all(daemon, cfg, tmpdir)
    except BaseException:
        log("failed; config and logs kept in %s" % tmpdir)
        args.keep = True
        raise
    finally:
        for s in list(LIVE):
            s.kill()
        CelerySys.stop_redis()
        t = time.monotonic()
        rc = daemon.stop()
        stop_s = time.monotonic() - t
        log("daemon stopped with SIGTERM: exit %s after %.2f s" % (rc, stop_s))
    cfg["load_end"] = loadavg()
    r["stop"] = (rc, stop_s)
    # After the daemon stopped: these benches start daemons of their own.
    if args.with_scaling:
        r["scaling"] = data_path_table.run_scaling(cfg)
    if args.with_zygote:
        r["zygote"] = data_path_table.run_zygote(cfg)
    cfg["load_table"] = loadavg()
    text, ok, dp_ok = report(r, cfg)
    if args.data_path_targets_strict:
        ok = ok and dp_ok
    print(text, flush=True)
    if args.keep:
        with open(os.path.join(tmpdir, "result.md"), "w") as f:
            f.write(text + "\n")
        log("config, logs and result.md kept in %s" % tmpdir)
    else:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return 0 if ok else 1


def run_all(daemon, cfg, tmpdir):
    q = cfg["quick"]
    res = {}     # key -> dict of measurements
    names = {}
    hung = {}    # key -> what happened
    notes = []
    r = {"res": res, "names": names, "hung": hung, "notes": notes}

    def put(key, name=None, **kw):
        if name:
            names.setdefault(key, name)
        res.setdefault(key, {}).update(kw)

    daemon.wait_healthy()
    log("daemon pid %d at %s, /healthz ok; waiting for its 4 workers (2 import torch)"
        % (daemon.pid, daemon.url))
    t = time.monotonic()
    daemon.wait_ready()
    log("pools ready after %.1f s" % (time.monotonic() - t))
    r["sup_rss_start"] = proc_status_kb(daemon.pid, "VmRSS") / 1024.0

    # ---- 1. echo latency ---------------------------------------------------------------------
    log("echo: starting the pool peers")
    systems = [BulkheadSys(daemon, ECHO_POOL), make_ppe(bh.echo, ECHO_PAYLOAD),
               make_ppe_spawn(bh.echo, ECHO_PAYLOAD), MpPoolSys(bh.echo, ECHO_PAYLOAD)]
    if have_loky():
        systems.append(make_loky(bh.echo, ECHO_PAYLOAD))
    else:
        notes.append("loky skipped: joblib not importable (apt-get install python3-joblib)")
    raw = RawSocketSys(daemon, ECHO_POOL)
    for s in systems + [raw]:
        put(s.key, s.name)
    log("echo latency: %d sequential calls each, %d interleaved rounds"
        % (cfg["echo_n"], cfg["rounds"]))
    lat = sequential_latency(systems + [raw], ECHO_PAYLOAD, cfg["echo_n"], cfg["rounds"],
                             check=lambda out: out == ECHO_PAYLOAD, hung=hung)
    for s in systems + [raw]:
        put(s.key, echo_p50=pct(lat[s.key], 50), echo_p99=pct(lat[s.key], 99),
            echo_n=len(lat[s.key]))
    systems = [s for s in systems if s.key not in hung]
    sub = SubprocessSys([PYTHON, "-c", ECHO_SUBPROCESS])
    put(sub.key, sub.name)
    log("echo latency: %d fresh subprocesses" % cfg["echo_sub_n"])
    sl = sequential_latency([sub], ECHO_PAYLOAD, cfg["echo_sub_n"], 1)
    put(sub.key, echo_p50=pct(sl[sub.key], 50), echo_p99=pct(sl[sub.key], 99))
    celery = None
    why = CelerySys.missing()
    if why:
        notes.append("Celery skipped: %s (apt-get install python3-celery python3-redis "
                     "redis-server)" % why)
    elif q:
        notes.append("Celery (optional, installed) runs in the full run only")
    else:
        log("echo latency: Celery worker starting")
        CelerySys.start_redis(tmpdir)
        celery = CelerySys(tmpdir, cnn=False)
        put(celery.key, celery.name)
        log("echo latency: %d sequential Celery calls" % cfg["celery_n"])
        cl = sequential_latency([celery], ECHO_PAYLOAD, cfg["celery_n"], 1,
                                check=lambda out: out == ECHO_PAYLOAD, hung=hung)
        put(celery.key, echo_p50=pct(cl[celery.key], 50), echo_p99=pct(cl[celery.key], 99))
        if celery.key in hung:
            celery = None

    # ---- 2. throughput ----------------------------------------------------------------------
    # First a sweep of bulkhead caller configurations (processes x threads) picks the best one;
    # then that configuration and every peer run in interleaved repeats, and each system's
    # median over the repeats is reported (the same number of tries for everyone).
    tried = []
    for procs, threads in cfg["tput_configs"]:
        rate, cpu = bulkhead_throughput(daemon, procs, threads, cfg["tput_s"])
        tried.append((procs, threads, rate, cpu))
        log("throughput sweep, bulkhead %d procs x %d threads: %.0f jobs/s (CPU per job: daemon "
            "%.0f us, workers %.0f us, callers %.0f us)"
            % (procs, threads, rate, cpu["daemon_us"], cpu["workers_us"], cpu["callers_us"]))
    bprocs, bthreads = max(tried, key=lambda x: x[2])[:2]
    rates = {}
    best_runs = []
    one_proc = []   # the data path row: one caller process with 32 in flight, as the peers
    one_proc_async = []   # ... the same with AsyncClient and 32 tasks
    one_proc_unix, one_proc_unix_async = [], []     # ... both over a Unix socket
    log("throughput: starting a second daemon, the echo pool on a Unix socket")
    unix_daemon = UnixEchoDaemon(tmpdir, cfg["bin"])
    for rep in range(cfg["tput_repeats"]):
        rate, cpu = bulkhead_throughput(daemon, bprocs, bthreads, cfg["tput_s"])
        best_runs.append((bprocs, bthreads, rate, cpu))
        rates.setdefault("bulkhead", []).append(rate)
        log("throughput bulkhead %d x %d: %.0f jobs/s" % (bprocs, bthreads, rate))
        rate = bulkhead_throughput(daemon, 1, 32, cfg["tput_s"])[0]
        one_proc.append(rate)
        log("throughput bulkhead 1 x 32 (one caller process, 32 threads): %.0f jobs/s" % rate)
        rate = bulkhead_throughput(daemon, 1, 32, cfg["tput_s"], use_async=True)[0]
        one_proc_async.append(rate)
        log("throughput bulkhead, one caller process, AsyncClient with 32 tasks: %.0f jobs/s"
            % rate)
        one_proc_unix.append(bulkhead_throughput(unix_daemon, 1, 32, cfg["tput_s"])[0])
        one_proc_unix_async.append(
            bulkhead_throughput(unix_daemon, 1, 32, cfg["tput_s"], use_async=True)[0])
        log("throughput bulkhead over a Unix socket, one caller process: 32 threads %.0f, "
            "AsyncClient with 32 tasks %.0f jobs/s" % (one_proc_unix[-1], one_proc_unix_async[-1]))
        for s in list(systems[1:]):
            try:
                rate = inflight_throughput(s, ECHO_PAYLOAD, cfg["tput_s"])
            except PeerHung as exc:
                log("throughput %s HUNG: %s" % (s.key, exc))
                hung[s.key] = "hung in the throughput run: %s" % exc
                systems.remove(s)
                s.kill()
                continue
            log("throughput %s, 32 in flight: %.0f jobs/s" % (s.key, rate))
            rates.setdefault(s.key, []).append(rate)
        if celery is not None:
            rate = celery.throughput(ECHO_PAYLOAD, cfg["tput_s"])
            log("throughput celery, 32 in flight: %.0f jobs/s" % rate)
            rates.setdefault(celery.key, []).append(rate)
        if rep == 0:
            rate = subprocess_throughput(sub, ECHO_PAYLOAD, cfg["tput_s"])
            log("throughput subprocess, 2 launchers: %.0f jobs/s" % rate)
            rates[sub.key] = [rate]
    for key, vals in rates.items():
        put(key, tput=sorted(vals)[len(vals) // 2], tput_all=vals)
    put("bulkhead", tput_cfg="%d procs x %d threads" % (bprocs, bthreads),
        tput_1x32=sorted(one_proc)[len(one_proc) // 2], tput_1x32_all=one_proc,
        tput_1x32_async=sorted(one_proc_async)[len(one_proc_async) // 2],
        tput_1x32_async_all=one_proc_async,
        tput_1x32_unix=sorted(one_proc_unix)[len(one_proc_unix) // 2],
        tput_1x32_unix_all=one_proc_unix,
        tput_1x32_unix_async=sorted(one_proc_unix_async)[len(one_proc_unix_async) // 2],
        tput_1x32_unix_async_all=one_proc_unix_async)
    unix_daemon.stop()
    best_runs.sort(key=lambda x: x[2])
    r["tput_tried"], r["tput_best"] = tried, best_runs[len(best_runs) // 2]
    w = wrk_run(daemon, 1, 2 if q else 3, tmpdir)
    if w:
        put("wrk", "bulkhead driven by wrk, C (profiling)", echo_p50=w["p50"], echo_p99=w["p99"])
        best_w = None
        r["wrk_runs"] = runs = []
        # 8..64 connections: the daemon's throughput; 1000+ connections: jobs waiting in the
        # queue (the bench's echo pool takes 10,000), to see whether per-job cost grows with it.
        for conns in ([32, 2000] if q else [8, 32, 64, 1000, 4000]):
            ww = wrk_run(daemon, conns, 2 if q else 3, tmpdir)
            log("wrk -c%d: %.0f req/s, daemon CPU %.0f us per job, non-2xx %s"
                % (conns, ww["rps"], ww["daemon_us"] or 0, ww["non2xx"]))
            runs.append((conns, ww["rps"], ww["daemon_us"]))
            if conns <= 64 and (best_w is None or ww["rps"] > best_w[1]):
                best_w = (conns, ww["rps"])
        put("wrk", tput=best_w[1], tput_cfg="1 thread, %d connections" % best_w[0])
    else:
        notes.append("wrk rows skipped: /usr/bin/wrk not installed (apt-get install wrk)")
    r["echo_worker_rss"] = {s.key: rss_mb(s.worker_pids()) for s in systems}
    raw.close()
    close_all(systems[1:])
    if celery is not None:
        r["echo_worker_rss"][celery.key] = rss_mb(celery.worker_pids())
        r["celery_main_echo"] = celery.main_rss_mb()
        celery.close()

    # ---- 3. warm CNN inference ---------------------------------------------------------------
    log("CNN: starting the pool peers with the model built in their initializer")
    # The timed handlers append their own time to the logits: TimedSys strips it and keeps it.
    cnn = bh.cnn_global_timed
    cnn_systems = [BulkheadSys(daemon, CNN_POOL), make_ppe(cnn, CNN_PAYLOAD, bh.init_model)]
    if not q:
        cnn_systems.append(MpPoolSys(cnn, CNN_PAYLOAD, bh.init_model))
        if "PPE-spawn" not in hung:
            cnn_systems.append(make_ppe_spawn(cnn, CNN_PAYLOAD, bh.init_model))
        if have_loky():
            cnn_systems.append(make_loky(cnn, CNN_PAYLOAD, bh.init_model))
    cnn_systems = [TimedSys(s) for s in cnn_systems]
    celery = None
    if CelerySys.redis is not None:
        log("CNN: Celery worker starting (children build the model in worker_process_init)")
        celery = CelerySys(tmpdir, cnn=True)
    expected = cnn_systems[0].call(CNN_PAYLOAD)
    log("CNN: %d sequential inferences each, %d interleaved rounds"
        % (cfg["cnn_n"], cfg["rounds"]))
    cnn_hung = {}
    cl = sequential_latency(cnn_systems, CNN_PAYLOAD, cfg["cnn_n"], cfg["rounds"],
                            check=lambda out: out == expected, hung=cnn_hung)
    for key, what in cnn_hung.items():
        hung.setdefault(key, "CNN: " + what)
    cnn_systems = [s for s in cnn_systems if s.key not in cnn_hung]
    for s in cnn_systems:
        put(s.key, cnn_p50=pct(cl[s.key], 50), cnn_p99=pct(cl[s.key], 99),
            cnn_inner_p50=pct(s.inner, 50))
    r["cnn_worker_rss"] = {s.key: rss_mb(s.worker_pids()) for s in cnn_systems}
    if celery is not None:
        log("CNN: %d sequential Celery inferences" % cfg["celery_cnn_n"])
        cc = sequential_latency([celery], CNN_PAYLOAD, cfg["celery_cnn_n"], 1,
                                check=lambda out: out == expected, hung=hung)
        put(celery.key, cnn_p50=pct(cc[celery.key], 50))
        r["cnn_worker_rss"][celery.key] = rss_mb(celery.worker_pids())
        r["celery_main_cnn"] = celery.main_rss_mb()
        if celery.key in hung:
            celery = None
    close_all(cnn_systems)
    cnn_sub = SubprocessSys([PYTHON, os.path.join(HANDLERS, "bench_handlers.py")])
    log("CNN: %d fresh interpreters that import torch and build the model" % cfg["cnn_sub_n"])
    if cnn_sub.call(CNN_PAYLOAD) != expected:
        raise RuntimeError("subprocess CNN result differs from bulkhead's")
    csl = sequential_latency([cnn_sub], CNN_PAYLOAD, cfg["cnn_sub_n"], 1)
    put("subprocess", cnn_p50=pct(csl["subprocess"], 50))
    reps = cnn_sub.reports
    r["import_torch_s"] = sorted(float(x["import_torch_s"]) for x in reps)[len(reps) // 2]
    r["sub_peak_mb"] = max(int(x["maxrss_kb"]) for x in reps) / 1024.0

    r["sup_rss_runs"] = proc_status_kb(daemon.pid, "VmRSS") / 1024.0
    r["sup_hwm_runs"] = proc_status_kb(daemon.pid, "VmHWM") / 1024.0
    log("supervisor after echo/throughput/CNN: VmRSS %.1f MB, VmHWM %.1f MB"
        % (r["sup_rss_runs"], r["sup_hwm_runs"]))

    # ---- 4. large payloads (last: they may grow the supervisor's heap) -----------------------
    big = [BulkheadSys(daemon, ECHO_POOL), make_ppe(bh.echo, ECHO_PAYLOAD),
           MpPoolSys(bh.echo, ECHO_PAYLOAD)]
    if not q and "PPE-spawn" not in hung:
        big.append(make_ppe_spawn(bh.echo, ECHO_PAYLOAD))
    if have_loky():
        big.append(make_loky(bh.echo, ECHO_PAYLOAD))
    if celery is not None:   # the CNN worker runs the echo task too
        celery.fn = celery.bc.echo
        big.append(celery)
    sizes = [(MIB, cfg["mib_n"], "mib")]
    if cfg["big_n"]:
        sizes.append((64 * MIB, cfg["big_n"], "big"))
    for size, n, tag in sizes:
        if tag == "big":
            r["sup_hwm_before_big"] = proc_status_kb(daemon.pid, "VmHWM") / 1024.0
        payload = os.urandom(size)
        log("round trips of %d MiB: %d each" % (size // MIB, n))
        big_hung = {}
        bl = sequential_latency(big, payload, n, n, check=lambda out, p=payload: out == p,
                                hung=big_hung, warm=False)
        for key, what in big_hung.items():
            hung.setdefault(key, "%d MiB: %s" % (size // MIB, what))
        big = [s for s in big if s.key not in big_hung]
        for s in big:
            put(s.key, **{tag: pct(bl[s.key], 50)})
        sl = sequential_latency([sub], payload, 5 if size == MIB else 2, 1, warm=False)
        put("subprocess", **{tag: pct(sl["subprocess"], 50)})
        del payload
    close_all(big)
    systems[0].close()
    # The daemon keeps freed payload blocks while jobs keep coming and returns them once quiet
    # for ~2 s (src/os/heap_reuse.h): measure what it retains when idle, not mid-release.
    idle_until = time.monotonic() + 10
    time.sleep(0.5)
    while (time.monotonic() < idle_until
           and proc_status_kb(daemon.pid, "VmRSS") / 1024.0 > 20):
        time.sleep(0.25)
    r["sup_rss_end"] = proc_status_kb(daemon.pid, "VmRSS") / 1024.0
    r["sup_hwm_end"] = proc_status_kb(daemon.pid, "VmHWM") / 1024.0
    log("supervisor at the end: VmRSS %.1f MB, VmHWM %.1f MB"
        % (r["sup_rss_end"], r["sup_hwm_end"]))
    return r


if __name__ == "__main__":
    rc = main()
    # An executor abandoned after a hang (PPE with max_tasks_per_child) would block the
    # interpreter's exit joining its manager thread: leave without waiting for it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
