#!/usr/bin/python3
"""Async jobs and the SQLite journal: what a journaled submit costs, and recovery after kill -9.

    /usr/bin/python3 bench/async_journal.py            # full run, about 2 minutes
    /usr/bin/python3 bench/async_journal.py --quick    # under a minute
    # options: --bin PATH (another bulkhead binary), --keep (keep the temp dir: configs, logs,
    #          journals, run log), --dir DIR (where the temp dir is made; the journal's filesystem)

1. Throughput.  Async submits (POST /v1/pools/echo/jobs?wait=0 -> 202) need the journal: with
   `[server] journal = ""` they are refused with 400 (checked).  So the comparison is, against the
   same 2-worker echo pool and with the same callers (2 caller processes x 2 threads, one
   keep-alive http.client connection per thread, 100-byte payload):
   - sync calls/s with the journal OFF, and with it ON (an `ok` sync job writes nothing);
   - async submits/s with the journal ON (every submit is an INSERT and an UPDATE before the 202,
     and an UPDATE when it ends), and the time until all N async jobs are finished: GET
     /v1/jobs/{last id}?wait=60s, then a sweep over every id (200 and the payload back).
   The three run in interleaved repeats on two daemons (journal ON, journal OFF), median reported;
   also the daemon's CPU per job (utime+stime from /proc) and one-caller sequential latencies.
2. Recovery after kill -9.  A pool whose handler sleeps ~20 ms (2 workers) gets 1000 async jobs
   from 4 threads; right after the last 202 the daemon is SIGKILLed (its workers die with it:
   PR_SET_PDEATHSIG).  It is restarted with the same config and journal, and the bench measures:
   restart -> "listening on" in its log, restart -> first recovered job started, restart -> all
   1000 finished (long-poll of the last id, then a sweep of all 1000 ids: each must answer 200 with
   its own payload: none lost), and how many ran twice: the handler appends "start <payload>"
   before its sleep and "end <payload>" after it to a run log (O_APPEND), so duplicates are
   counted from the side effects, and compared with the X-Bulkhead-Runs header.

Fsync policy (src/journal/journal.cc): SQLite WAL, synchronous=NORMAL, one autocommit
transaction per statement: no fsync per commit (only WAL checkpoints sync), so a process crash
(kill -9) loses nothing that was committed, a power cut may lose the last transactions.

Standard library only (Debian's /usr/bin/python3).  Each daemon gets its own temp TOML config
(listen 127.0.0.1:0; the port is read from its "listening on" log line), waits for /healthz and
for all workers idle with deadlines, and is stopped with SIGTERM (or SIGKILLed on the way out).
"""

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import benchlib
from benchlib import (BIN, PYTHON, ROOT, cpu_model, cpu_seconds, fmt, git_desc, kill_daemons,
                      loadavg, log, pct, ram_line)

benchlib.set_log_tag("journal")
START_DEADLINE_S = 30
READY_DEADLINE_S = 60
ECHO_PAYLOAD = bytes(range(100))
NAN = float("nan")


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


