#!/usr/bin/python3
"""Zygote-mode benchmark: replacement after a crash, and memory shared by forked workers.

    /usr/bin/python3 bench/zygote.py            # full run, about 2.5 minutes
    /usr/bin/python3 bench/zygote.py --quick    # under a minute
    # options: --bin PATH (another bulkhead binary; it is copied into the temp dir first),
    #          --keep (keep the temp dir: configs, logs, result.md), --verbose (every crash),
    #          --latency-only (part 1's bulkhead rows only), --cases zygote-warm,zygote,spawn (and
    #          the same with -standby: `standby = 1`, the replacement READY before the crash),
    #          --crashes N, --sdk-before DIR (before/after: each zygote case also runs with
    #          the worker SDK in DIR, e.g. python/ of an older checkout, just before this tree's),
    #          --rounds R (every latency row R times, interleaved, samples pooled)

1. Replacement after a crash, torch CNN preloaded (bench/handlers/zygote_cnn.py): a 1-worker pool,
   mode = "zygote" and mode = "spawn", retries = 0, poison_after = 0.  Each cycle: the worker has
   served a job (so the crash is not counted as a crash loop), the bench POSTs b"crash" (the
   handler calls os.abort()), and as soon as the 502 "crashed" answer is back POSTs a normal job,
   which waits in the queue for the replacement.  From the pool's events (GET /v1/pools/cnn, whose
   age_s all come from one clock reading): crashed -> started (the replacement's pid is known:
   fork for zygote, fork+exec for spawn) -> ready (HELLO, init with its warm-up forward pass,
   READY; spawn also imports torch and runs preload).  Crashed -> next job's 200 (the crashed
   event placed on this process's clock, to within half the snapshot request's round trip; the
   job was queued in the meantime).  Client side: crash answer -> next job's 200.  Target:
   zygote crashed -> ready p50 <= 15 ms.
   Peer: concurrent.futures.ProcessPoolExecutor(1) (fork context) whose worker crashes: the
   executor is broken (BrokenProcessPool), so the replacement is a new executor and the first
   result from it: (a) initializer builds the model (the parent has no torch: like spawn), and
   (b) the parent ran preload before creating the executor, the initializer runs init (a
   do-it-yourself zygote).  The peer runs in a child interpreter (`--peer ...`), so that this
   process never imports torch.
2. Memory: preload_big holds the CNN and a 50,000,000 float32 torch.rand tensor (200 MB of random,
   non-zero data).  8 zygote workers, all idle after one job each (8 concurrent b"sleep:0.5"
   jobs), then Pss from /proc/PID/smaps_rollup of every worker and of the zygote; the same after
   one b"gcsleep:0.5" job per worker (gc.collect() in every worker: Python's GC writes to every
   tracked object's header and so un-shares their pages).  Compared with one spawn worker alone
   (a 1-worker spawn pool) and with 8 spawn workers.  Target: the 8 zygote workers plus the
   zygote (the workers alone are shown too) <= 2x the Pss of one spawn worker.  Peer:
   ProcessPoolExecutor(8) (fork) from a parent that ran preload_big, and the same with
   gc.freeze() in the parent before the fork.  Pss_File also drops when unrelated processes map
   libtorch: the table counts them, and shows Pss_Anon, which they cannot share.

Every daemon gets its own temp TOML config (listen 127.0.0.1:0; the port is read from its log),
waits for /healthz and for all workers idle with deadlines, and is stopped with SIGTERM; all of them
are SIGKILLed on the way out if something fails.  Standard library only in this process; the pools
and the peer need Debian's python3-torch.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import benchlib
from benchlib import (BIN, HANDLERS, PYTHON, begin_run, fmt, git_desc, loadavg, log,
                      machine_line, meminfo_kb, percentile, run_and_report)

benchlib.set_log_tag("zygote")

POOL = "cnn"
TARGET_MS = 15.0            # crash -> replacement ready p50, zygote-warm
READY_DEADLINE_S = 180      # 8 spawn workers import torch and fill 200 MB each on 2 CPUs
JOB_TIMEOUT_S = 60          # client side, per HTTP request
CYCLE_DEADLINE_S = 60       # a replacement that is not ready by then is an error
PEER_DEADLINE_S = 300       # one peer child, all its cycles

CONFIG = """\
[server]
listen = "127.0.0.1:0"