def fs_type(path):
    """The filesystem type of the mount that holds path (longest mount-point prefix)."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1].replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, parts[2]
    return "%s on %s" % (kind, best)


def machine_line():
    return "%d CPUs (%s), %s, kernel %s, Python %s, SQLite %s" % (
        os.cpu_count(), cpu_model(), ram_line(), platform.release(), platform.python_version(),
        sqlite3.sqlite_version)


# -- handlers, written into the temp dir (python_path) -----------------------------------------

HANDLERS = '''\
import os
import time

RUNLOG = os.environ.get("AJ_RUNLOG", "")
SLEEP_S = float(os.environ.get("AJ_SLEEP_MS", "20")) / 1000.0


def echo(payload, ctx=None):
    return payload


def slow(payload, ctx=None):
    """Sleeps ~20 ms; the run log gets one "start" line before and one "end" line after."""
    fd = os.open(RUNLOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"start " + payload + b" %.6f\\n" % time.time())
        time.sleep(SLEEP_S)
        os.write(fd, b"end " + payload + b" %.6f\\n" % time.time())
    finally:
        os.close(fd)
    return payload
'''

POOL = """
[pool.{name}]
handler = "aj_handlers:{fn}"
python = "{python}"
python_path = [{path}]
workers = 2
queue_limit = 1000000
job_timeout = "60s"
env = {{ OMP_NUM_THREADS = "1", AJ_RUNLOG = {runlog}, AJ_SLEEP_MS = "{sleep_ms}" }}
"""


class Daemon(benchlib.Daemon):
    """One `bulkhead serve` from its own TOML config in tmpdir/<name>/; start() may be called
    again after stop() or kill9() (same config and journal; log daemon-<n>.log)."""

    def __init__(self, tmpdir, name, journal, pools, binary, runlog="", sleep_ms=20):
        self.name = name
        self.dir = os.path.join(tmpdir, name)
        os.makedirs(self.dir, exist_ok=True)
        text = '[server]\nlisten = "127.0.0.1:0"\njournal = %s\n' % json.dumps(journal)
        for pool, fn in pools:
            text += POOL.format(name=pool, fn=fn, python=PYTHON, path=json.dumps(tmpdir),
                                runlog=json.dumps(runlog), sleep_ms=sleep_ms)
        super().__init__(binary, os.path.join(self.dir, "bulkhead.toml"), text,
                         label="bench: daemon %s" % name, error=SystemExit, http_timeout=90)
        self.starts = 0

    def start(self):
        """Starts the daemon, waits for /healthz; returns seconds from Popen to its "listening
        on" log line."""
        self.starts += 1
        self.spawn(os.path.join(self.dir, "daemon-%d.log" % self.starts))
        return self.wait_healthy(START_DEADLINE_S, listen_poll_s=0.002, health_poll_s=0.02)

    def wait_ready(self):
        pools = super().wait_ready(READY_DEADLINE_S, poll_s=0.05)
        if pools is None:
            raise SystemExit("bench: daemon %s: workers not idle within %d s: %s"
                             % (self.name, READY_DEADLINE_S, json.dumps(self.pools())))
        return pools

    def kill9(self):
        """SIGKILL the supervisor only (not its process group): a supervisor crash."""
        self.close_conn()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._forget()


# -- caller processes: 2 threads each, one keep-alive connection per thread ----------------------

def caller_main(argv):
    """--caller JSON: runs `threads` threads, each sending `n` requests; prints a JSON result."""
    a = json.loads(argv[0])
    path = "/v1/pools/%s/jobs%s" % (a["pool"], "?wait=0" if a["mode"] == "async" else "")
    want = 202 if a["mode"] == "async" else 200
    payload = ECHO_PAYLOAD
    headers = {"Content-Type": "application/octet-stream"}
    results = [None] * a["threads"]
    barrier = threading.Barrier(a["threads"])

    def run(i):
        conn = http.client.HTTPConnection(a["host"], a["port"], timeout=90)
        conn.connect()
        ids, lat, bad = [], [], []
        barrier.wait()
        while time.monotonic() < a["start_at"]:
            time.sleep(0.0005)
        t_first = time.monotonic()
        for _ in range(a["n"]):
            t = time.monotonic()
            conn.request("POST", path, payload, headers)
            r = conn.getresponse()
            body = r.read()
            lat.append(time.monotonic() - t)
            if r.status != want or (want == 200 and body != payload):
                if len(bad) < 5:
                    bad.append("%d %r" % (r.status, body[:200]))
                continue
            if want == 202:
                ids.append(int(r.getheader("X-Bulkhead-Job")))
        t_last = time.monotonic()
        conn.close()
        results[i] = {"t_first": t_first, "t_last": t_last, "ids": ids, "lat": lat, "bad": bad}

    ts = [threading.Thread(target=run, args=(i,)) for i in range(a["threads"])]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    json.dump(results, sys.stdout)


def drive(daemon, pool, mode, n_total, procs, threads):
    """Runs procs x threads callers sending n_total requests in all; returns their merged result."""
    per = n_total // (procs * threads)
    start_at = time.monotonic() + 0.5 + 0.1 * procs     # caller processes start first
    arg = {"host": daemon.host, "port": daemon.port, "pool": pool, "mode": mode, "n": per,
           "threads": threads, "start_at": start_at}
    cpu0 = cpu_seconds(daemon.pid, NAN)
    ps = [subprocess.Popen([PYTHON, os.path.abspath(__file__), "--caller", json.dumps(arg)],
                           stdout=subprocess.PIPE) for _ in range(procs)]
    outs = []
    for p in ps:
        out, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError("caller process exited with %s" % p.returncode)
        outs.extend(json.loads(out))
    t_first = min(o["t_first"] for o in outs)
    t_last = max(o["t_last"] for o in outs)
    bad = [b for o in outs for b in o["bad"]]
    if bad:
        raise RuntimeError("%s %s: unexpected answers, e.g. %s" % (mode, pool, bad[:3]))
    return {"n": per * procs * threads, "t_first": t_first, "t_last": t_last,
            "rate": per * procs * threads / (t_last - t_first),
            "ids": sorted(i for o in outs for i in o["ids"]),
            "lat": [x for o in outs for x in o["lat"]], "cpu0": cpu0,
            "cpu_end": cpu_seconds(daemon.pid, NAN)}


def job_answer(daemon, job_id, wait_s=0):
    status, r, body = daemon.request("GET", "/v1/jobs/%d%s" % (
        job_id, "?wait=%ds" % wait_s if wait_s else ""))
    return status, r, body


def wait_finished(daemon, job_id, deadline):
    """Long-polls GET /v1/jobs/{id} until it is no longer 202; returns (status, response, body)."""
    while True:
        left = int(min(60, max(1, deadline - time.monotonic())))
        status, r, body = job_answer(daemon, job_id, left)
        if status != 202 or time.monotonic() >= deadline:
            return status, r, body


def sweep(daemon, ids, payload_of, deadline):
    """Checks every id answers 200 with its payload (long-polling any still unfinished).
    Returns (lost, wrong, runs histogram, monotonic time the last unfinished one was seen done)."""
    lost, wrong, runs, t_done = [], [], {}, None
    for job_id in ids:
        status, r, body = job_answer(daemon, job_id)
        if status == 202:
            status, r, body = wait_finished(daemon, job_id, deadline)
            t_done = time.monotonic()
        if status != 200:
            lost.append((job_id, status, body[:200]))
        elif body != payload_of(job_id):
            wrong.append((job_id, body[:60]))
        k = r.getheader("X-Bulkhead-Runs", "?")
        runs[k] = runs.get(k, 0) + 1
    return lost, wrong, runs, t_done


# -- 1. throughput ------------------------------------------------------------------------------