[pool.{pool}]
handler = "zygote_cnn:handle"
preload = "zygote_cnn:{preload}"
init = "zygote_cnn:{init}"
python = "{python}"
python_path = [{handlers}]
mode = "{mode}"
workers = {workers}
standby = {standby}
retries = 0
poison_after = 0
job_timeout = "60s"
startup_timeout = "120s"
env = {{ OMP_NUM_THREADS = "1", MKL_NUM_THREADS = "1" }}
"""


# key: (mode, preload, init, standby). The target is judged on zygote-warm, where the model is fully
# warmed up in the zygote; zygote shows what a warm-up pass in init adds (copy-on-write faults
# make it slower in a fresh fork than in a spawned worker).
# The -standby cases add `standby = 1`: a second worker, READY, takes the crashed one's place.
LATENCY_CASES = {
    "zygote-warm": ("zygote", "preload_warm", "init_light", 0),
    "zygote": ("zygote", "preload", "init", 0),
    "spawn": ("spawn", "preload", "init", 0),
    "zygote-warm-standby": ("zygote", "preload_warm", "init_light", 1),
    "zygote-standby": ("zygote", "preload", "init", 1),
    "spawn-standby": ("spawn", "preload", "init", 1),
}
LATENCY_LABELS = {
    "zygote-warm": 'mode = "zygote", warm-up pass in preload',
    "zygote": 'mode = "zygote", warm-up pass in init',
    "spawn": 'mode = "spawn", warm-up pass in init',
    "zygote-warm-standby": 'mode = "zygote", warm-up pass in preload, `standby = 1`',
    "zygote-standby": 'mode = "zygote", warm-up pass in init, `standby = 1`',
    "spawn-standby": 'mode = "spawn", warm-up pass in init, `standby = 1`',
}


class Daemon(benchlib.Daemon):
    def __init__(self, cfg, tag, mode, workers, preload, init="init", sdk=None, standby=0):
        """sdk: a BULKHEAD_SDK_DIR for this daemon's zygote and workers (None: the binary's own,
        python/ of the tree it was built from)."""
        text = CONFIG.format(pool=POOL, preload=preload, init=init, python=PYTHON,
                             handlers=json.dumps(HANDLERS), mode=mode, workers=workers,
                             standby=standby)
        self.standby = standby
        super().__init__(cfg["bin"], os.path.join(cfg["tmpdir"], tag + ".toml"), text,
                         label="daemon " + tag, error=RuntimeError, http_timeout=30,
                         stop_timeout=60)
        self.tag = tag
        # benchlib's spawn() inherits this process's environment: set the SDK only around it.
        saved = os.environ.get("BULKHEAD_SDK_DIR")
        if sdk:
            os.environ["BULKHEAD_SDK_DIR"] = sdk
        try:
            self.spawn(os.path.join(cfg["tmpdir"], tag + ".log"))
        finally:
            if saved is None:
                os.environ.pop("BULKHEAD_SDK_DIR", None)
            else:
                os.environ["BULKHEAD_SDK_DIR"] = saved

    def start(self):
        self.wait_healthy(deadline_s=30)
        pools = self.wait_ready(READY_DEADLINE_S, poll_s=0.1, progress_s=15)
        if pools is None:
            raise RuntimeError("%s: workers not all idle within %d s:\n%s"
                               % (self.label, READY_DEADLINE_S, self.log()[-4000:]))
        return time.monotonic() - self.started

    def finish(self, r):
        rc = self.stop()
        r.setdefault("stop_rc", {})[self.tag] = rc
        if rc != 0:
            log("  %s: exit status %s after SIGTERM" % (self.label, rc))


class Jobs:
    """One keep-alive http.client connection for POST /v1/pools/cnn/jobs."""

    def __init__(self, daemon):
        self.host, self.port = daemon.host, daemon.port
        self.conn = None
        self.reused = False

    def post(self, payload):
        """(status, parsed JSON body or None).  Sent again only if a kept-alive connection turned
        out to be closed (never after a timeout: a crash job must not run twice)."""
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port,
                                                       timeout=JOB_TIMEOUT_S)
                self.reused = False
            try:
                self.conn.request("POST", "/v1/pools/%s/jobs" % POOL, payload,
                                  {"Content-Type": "application/octet-stream"})
                r = self.conn.getresponse()
                body = r.read()
                self.reused = True
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError) as exc:
                stale = self.reused
                self.close()
                if attempt or not stale:
                    raise RuntimeError("job %r: %r" % (payload[:20], exc)) from None
                continue
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise RuntimeError("job %r: %r" % (payload[:20], exc)) from None
            try:
                return r.status, json.loads(body)
            except ValueError:
                return r.status, None

    def ok(self, payload):
        status, body = self.post(payload)
        if status != 200:
            raise RuntimeError("job %r: HTTP %s %s" % (payload[:20], status, body))
        return body

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# -- 1. replacement after a crash ---------------------------------------------------------------

def wait_steady(d, deadline_s=CYCLE_DEADLINE_S):
    """The pool's single serving worker, idle (and its standbys READY): its id and snapshot."""
    deadline = time.monotonic() + deadline_s
    while True:
        ws = d.pool(POOL)["workers"]
        serving = [w for w in ws if not w.get("standby")]
        standby = [w for w in ws if w.get("standby") and w["state"] == "standby"]
        if (len(serving) == 1 and serving[0]["state"] == "idle" and len(standby) == d.standby
                and len(ws) == 1 + d.standby):
            return serving[0]
        if time.monotonic() > deadline:
            raise RuntimeError("%s: pool not steady within %d s: %s" % (d.label, deadline_s, ws))
        time.sleep(0.02)