def part1(tmpdir, binary, cfg):
    on = Daemon(tmpdir, "on", os.path.join(tmpdir, "j.db"), [("echo", "echo")], binary)
    off = Daemon(tmpdir, "off", "", [("echo", "echo")], binary)
    for d in (on, off):
        d.start()
        d.wait_ready()
    r = {"load_start": loadavg()}

    # with the journal off, async submits are refused
    status, _, body = off.request("POST", "/v1/pools/echo/jobs?wait=0", ECHO_PAYLOAD)
    r["off_async"] = "%d (%s)" % (status, json.loads(body).get("detail", body[:80]))
    log("journal OFF, POST ?wait=0 -> %s" % r["off_async"])

    # one caller, sequential: the journal's cost on one request's latency
    seq = {"sync_off": [], "sync_on": [], "async": []}
    for _ in range(cfg["seq_rounds"]):
        for key, d, path in (("sync_off", off, "/v1/pools/echo/jobs"),
                             ("sync_on", on, "/v1/pools/echo/jobs"),
                             ("async", on, "/v1/pools/echo/jobs?wait=0")):
            for _ in range(cfg["seq_n"]):
                t = time.monotonic()
                status, _, _ = d.request("POST", path, ECHO_PAYLOAD)
                seq[key].append(time.monotonic() - t)
                if status not in (200, 202):
                    raise RuntimeError("%s: %d" % (key, status))
            if key == "async":   # let them drain before the next round
                time.sleep(0.2)
    r["seq"] = {k: (pct(v, 50), pct(v, 99)) for k, v in seq.items()}
    log("sequential p50 ms: " + ", ".join("%s %.3f" % (k, v[0]) for k, v in r["seq"].items()))

    n, procs, threads = cfg["n"], cfg["procs"], cfg["threads"]
    runs = {"sync_off": [], "sync_on": [], "async": []}
    for rep in range(cfg["repeats"]):
        for key, d, mode in (("sync_off", off, "sync"), ("sync_on", on, "sync"),
                             ("async", on, "async")):
            x = drive(d, "echo", mode, n, procs, threads)
            if mode == "async":
                # all finished: long-poll the last id, then sweep every id
                deadline = time.monotonic() + 120
                last = x["ids"][-1]
                status, _, _ = wait_finished(d, last, deadline)
                t_last_done = time.monotonic()
                cpu_done = cpu_seconds(d.pid, NAN)
                lost, wrong, hist, t_straggler = sweep(d, x["ids"], lambda _: ECHO_PAYLOAD,
                                                       deadline)
                if lost or wrong or status != 200:
                    raise RuntimeError("async: last %d, lost %s, wrong %s"
                                       % (status, lost[:3], wrong[:3]))
                t_done = max(t_last_done, t_straggler or 0)
                x["all_done_s"] = t_done - x["t_first"]
                x["drain_s"] = t_done - x["t_last"]
                x["e2e_rate"] = x["n"] / x["all_done_s"]
                x["cpu_us"] = (cpu_done - x["cpu0"]) / x["n"] * 1e6
                x["stragglers"] = t_straggler is not None
                log("rep %d async: %d submits in %.2f s = %.0f/s; all finished %.2f s after the "
                    "first submit (%.0f jobs/s end to end), daemon %.0f us/job, load %s"
                    % (rep + 1, x["n"], x["t_last"] - x["t_first"], x["rate"], x["all_done_s"],
                       x["e2e_rate"], x["cpu_us"], loadavg()))
            else:
                x["cpu_us"] = (x["cpu_end"] - x["cpu0"]) / x["n"] * 1e6
                log("rep %d %s: %d calls in %.2f s = %.0f/s, daemon %.0f us/job, load %s"
                    % (rep + 1, key, x["n"], x["t_last"] - x["t_first"], x["rate"], x["cpu_us"],
                       loadavg()))
            del x["ids"]
            runs[key].append(x)
            time.sleep(0.3)
    r["runs"] = runs
    r["db_mb"] = sum(os.path.getsize(os.path.join(tmpdir, f)) for f in os.listdir(tmpdir)
                     if f.startswith("j.db")) / 1e6
    r["stop"] = [on.stop(), off.stop()]
    r["load_end"] = loadavg()
    return r


# -- 2. recovery after kill -9 ------------------------------------------------------------------

def read_runlog(path):
    starts, ends, t_starts = {}, {}, []
    with open(path, "rb") as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3:
                continue
            kind, payload, ts = parts[0], parts[1].decode(), float(parts[2])
            if kind == b"start":
                starts[payload] = starts.get(payload, 0) + 1
                t_starts.append(ts)
            elif kind == b"end":
                ends[payload] = ends.get(payload, 0) + 1
    return starts, ends, t_starts


def journal_counts(path):
    """(finished, unfinished) rows, read with the stdlib sqlite3 after the kill."""
    try:
        db = sqlite3.connect(path, timeout=5)
        fin = db.execute("SELECT COUNT(*) FROM jobs WHERE finished = 1").fetchone()[0]
        unf = db.execute("SELECT COUNT(*) FROM jobs WHERE finished = 0").fetchone()[0]
        started = db.execute("SELECT COUNT(*) FROM jobs WHERE runs > 0").fetchone()[0]
        db.close()
        return fin, unf, started
    except sqlite3.Error as e:
        log("cannot read the journal: %s" % e)
        return None, None, None


def part2(tmpdir, binary, cfg, rep):
    name = "rec%d" % rep
    runlog = os.path.join(tmpdir, "%s-runs.log" % name)
    jpath = os.path.join(tmpdir, "%s.db" % name)
    d = Daemon(tmpdir, name, jpath, [("slow", "slow")], binary, runlog=runlog,
               sleep_ms=cfg["sleep_ms"])
    r = {"load_start": loadavg(), "n": cfg["rec_n"], "first_listening_s": d.start()}
    d.wait_ready()
    pids = d.worker_pids()

    # 1000 async submits from 4 threads, one connection each
    n, nth = cfg["rec_n"], 4
    ids = {}
    lock = threading.Lock()
    errors = []

    def submit(k):
        conn = http.client.HTTPConnection(d.host, d.port, timeout=60)
        for i in range(k, n, nth):
            payload = ("job-%05d" % i).encode()
            conn.request("POST", "/v1/pools/slow/jobs?wait=0", payload,
                         {"Content-Type": "application/octet-stream"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 202:
                errors.append(resp.status)
                continue
            with lock:
                ids[int(resp.getheader("X-Bulkhead-Job"))] = payload
        conn.close()

    t = time.monotonic()
    ts = [threading.Thread(target=submit, args=(k,)) for k in range(nth)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    r["submit_s"] = time.monotonic() - t
    if errors or len(ids) != n:
        raise RuntimeError("recovery: %d of %d submits accepted, errors %s"
                           % (len(ids), n, errors[:5]))
    d.kill9()
    t_kill = time.monotonic()
    time.sleep(0.05)
    r["workers_left"] = [p for p in pids if os.path.exists("/proc/%d" % p)
                         and open("/proc/%d/stat" % p).read().split(")")[1].split()[0] != "Z"]
    starts, ends, _ = read_runlog(runlog) if os.path.exists(runlog) else ({}, {}, [])
    r["before_started"], r["before_ended"] = len(starts), len(ends)
    r["j_finished"], r["j_unfinished"], r["j_started"] = journal_counts(jpath)
    log("recovery %d: %d submits in %.2f s, SIGKILL; before the kill %d started, %d ended "
        "(journal: %s finished, %s unfinished); workers still alive: %s"
        % (rep, n, r["submit_s"], r["before_started"], r["before_ended"], r["j_finished"],
           r["j_unfinished"], r["workers_left"] or "none"))

    wall_restart = time.time()
    t_restart = time.monotonic()
    r["listening_s"] = d.start()
    m = re.search(r"(\d+) unfinished job\(s\) run again", d.log())
    r["rerun_logged"] = int(m.group(1)) if m else 0
    r["healthz_s"] = time.monotonic() - t_restart
    deadline = time.monotonic() + 120
    order = sorted(ids)
    status, _, _ = wait_finished(d, order[-1], deadline)
    t_last = time.monotonic()
    lost, wrong, hist, t_straggler = sweep(d, order, ids.get, deadline)
    r["all_done_s"] = max(t_last, t_straggler or 0) - t_restart
    r["sweep_s"] = time.monotonic() - t_last
    r["lost"], r["wrong"], r["runs_hist"] = lost, wrong, hist

    starts, ends, t_starts = read_runlog(runlog)
    after = [x for x in t_starts if x >= wall_restart]
    r["first_start_s"] = min(after) - wall_restart if after else None
    payloads = set(ids.values())
    r["started_twice"] = sum(1 for p in payloads if starts.get(p.decode(), 0) >= 2)
    r["ended_twice"] = sum(1 for p in payloads if ends.get(p.decode(), 0) >= 2)
    r["never_ended"] = sum(1 for p in payloads if ends.get(p.decode(), 0) == 0)
    r["max_starts"] = max(starts.values()) if starts else 0
    r["stop"] = d.stop()
    r["load_end"] = loadavg()
    log("recovery %d: listening %.3f s after restart (%d re-run), first job started %.3f s, all "
        "%d finished %.2f s after restart; started twice %d, ended twice %d, lost %d, wrong %d, "
        "X-Bulkhead-Runs %s"
        % (rep, r["listening_s"], r["rerun_logged"], r["first_start_s"] or -1, n,
           r["all_done_s"], r["started_twice"], r["ended_twice"], len(lost), len(wrong), hist))
    del t_kill
    return r


# -- report -------------------------------------------------------------------------------------

def report(p1, p2s, cfg):
    out = []
    w = out.append
    runs = p1["runs"]
    callers = "%d procs x %d threads" % (cfg["procs"], cfg["threads"])

    def med(key, field):
        return median([x[field] for x in runs[key]])

    def all_of(key, field, nd=0):
        return "; ".join(fmt(x[field], nd) for x in runs[key])

    def lat(key):
        s = sorted(y for x in runs[key] for y in x["lat"])
        return pct(s, 50), pct(s, 99)

    w("| measurement | result |")
    w("|---|---|")
    w("| sync calls/s, journal OFF (%s, N = %s per repeat) | **%s** (repeats: %s) |"
      % (callers, fmt(cfg["n"], 0), fmt(med("sync_off", "rate"), 0), all_of("sync_off", "rate")))
    w("| sync calls/s, journal ON (an `ok` sync job writes nothing) | **%s** (%s) |"
      % (fmt(med("sync_on", "rate"), 0), all_of("sync_on", "rate")))
    w("| async submits/s, journal ON (`?wait=0` → 202) | **%s** (%s) = %.2fx sync OFF |"
      % (fmt(med("async", "rate"), 0), all_of("async", "rate"),
         med("async", "rate") / med("sync_off", "rate")))
    w("| async: all N finished, from the first submit (last id long-polled, then every id "
      "checked: 200 + payload) | **%s s** (%s), i.e. %s jobs/s end to end; %s s after the last "
      "202 |" % (fmt(med("async", "all_done_s")), all_of("async", "all_done_s", 2),
                 fmt(med("async", "e2e_rate"), 0), fmt(med("async", "drain_s"))))
    w("| async with journal OFF (`journal = \"\"`) | %s |" % p1["off_async"])
    w("| latency under that load, p50 / p99 ms: sync OFF, sync ON, async submit | %s / %s; "
      "%s / %s; %s / %s |" % tuple(fmt(v, 3) for k in ("sync_off", "sync_on", "async")
                                   for v in lat(k)))
    s = p1["seq"]
    w("| one caller, sequential, p50 / p99 ms (%d x %d each): sync OFF, sync ON, async submit "
      "| %s / %s; %s / %s; %s / %s |"
      % ((cfg["seq_rounds"], cfg["seq_n"]) + tuple(fmt(v, 3) for k in ("sync_off", "sync_on",
                                                                         "async")
                                                    for v in s[k])))
    w("| daemon CPU per job (µs): sync OFF, sync ON, async (submit + run + finish) | %s; %s; "
      "%s |" % (fmt(med("sync_off", "cpu_us"), 0), fmt(med("sync_on", "cpu_us"), 0),
                fmt(med("async", "cpu_us"), 0)))
    w("")
    w("Recovery after kill -9 (%d async jobs to `slow`: %d ms sleep, 2 workers):"
      % (cfg["rec_n"], cfg["sleep_ms"]))
    w("")
    w("| measurement | " + " | ".join("run %d" % p["rep"] for p in p2s) + " |")
    w("|---|" + "---|" * len(p2s))

    def row(what, cell):
        w("| %s | %s |" % (what, " | ".join(cell(p) for p in p2s)))
    row("%d submits from 4 threads took" % cfg["rec_n"], lambda p: "%.2f s" % p["submit_s"])
    row("at the SIGKILL (right after the last 202): started / ended per run log; journal rows "
        "finished / unfinished; old workers alive 50 ms later",
        lambda p: "%d / %d; %s / %s; %d" % (p["before_started"], p["before_ended"],
                                            p["j_finished"], p["j_unfinished"],
                                            len(p["workers_left"])))
    row("restart → \"listening on\" (journal read, unfinished jobs re-submitted); first start, "
        "empty journal, for comparison",
        lambda p: "**%s s** (%d re-run); %s s" % (fmt(p["listening_s"], 3), p["rerun_logged"],
                                                  fmt(p["first_listening_s"], 3)))
    row("restart → /healthz ok", lambda p: "%s s" % fmt(p["healthz_s"], 3))
    row("restart → first recovered job started (handler's clock)",
        lambda p: "%s s" % fmt(p["first_start_s"], 3))
    row("restart → all %d finished (last id long-polled, then all ids swept)" % cfg["rec_n"],
        lambda p: "**%s s** (sleep alone: %.1f s)" % (fmt(p["all_done_s"]), p["rerun_logged"] *
                                                      cfg["sleep_ms"] / 2000.0))
    row("ran twice: started twice / completed twice (run log)",
        lambda p: "**%d / %d**" % (p["started_twice"], p["ended_twice"]))
    row("`X-Bulkhead-Runs` of the %d answers" % cfg["rec_n"],
        lambda p: ", ".join("%s: %d" % kv for kv in sorted(p["runs_hist"].items())))
    row("lost (every id must answer 200 with its own payload); wrong payload; never completed "
        "per run log",
        lambda p: "**%d**; %d; %d" % (len(p["lost"]), len(p["wrong"]), p["never_ended"]))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bin", default=BIN)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    if not os.path.exists(args.bin):
        sys.exit("bench: %s not found (ninja -C build)" % args.bin)
    q = args.quick
    cfg = {"quick": q, "n": 4000 if q else 20000, "repeats": 2 if q else 3, "procs": 2,
           "threads": 2, "seq_n": 300 if q else 1000, "seq_rounds": 2 if q else 3,
           "rec_n": 1000, "sleep_ms": 20, "rec_repeats": 1 if q else 3}
    tmpdir = tempfile.mkdtemp(prefix="bulkhead-journal-", dir=args.dir)
    with open(os.path.join(tmpdir, "aj_handlers.py"), "w") as f:
        f.write(HANDLERS)

    def on_signal(sig, _frame):
        raise SystemExit("bench: signal %d" % sig)
    signal.signal(signal.SIGTERM, on_signal)

    bin_mtime = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(args.bin)))
    load_start = loadavg()
    log("machine: %s; load average %s; temp dir %s (%s)"
        % (machine_line(), load_start, tmpdir, fs_type(tmpdir)))
    try:
        p1 = part1(tmpdir, args.bin, cfg)
        p2s = []
        for rep in range(1, cfg["rec_repeats"] + 1):
            p = part2(tmpdir, args.bin, cfg, rep)
            p["rep"] = rep
            p2s.append(p)
    finally:
        kill_daemons()
        if args.keep:
            log("kept %s" % tmpdir)
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)
    load_end = loadavg()

    print("## Async jobs and the journal, %s run" % ("quick" if q else "full"))
    print()
    print("Machine: %s. Load average (1/5/15 min) at start %s, after part 1 %s, at end %s. "
          "Journal on %s." % (machine_line(), load_start, p1["load_end"], load_end,
                              fs_type(tmpdir)))
    print("Daemon: %s built %s from %s." % (os.path.relpath(args.bin, ROOT)
                                            if args.bin.startswith(ROOT) else args.bin,
                                            bin_mtime, git_desc("plus")))
    print()
    print(report(p1, p2s, cfg))
    print()
    print("Journal after part 1: %.1f MB (j.db + -wal + -shm, %d async jobs of 100 bytes). "
          "SIGTERM exit status: %s." % (p1["db_mb"], cfg["n"] * cfg["repeats"] +
                                        cfg["seq_n"] * cfg["seq_rounds"],
                                        ", ".join(str(x) for x in
                                                  p1["stop"] + [p["stop"] for p in p2s])))
    ok = all(not p["lost"] and not p["wrong"] and p["never_ended"] == 0 for p in p2s)
    print()
    print("Fsync policy: SQLite WAL, synchronous=NORMAL, one autocommit transaction per statement "
          "(INSERT before the 202, UPDATE runs at each start, UPDATE with the answer at the end): "
          "no fsync per commit, only at WAL checkpoints; a process crash (kill -9) loses nothing "
          "committed, a power cut may lose the last transactions.")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--caller":
        caller_main(sys.argv[2:])
    else:
        try:
            rc = main()
        finally:
            kill_daemons()
        sys.exit(rc)