def crash_cycles(cfg, d, n):
    jobs = Jobs(d)
    res = {"crash_ready": [], "crash_started": [], "started_ready": [], "e2e": [],
           "crash_ok": [], "detect": [], "init": [], "errors": []}
    try:
        jobs.ok(b"warm")
        for i in range(n):
            old = wait_steady(d)
            if old["jobs_served"] < 1:
                jobs.ok(b"warm")        # a worker that dies before any job is a crash loop
                old = wait_steady(d)
            time.sleep(cfg["gap_s"])
            t0 = time.monotonic()
            status, body = jobs.post(b"crash")
            t1 = time.monotonic()
            if status == 200 or (body or {}).get("outcome") != "crashed":
                res["errors"].append("crash job answered %s %s" % (status, body))
                continue
            after = jobs.ok(b"after the crash")
            t2 = time.monotonic()
            if after.get("init_s") is not None:
                res["init"].append(after["init_s"])
            res["detect"].append(t1 - t0)
            res["e2e"].append(t2 - t1)
            # The events' age_s count back from the moment the daemon built this snapshot, on
            # its CLOCK_MONOTONIC, the clock of time.monotonic(): that moment lies between tb
            # and ta, so the crash is placed on our clock to within (ta - tb) / 2.
            tb = time.monotonic()
            snap = d.pool(POOL)
            ta = time.monotonic()
            ev = snap["events"]
            crashed = [k for k, e in enumerate(ev) if e["kind"] == "crashed"
                       and e["worker"] == old["id"]]
            if not crashed:
                res["errors"].append("no crashed event for %s" % old["id"])
                continue
            k = crashed[-1]
            started = [e for e in ev[k:] if e["kind"] == "started" and e["worker"] != old["id"]]
            ready = [e for e in ev[k:] if e["kind"] == "ready" and e["worker"] != old["id"]]
            if d.standby:
                # The replacement is the standby, started and READY long before: it is ready
                # when it is promoted (its "promoted" event says whether it was still starting).
                promoted = [e for e in ev[k:] if e["kind"] == "promoted"]
                if promoted and not promoted[0]["detail"].endswith(", ready"):
                    res["errors"].append("the standby was not ready yet: %s" % promoted[0])
                started = ready = promoted
            if not started or not ready:
                res["errors"].append("no started/ready event after the crash of %s: %s"
                                     % (old["id"], ev[k:]))
                continue
            c, s, rd = ev[k]["age_s"], started[0]["age_s"], ready[0]["age_s"]
            res["crash_ready"].append(c - rd)
            res["crash_ok"].append(t2 - ((ta + tb) / 2 - c))
            res.setdefault("clock_error", []).append((ta - tb) / 2)
            res["crash_started"].append(c - s)
            res["started_ready"].append(s - rd)
            if cfg["verbose"]:
                log("  crash %d: crashed->started %.1f ms, ->ready %.1f ms, ->next job ok %.1f "
                    "ms; crash answer %.1f ms, answer->next job ok %.1f ms"
                    % (i + 1, (c - s) * 1e3, (c - rd) * 1e3, res["crash_ok"][-1] * 1e3,
                       (t1 - t0) * 1e3, (t2 - t1) * 1e3))
        snap = d.pool(POOL)
        res["counters"] = snap["counters"]
        res["zygote"] = snap.get("zygote")
    finally:
        jobs.close()
    return res


def latency_runs(cfg):
    """(row key, case key, sdk) in the order they run.  With --sdk-before, each zygote case runs
    with the other SDK first, then with this tree's, back to back (same machine load)."""
    runs = []
    for key in cfg["cases"]:
        if cfg["sdk_before"] and LATENCY_CASES[key][0] == "zygote":
            runs.append((key + " (before)", key, cfg["sdk_before"]))
        runs.append((key, key, None))
    return runs


def run_latency(cfg, r):
    """Every row once per round (--rounds); a row's samples are pooled over the rounds, so that
    rows compared with each other saw the same spread of machine load."""
    rows = {}
    for rnd in range(cfg["rounds"]):
        for row, key, sdk in latency_runs(cfg):
            mode, preload, init, standby = LATENCY_CASES[key]
            tag = "latency-" + key + ("-before" if sdk else "") + (
                "-%d" % (rnd + 1) if cfg["rounds"] > 1 else "")
            d = Daemon(cfg, tag, mode, 1, preload, init, sdk=sdk, standby=standby)
            try:
                took = d.start()
                load = loadavg()
                log("latency, %s: ready %.1f s after start; %d crashes (load %s)%s"
                    % (row, took, cfg["crashes"], load, ", round %d/%d" % (rnd + 1, cfg["rounds"])
                       if cfg["rounds"] > 1 else ""))
                res = crash_cycles(cfg, d, cfg["crashes"])
                log("  crashed->ready p50 %.1f ms p90 %.1f ms max %.1f ms; crashed->next job ok "
                    "p50 %.1f ms; answer->next ok p50 %.1f ms; %d errors"
                    % (pct(res["crash_ready"], 50), pct(res["crash_ready"], 90),
                       1e3 * max(res["crash_ready"] or [float("nan")]), pct(res["crash_ok"], 50),
                       pct(res["e2e"], 50), len(res["errors"])))
                for e in res["errors"][:3]:
                    log("  error: " + e)
                res["loads"], res["ready_s"] = [load], took
                for k, v in rows.get(row, {}).items():
                    if isinstance(v, list):
                        res[k] = v + res.get(k, [])
                rows[row] = res
            finally:
                d.finish(r)
    for res in rows.values():
        ones = [float(x.split()[0]) for x in res["loads"]]
        res["load"] = res["loads"][0] if len(ones) == 1 else (
            "%.2f-%.2f (1 min, %d rounds)" % (min(ones), max(ones), len(ones)))
    r["latency"] = rows


def pct(samples, q):
    return percentile(samples, q) * 1e3


# -- the ProcessPoolExecutor peer (in a child interpreter) ---------------------------------------

def peer_main(kind, n):
    """`zygote.py --peer KIND N`: prints one JSON object on stdout."""
    import concurrent.futures
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool
    sys.path.insert(0, HANDLERS)
    import zygote_cnn as zc
    ctx = multiprocessing.get_context("fork")
    out = {"kind": kind}
    if kind == "forkref":
        zc.peer_set_loaded(zc.preload())
        out.update(fork_reference(n))
        print(json.dumps(out), flush=True)
        return 0
    if kind == "memory":
        t = time.monotonic()
        zc.peer_set_loaded(zc.preload_big())
        out["preload_s"] = time.monotonic() - t
        import gc
        phases = (("after_job", b"sleep:0.5"), ("after_gc", b"gcsleep:0.5"))
        for frozen in (False, True):
            if frozen:
                gc.freeze()     # what a zygote could do before forking: GC skips those objects
            ex = concurrent.futures.ProcessPoolExecutor(n, mp_context=ctx,
                                                        initializer=zc.peer_init_forked)
            try:
                for phase, payload in phases[1:] if frozen else phases:
                    futs = [ex.submit(zc.peer_call, payload) for _ in range(n)]
                    served = {f.result(timeout=120)["pid"] for f in futs}
                    pids = sorted(ex._processes)    # every worker, whether it served or not
                    key = phase + ("_frozen" if frozen else "")
                    out.setdefault("served", {})[key] = len(served)
                    time.sleep(0.5)
                    out[key] = {"workers": [smaps_rollup(p) for p in pids],
                                "parent": smaps_rollup(os.getpid()),
                                "others": len(other_torch_processes(set(pids) | {os.getpid()}))}
            finally:
                ex.shutdown(wait=True)
        print(json.dumps(out), flush=True)
        return 0
    if kind == "forked":
        zc.peer_set_loaded(zc.preload())
        init = zc.peer_init_forked
    else:
        init = zc.peer_init

    def executor():
        return concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx, initializer=init)

    ex = executor()
    replace, detect, errors = [], [], []
    try:
        ex.submit(zc.peer_call, b"warm").result(timeout=120)
        for _ in range(n):
            time.sleep(0.2)
            t0 = time.monotonic()
            try:
                ex.submit(zc.peer_call, b"crash").result(timeout=60)
                errors.append("the crash job returned")
                continue
            except BrokenProcessPool:
                pass
            t1 = time.monotonic()
            ex.shutdown(wait=True)
            ex = executor()
            ex.submit(zc.peer_call, b"after the crash").result(timeout=120)
            t2 = time.monotonic()
            detect.append(t1 - t0)
            replace.append(t2 - t1)
    finally:
        ex.shutdown(wait=True)
    out.update(replace=replace, detect=detect, errors=errors)
    print(json.dumps(out), flush=True)
    return 0


def fork_reference(n):
    """In a process that ran preload (torch, the CNN): os.fork() alone, a child's _exit() until
    waitpid() returns, and the zygote's double fork (fork; the middle forks the worker, writes its
    pid and exits; waitpid(middle)).  Medians of n, seconds; plus the process's maps and RSS."""
    import ctypes
    # A child subreaper, as the supervisor is: the orphaned worker is reparented to us.
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)     # PR_SET_CHILD_SUBREAPER
    single, reap, double = [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        t1 = time.perf_counter()
        os.waitpid(pid, 0)
        t2 = time.perf_counter()
        single.append(t1 - t0)
        reap.append(t2 - t1)
        time.sleep(0.02)
    for _ in range(n):
        r, w = os.pipe()
        t0 = time.perf_counter()
        middle = os.fork()
        if middle == 0:
            try:
                child = os.fork()
                if child == 0:
                    time.sleep(0.05)
                    os._exit(0)
                os.write(w, b"%d" % child)
            finally:
                os._exit(0)
        os.close(w)
        os.waitpid(middle, 0)
        grandchild = int(os.read(r, 32))
        t1 = time.perf_counter()
        os.close(r)
        double.append(t1 - t0)
        os.waitpid(grandchild, 0)       # ours since the middle exited
    with open("/proc/self/maps") as f:
        maps = sum(1 for _ in f)
    return {"fork": percentile(single, 50), "reap": percentile(reap, 50),
            "double": percentile(double, 50), "maps": maps,
            "rss_kb": benchlib.proc_status_kb(os.getpid(), "VmRSS")}


def run_peer(cfg, kind, n):
    """Runs `--peer KIND N` in a child interpreter; its JSON, or {"error": ...}."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [PYTHON, os.path.abspath(__file__), "--peer", kind, str(n)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         start_new_session=True, text=True)
    try:
        out, err = p.communicate(timeout=PEER_DEADLINE_S)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return {"error": "peer %s did not finish within %d s" % (kind, PEER_DEADLINE_S)}
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)    # executor workers left behind, if any
        except OSError:
            pass
    if p.returncode != 0:
        return {"error": "peer %s exited %s: %s" % (kind, p.returncode, err.strip()[-2000:])}
    return json.loads(out.strip().splitlines()[-1])


def run_peer_latency(cfg, r):
    rows = {}
    for kind in ("init", "forked"):
        log("peer: ProcessPoolExecutor(1, fork), %s, %d crashes (load %s)"
            % ("initializer builds the model" if kind == "init"
               else "parent ran preload, initializer runs init", cfg["peer_crashes"], loadavg()))
        res = run_peer(cfg, kind, cfg["peer_crashes"])
        res["load"] = loadavg()
        if "error" in res:
            log("  " + res["error"])
        else:
            log("  BrokenProcessPool -> new executor's first result p50 %.1f ms p90 %.1f ms"
                % (pct(res["replace"], 50), pct(res["replace"], 90)))
        rows[kind] = res
    log("reference: os.fork() costs in a process that ran preload")
    ref = run_peer(cfg, "forkref", cfg["fork_ref_n"])
    if "error" in ref:
        log("  " + ref["error"])
    else:
        log("  fork %.1f ms, child _exit -> reaped %.1f ms, double fork %.1f ms (%d maps, RSS "
            "%.0f MB)" % (ref["fork"] * 1e3, ref["reap"] * 1e3, ref["double"] * 1e3,
                          ref["maps"], ref["rss_kb"] / 1e3))
    rows["forkref"] = ref
    r["peer"] = rows


# -- 2. memory ------------------------------------------------------------------------------------

def children_of(parent):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            out.append(int(entry))
    return out


def smaps_rollup(pid):
    """{"pss", "rss", "private", "anon"} in kB from /proc/PID/smaps_rollup (None if gone)."""
    out = {"pid": pid}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[-1] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
    except OSError:
        return None
    return {"pid": pid, "pss": out.get("Pss"), "rss": out.get("Rss"),
            "private": out.get("Private_Clean", 0) + out.get("Private_Dirty", 0),
            "pss_anon": out.get("Pss_Anon"), "pss_file": out.get("Pss_File")}


def other_torch_processes(exclude):
    """Pids (not in exclude) that map libtorch_cpu.so: they share its file pages, and so lower
    every Pss_File here."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in exclude:
            continue
        try:
            with open("/proc/%s/maps" % name) as f:
                if "libtorch_cpu" in f.read():
                    found.append(int(name))
        except OSError:
            pass
    return found


def one_job_each(d, n, payload, deadline_s=120):
    """n concurrent jobs (each holds its worker `sleep` long), repeated until every worker has
    served at least one more job than in `before`."""
    before = {w["id"]: w["jobs_served"] for w in d.pool(POOL)["workers"]}
    deadline = time.monotonic() + deadline_s
    errors = []
    while True:
        def one():
            j = Jobs(d)
            try:
                j.ok(payload)
            except Exception as exc:  # reported below
                errors.append(repr(exc))
            finally:
                j.close()
        ts = [threading.Thread(target=one) for _ in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(JOB_TIMEOUT_S + 5)
        if errors:
            raise RuntimeError("%s: %s" % (d.label, errors[0]))
        ws = d.pool(POOL)["workers"]
        if len(ws) == n and all(w["state"] == "idle" and
                                w["jobs_served"] > before.get(w["id"], 0) for w in ws):
            return ws
        if time.monotonic() > deadline:
            raise RuntimeError("%s: not every worker served a job within %d s: %s"
                               % (d.label, deadline_s, ws))


def memory_case(cfg, r, mode, n):
    tag = "memory-%s-%d" % (mode, n)
    d = Daemon(cfg, tag, mode, n, "preload_big")
    try:
        took = d.start()
        log("memory, %s, %d workers: ready %.1f s after start (load %s, MemAvailable %.1f GB)"
            % (mode, n, took, loadavg(), meminfo_kb("MemAvailable") / 1e6))
        res = {"ready_s": took}
        phases = (("after_job", b"sleep:0.5"), ("after_gc", b"gcsleep:0.5"))
        for phase, payload in phases[:1 if mode == "spawn" else 2]:
            ws = one_job_each(d, n, payload)
            time.sleep(0.5)
            snap = d.pool(POOL)
            got = {"workers": [smaps_rollup(w["pid"]) for w in ws]}
            if snap.get("zygote") and snap["zygote"].get("pid"):
                got["zygote"] = smaps_rollup(snap["zygote"]["pid"])
                # The zygote's pre-forked spare (a child of the daemon that is no worker) holds
                # its share of the same pages: count it with the zygote.
                known = {w["pid"] for w in ws} | {snap["zygote"]["pid"]}
                for pid in children_of(d.pid):
                    spare = None if pid in known else smaps_rollup(pid)
                    if spare:
                        for key in ("pss", "anon"):
                            if key in spare and key in got["zygote"]:
                                got["zygote"][key] += spare[key]
            if any(x is None for x in got["workers"]):
                raise RuntimeError("%s: a worker vanished before its smaps were read" % tag)
            mine = {x["pid"] for x in got["workers"]} | (
                {got["zygote"]["pid"]} if got.get("zygote") else set())
            got["others"] = len(other_torch_processes(mine | {os.getpid()}))
            res[phase] = got
            log("  %s: Pss of the %d workers %.0f MB (each %s MB)%s"
                % (phase, n, sum(x["pss"] for x in got["workers"]) / 1e3,
                   "/".join("%.0f" % (x["pss"] / 1e3) for x in got["workers"]),
                   "; zygote %.0f MB" % (got["zygote"]["pss"] / 1e3) if got.get("zygote") else ""))
        return res
    finally:
        d.finish(r)


def run_memory(cfg, r):
    rows = {}
    n = cfg["mem_workers"]
    rows["zygote"] = memory_case(cfg, r, "zygote", n)
    rows["spawn1"] = memory_case(cfg, r, "spawn", 1)
    need_mb = 600.0 * n + 2048
    avail_mb = meminfo_kb("MemAvailable") / 1e3
    if avail_mb >= need_mb:
        rows["spawnN"] = memory_case(cfg, r, "spawn", n)
    else:
        r["notes"].append("memory: %d spawn workers skipped (MemAvailable %.0f MB < %.0f MB)"
                          % (n, avail_mb, need_mb))
    log("memory peer: ProcessPoolExecutor(%d, fork) from a parent that ran preload_big" % n)
    peer = run_peer(cfg, "memory", n)
    if "error" in peer:
        log("  " + peer["error"])
    else:
        log("  Pss of the %d executor workers %.0f MB, parent %.0f MB"
            % (n, sum(x["pss"] for x in peer["after_job"]["workers"]) / 1e3,
               peer["after_job"]["parent"]["pss"] / 1e3))
    rows["peer"] = peer
    r["memory"] = rows


# -- report ---------------------------------------------------------------------------------------

def ms(samples, q):
    return fmt(pct(samples, q), 1)


def report(r, cfg):
    out = []
    w = out.append
    w("## Zygote mode, %s run" % ("quick" if cfg["quick"] else "full"))
    w("")
    w("Machine: %s. Load average (1/5/15 min) at start %s, at end %s."
      % (machine_line(ram=True), cfg["load_start"], cfg["load_end"]))
    w("Daemon: %s; repo at %s." % (cfg["bin_desc"], cfg["git"]))
    if cfg["sdk_before"]:
        w("Rows marked \"SDK before\": the same daemon with BULKHEAD_SDK_DIR=%s (its zygote and "
          "workers run that SDK), each run just before the same case with this tree's SDK."
          % cfg["sdk_before_desc"])
    w("")
    targets = []
    lat = r.get("latency", {})
    if lat:
        w("### Replacement after a crash (1-worker pool, torch CNN preloaded, %d crashes per row%s)"
          % (cfg["crashes"] * cfg["rounds"],
             ", in %d interleaved rounds" % cfg["rounds"] if cfg["rounds"] > 1 else ""))
        w("")
        w("| system | crash → replacement ready p50 / p90 / max ms | crash → next job 200, "
          "p50 / p90 / max ms | crash → started (pid known) p50 ms | started → ready p50 ms (of "
          "which `init`) | crash answer → next job 200, p50 / p90 / max ms | crash job answered "
          "(p50 ms) | target | load avg |")
        w("|---|---|---|---|---|---|---|---|---|")
        for row, key, sdk in latency_runs(cfg):
            x = lat.get(row)
            if not x:
                continue
            s, k = x["crash_ready"], x["crash_ok"]
            tgt = ""
            if row in ("zygote-warm", "zygote-warm-standby"):
                ok = bool(s) and pct(s, 50) <= TARGET_MS and not x["errors"]
                tgt = "p50 ≤ %g ms: **%s**" % (TARGET_MS, "PASS" if ok else "MISS")
                targets.append(ok)
            label = LATENCY_LABELS[key] + (", SDK before (%s)" % cfg["sdk_before_desc"]
                                           if sdk else "")
            w("| bulkhead, %s | **%s** / %s / %s | **%s** / %s / %s | %s | %s (%s) | %s / %s / %s "
              "| %s | %s | %s |" % (label, ms(s, 50), ms(s, 90),
                                    fmt(1e3 * max(s), 1) if s else "-",
                                    ms(k, 50), ms(k, 90), fmt(1e3 * max(k), 1) if k else "-",
                                    ms(x["crash_started"], 50), ms(x["started_ready"], 50),
                                    ms(x["init"], 50),
                                    ms(x["e2e"], 50), ms(x["e2e"], 90),
                                    fmt(1e3 * max(x["e2e"]), 1) if x["e2e"] else "-",
                                    ms(x["detect"], 50), tgt, x["load"]))
        names = {"init": "ProcessPoolExecutor(1), fork, initializer builds the model",
                 "forked": "ProcessPoolExecutor(1), fork, parent ran preload, initializer runs "
                           "init"}
        for kind in ("init", "forked"):
            x = r.get("peer", {}).get(kind)
            if not x:
                continue
            if "error" in x:
                w("| %s | not measured: %s | | | | | | | |" % (names[kind], x["error"]))
                continue
            s = x["replace"]
            w("| %s | - | - | - | - | **%s** / %s / %s (BrokenProcessPool → new executor → first "
              "result) | %s | | %s |" % (names[kind], ms(s, 50), ms(s, 90),
                                        fmt(1e3 * max(s), 1) if s else "-",
                                        ms(x["detect"], 50), x["load"]))
        w("")
        ref = r.get("peer", {}).get("forkref")
        if ref and "error" not in ref:
            w("Reference, in a process that ran preload (torch + the CNN: %s maps, RSS %.0f MB), "
              "medians of %d: `os.fork()` returns in %.1f ms; a child's `os._exit(0)` is reaped "
              "%.1f ms later; the zygote's double fork (fork, the middle forks the worker, writes "
              "its pid and exits, `waitpid(middle)`) takes %.1f ms."
              % ("{:,}".format(ref["maps"]), ref["rss_kb"] / 1e3, cfg["fork_ref_n"],
                 ref["fork"] * 1e3, ref["reap"] * 1e3, ref["double"] * 1e3))
            w("")
        clock = [e for x in lat.values() for e in x.get("clock_error", [])]
        if clock:
            w("Crash → next job 200: from the pool's `crashed` event (daemon clock, placed on the "
              "bench's CLOCK_MONOTONIC to within ±%.2f ms, the longest half round trip of the "
              "snapshot request) to the next job's 200 at the client." % (1e3 * max(clock)))
            w("")
        for row in lat:
            x = lat.get(row)
            if x:
                z = x.get("zygote")
                w("- %s: %d crashes measured, %d errors%s; counters %s%s." % (
                    row, len(x["crash_ready"]), len(x["errors"]),
                    (" (" + "; ".join(x["errors"][:2]) + ")") if x["errors"] else "",
                    json.dumps({k: x["counters"].get(k) for k in
                                ("ok", "crashed", "worker_starts", "worker_deaths",
                                 "start_failures")}),
                    "; zygote %s" % json.dumps(z) if z else ""))
        for kind in ("init", "forked"):
            x = r.get("peer", {}).get(kind)
            if x and x.get("errors"):
                w("- peer %s: errors: %s" % (kind, "; ".join(x["errors"][:3])))
        w("")
    mem = r.get("memory", {})
    if mem:
        n = cfg["mem_workers"]
        w("### Memory: preload holds the CNN and a 200 MB torch.rand tensor (50M float32)")
        w("")
        w("| system | Pss of the workers MB, sum (each min–max) | "
          "+ zygote (with its spare) or parent Pss MB | "
          "total Pss MB | ÷ total Pss of 1 spawn worker alone | target | Pss_Anon total MB (÷ "
          "1 spawn worker's) | Rss / private per worker MB (p50) | other processes mapping "
          "libtorch_cpu.so |")
        w("|---|---|---|---|---|---|---|---|---|")
        one = one_anon = None
        if mem.get("spawn1"):
            one = mem["spawn1"]["after_job"]["workers"][0]["pss"] / 1e3
            one_anon = mem["spawn1"]["after_job"]["workers"][0]["pss_anon"] / 1e3

        def row(name, got, parent_key, target=False):
            ws = got["workers"]
            pss = [x["pss"] / 1e3 for x in ws]
            total = sum(pss)
            par = got.get(parent_key)
            par_mb = par["pss"] / 1e3 if par else None
            both = total + (par_mb or 0.0)
            anon = sum(x["pss_anon"] for x in ws + ([par] if par else [])) / 1e3
            ratio = ("**%.2fx** (workers only %.2fx)" % (both / one, total / one) if par_mb
                     else "%.2fx" % (total / one)) if one else "-"
            tgt = ""
            if target and one:
                ok = both <= 2 * one
                tgt = "≤ 2x: **%s**%s" % ("PASS" if ok else "MISS", "" if ok else
                                          " (workers only: %s)" % ("PASS" if total <= 2 * one
                                                                   else "MISS"))
                targets.append(ok)
            w("| %s | %s (%s–%s) | %s | %s | %s | %s | %s (%s) | %s / %s | %s |" % (
                name, fmt(total, 0), fmt(min(pss), 1), fmt(max(pss), 1),
                fmt(par_mb, 1) if par_mb is not None else "-", fmt(both, 0), ratio, tgt,
                fmt(anon, 0), "%.2fx" % (anon / one_anon) if one_anon else "-",
                fmt(percentile([x["rss"] / 1e3 for x in ws], 50), 0),
                fmt(percentile([x["private"] / 1e3 for x in ws], 50), 1), got.get("others", "-")))
        if mem.get("zygote"):
            row("bulkhead, mode = \"zygote\", %d workers, after 1 job each" % n,
                mem["zygote"]["after_job"], "zygote", target=True)
            if mem["zygote"].get("after_gc"):
                row("bulkhead, mode = \"zygote\", %d workers, after a gc.collect() in each" % n,
                    mem["zygote"]["after_gc"], "zygote")
        if mem.get("spawn1"):
            row("bulkhead, mode = \"spawn\", 1 worker alone", mem["spawn1"]["after_job"], None)
        if mem.get("spawnN"):
            row("bulkhead, mode = \"spawn\", %d workers" % n, mem["spawnN"]["after_job"], None)
        peer = mem.get("peer")
        if peer and "error" not in peer:
            row("ProcessPoolExecutor(%d), fork, parent ran preload_big, after 1 job each" % n,
                peer["after_job"], "parent")
            row("ProcessPoolExecutor(%d), same, after a gc.collect() in each" % n,
                peer["after_gc"], "parent")
            if peer.get("after_gc_frozen"):
                row("ProcessPoolExecutor(%d), same but `gc.freeze()` in the parent before the "
                    "fork, after a gc.collect() in each" % n, peer["after_gc_frozen"], "parent")
        elif peer:
            w("| ProcessPoolExecutor(%d) | not measured: %s | | | | | | | |" % (n, peer["error"]))
        w("")
        ready = ["%s %.1f s" % (k, v["ready_s"]) for k, v in mem.items()
                 if isinstance(v, dict) and "ready_s" in v]
        w("Daemon start → all workers idle: %s. MB = 10^6 bytes (smaps_rollup kB × 1000)."
          % "; ".join(ready))
        w("")
    rcs = r.get("stop_rc", {})
    w("SIGTERM exit status: %s." % (", ".join("%s %s" % kv for kv in sorted(rcs.items()))))
    for line in r["notes"]:
        w("")
        w("Note: " + line)
    return "\n".join(out), all(targets)


# -- main -----------------------------------------------------------------------------------------

def tree_desc():
    """HEAD's short hash, plus the uncommitted files under src/ and python/ (the workers and the
    zygote run the SDK from python/ in this tree, so it matters as much as the binary)."""
    head = git_desc().split()[0]
    try:
        dirty = subprocess.run(["git", "-C", benchlib.ROOT, "status", "--porcelain", "--", "src",
                                "python"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return head
    files = [line[3:] for line in dirty if line.strip()]
    return head + (" with uncommitted changes in %s" % ", ".join(files) if files else
                   ", no uncommitted changes in src/ or python/")


def sdk_desc(path):
    """The other SDK's directory and, if it is in a git checkout, its commit."""
    try:
        head = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = ""
    return "%s%s" % (os.path.abspath(path), " at " + head if head else "")


def copy_binary(binary, tmpdir, deadline_s=300):
    """A private copy of the daemon binary, taken once its size and mtime have held still for
    2 s and `--help` runs: every daemon of the run is the same build, even if build/ is rebuilt
    meanwhile (on a shared machine it is)."""
    deadline = time.monotonic() + deadline_s
    dest = os.path.join(tmpdir, "bulkhead")
    while True:
        try:
            st = os.stat(binary)
            time.sleep(2)
            st2 = os.stat(binary)
            if (st.st_size, st.st_mtime) == (st2.st_size, st2.st_mtime):
                shutil.copy2(binary, dest)
                if (os.stat(binary).st_mtime == st2.st_mtime and subprocess.run(
                        [dest, "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        timeout=30).returncode == 0):
                    return dest
        except (OSError, subprocess.SubprocessError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("%s did not hold still (a build running?) within %d s"
                               % (binary, deadline_s))
        log("%s is being rebuilt; waiting" % binary)

def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--peer":
        return peer_main(sys.argv[2], int(sys.argv[3]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    ap.add_argument("--bin", default=BIN, help="the bulkhead binary (default: %(default)s)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--verbose", action="store_true", help="log every crash cycle")
    ap.add_argument("--latency-only", action="store_true",
                    help="only part 1's bulkhead rows: no ProcessPoolExecutor peer, no memory")
    ap.add_argument("--cases", default=",".join(LATENCY_CASES),
                    help="latency cases to run, comma-separated (default: %(default)s)")
    ap.add_argument("--crashes", type=int, help="crashes per latency case (default 20; 5 quick)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every latency row this many times, interleaved, and pool the "
                         "samples (for before/after on a machine whose load changes)")
    ap.add_argument("--sdk-before", metavar="DIR",
                    help="another worker SDK (a python/ directory, e.g. from `git worktree add "
                         "/tmp/old main`): each zygote case runs with it too, just before the "
                         "same case with this tree's SDK (it is copied into the temp dir first)")
    args = ap.parse_args()
    q = args.quick
    cases = [c for c in args.cases.split(",") if c]
    if not cases or any(c not in LATENCY_CASES for c in cases):
        sys.exit("bench: --cases takes some of %s" % ",".join(LATENCY_CASES))
    if args.sdk_before and not os.path.isfile(os.path.join(args.sdk_before, "bulkhead",
                                                           "zygote.py")):
        sys.exit("bench: --sdk-before %s has no bulkhead/zygote.py" % args.sdk_before)
    cfg = {"quick": q, "bin": os.path.abspath(args.bin), "verbose": args.verbose,
           "crashes": args.crashes or (5 if q else 20), "peer_crashes": 5 if q else 20,
           "gap_s": 0.2, "mem_workers": 8, "fork_ref_n": 10 if q else 20, "cases": cases,
           "rounds": max(1, args.rounds),
           "latency_only": args.latency_only, "sdk_before": None, "sdk_before_desc": ""}
    if not os.path.exists(cfg["bin"]):
        sys.exit("bench: %s not built (bash scripts/build.sh)" % cfg["bin"])

    begin_run(cfg, "; copied at the start of the run")
    cfg["git"] = tree_desc()
    cfg["tmpdir"] = tempfile.mkdtemp(prefix="bulkhead-zygote-")
    r = {"notes": []}

    def run():
        cfg["bin"] = copy_binary(cfg["bin"], cfg["tmpdir"])
        if args.sdk_before:
            cfg["sdk_before"] = os.path.join(cfg["tmpdir"], "sdk-before")
            shutil.copytree(args.sdk_before, cfg["sdk_before"],
                            ignore=shutil.ignore_patterns("__pycache__", "tests"))
            cfg["sdk_before_desc"] = sdk_desc(args.sdk_before)
        run_latency(cfg, r)
        if not cfg["latency_only"]:
            run_peer_latency(cfg, r)
            run_memory(cfg, r)

    return run_and_report(cfg, cfg["tmpdir"], args.keep, run, lambda: report(r, cfg))


if __name__ == "__main__":
    sys.exit(main())
