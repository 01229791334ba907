#!/usr/bin/python3
"""Promise under load: a 10,000-job load with 10% injected faults, bulkhead OLD vs NEW
vs ProcessPoolExecutor, side by side in interleaved rounds.

    /usr/bin/python3 bench/promise_load.py                 # 10,000 jobs x 2 rounds x 2 configs
    /usr/bin/python3 bench/promise_load.py --quick         # 2,000 jobs x 1 round (smoke run)
    # options: --jobs N, --rounds R, --ppe-jobs N (default 2000), --configs a,b,
    #          --systems old,new,ppe, --old-bin/--old-sdk, --new-bin/--new-sdk, --keep

The promise: every job gets exactly one outcome, and it is the job's own: good jobs end `ok`,
crashes `crashed` (with "quarantined": true once they crashed poison_after = 2 workers), hangs
`timed_out`, exceptions `handler_error`, whatever else the pool is going through.

Systems:
- bulkhead NEW: the current tree (default binary build-bench/bulkhead, SDK python/ of this tree);
- bulkhead OLD: commit 25f62c1 (default binary /tmp/bulkhead-old/build/bulkhead, SDK
  /tmp/bulkhead-old/python).  Build both before the run:
      git -C . worktree add /tmp/bulkhead-old 25f62c1
      (cd /tmp/bulkhead-old && BUILD_DIR=/tmp/bulkhead-old/build bash scripts/build.sh)
      BUILD_DIR=$PWD/build-bench bash scripts/build.sh      # last: the .pth points back here
  Each binary and SDK is copied into the temp dir at the start, and each daemon gets
  BULKHEAD_SDK_DIR=<its copy of the SDK>, so its workers run that version's worker code.
- concurrent.futures.ProcessPoolExecutor (default fork context) with the same worker count,
  the same job mix (--ppe-jobs per round: every crash breaks the whole pool, so the run is kept
  short), the same 16 caller threads.  The careful user: result(timeout=job_timeout) for every
  job (0.3 s for hangs), a new pool as soon as one is broken (BrokenProcessPool), and, since PPE
  cannot kill a hung task, when as many hang jobs timed out on one pool as it has workers, the
  pool is thrown away: its processes are SIGKILLed through the private `_processes` map (there
  is no public way) and a new one made.  Jobs caught in a broken or thrown-away pool end
  `broken` (BrokenProcessPool), whatever they were.
- loky: included when `import loky` works (Debian has no python3-loky; python3-joblib vendors it
  as joblib.externals.loky, which is used when present); otherwise reported as not available.

Configs: (a) 4 workers, job_timeout 3s; (b) 3 workers, job_timeout 1s; (c) as (a) with
prefetch_below = "50ms" (prefetch on: good jobs wait at workers behind faults; NEW only, and only
with --configs c); everything else the
pool's defaults (retries 2, poison_after 2, queue_timeout 30s).  Handler
bench/handlers/promise_handlers.py:chaos: the payload's first word picks ok (about 2 ms of CPU,
echo), abort (os.abort()), segv (ctypes.string_at(0)), raise (ValueError) or hang
(threading.Event().wait(), sent with X-Bulkhead-Timeout: 300ms).  10% of the jobs are faults,
as many of each kind, shuffled with a fixed seed per round; every payload is unique.  16 caller
threads, each with its own keep-alive http.client connection, POST /v1/pools/chaos/jobs (sync);
a job without an HTTP answer (socket error, client timeout of 120 s) is counted `lost`.

Per system and config: good jobs not `ok` (median count and % over rounds, and which outcomes),
each fault kind's outcome distribution (all rounds pooled), lost jobs, wall time, good ok jobs/s,
the supervisor's VmRSS and open fds (/proc/<pid>/status, /proc/<pid>/fd) once its workers are
idle and right after the load.  Exit status 1 when NEW breaks the promise (a good job not ok, a
fault with the wrong outcome, a lost job).
"""

import argparse
import collections
import concurrent.futures as cf
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import benchlib
from benchlib import (HANDLERS, PYTHON, ROOT, begin_run, fmt, git_desc, loadavg, log,
                      machine_line, proc_status_kb, run_and_report)

benchlib.set_log_tag("promise")
sys.path.insert(0, HANDLERS)
import promise_handlers  # noqa: E402  (the same function PPE's workers run)

KINDS = ("ok", "abort", "segv", "raise", "hang")
FAULTS = KINDS[1:]
EXPECTED = {"ok": "ok", "abort": "crashed", "segv": "crashed", "raise": "handler_error",
            "hang": "timed_out"}
CONFIGS = {"a": {"workers": 4, "job_timeout": 3.0}, "b": {"workers": 3, "job_timeout": 1.0},
           # Prefetch on for these ~2 ms jobs (the default prefetch_below, 1 ms, leaves it off):
           # good jobs are then sent ahead behind crashes and hangs. Not for OLD binaries, which
           # do not know the key.
           "c": {"workers": 4, "job_timeout": 3.0, "pool_keys": 'prefetch_below = "50ms"\n'}}
HANG_TIMEOUT = "300ms"
HANG_TIMEOUT_S = 0.3
THREADS = 16
CLIENT_TIMEOUT_S = 120
OLD_COMMIT = "25f62c1"

SERVER = """\
[server]
listen = "127.0.0.1:0"
journal = "{tag}-journal.db"
"""

POOL = """
[pool.chaos]
handler = "promise_handlers:chaos"
python = "{python}"
python_path = [{handlers}]
workers = {workers}
job_timeout = "{job_timeout}s"
env = {{ OMP_NUM_THREADS = "1" }}
{pool_keys}"""


def median(xs):
    xs = [x for x in xs if x is not None and x == x]
    if not xs:
        return None
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


def job_mix(n, seed):
    """n job kinds: 10% faults, as many of each of the 4 kinds, shuffled with `seed`."""
    per_kind = n // 10 // len(FAULTS)
    kinds = [k for k in FAULTS for _ in range(per_kind)]
    kinds += ["ok"] * (n - len(kinds))
    random.Random(seed).shuffle(kinds)
    return kinds


def payload_of(kind, tag, i):
    return ("%s %s-%06d unique payload for the promise bench" % (kind, tag, i)).encode()


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


class Results:
    """Outcomes of one run (one system, one config, one round)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_kind = {k: collections.Counter() for k in KINDS}
        self.quarantined = collections.Counter()     # kind -> crashed jobs with quarantined true
        self.examples = []                           # (kind, outcome, body) of surprises
        self.lost = 0

    def add(self, kind, outcome, body=None, quarantined=False):
        with self.lock:
            self.by_kind[kind][outcome] += 1
            if quarantined:
                self.quarantined[kind] += 1
            if outcome == "lost":
                self.lost += 1
            if outcome != EXPECTED[kind] and len(self.examples) < 6 and body is not None:
                self.examples.append((kind, outcome, body))


def drive(n_threads, kinds, tag, one_job, res, stop_at=None):
    """n_threads caller threads share the job list; one_job(state, kind, payload) runs one job
    and records it in res.  Returns (wall seconds, jobs not started because of stop_at)."""
    it = iter(enumerate(kinds))
    it_lock = threading.Lock()
    skipped = [0]
    errors = []

    def caller():
        state = {}
        try:
            while True:
                with it_lock:
                    nxt = next(it, None)
                    if nxt is not None and stop_at is not None and time.monotonic() > stop_at:
                        skipped[0] += 1
                        continue
                if nxt is None:
                    return
                i, kind = nxt
                one_job(state, kind, payload_of(kind, tag, i))
        except BaseException as exc:  # reported after the join
            errors.append(repr(exc))
        finally:
            conn = state.get("conn")
            if conn is not None:
                conn.close()

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(n_threads)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    if errors:
        raise RuntimeError("caller thread failed: %s" % errors[0])
    return wall, skipped[0]


# -- bulkhead -----------------------------------------------------------------------------------

class Daemon(benchlib.Daemon):
    """benchlib.Daemon with its own binary and BULKHEAD_SDK_DIR (benchlib's spawn() inherits
    os.environ, so the variable is set around it)."""

    def __init__(self, tmpdir, binary, sdk, tag, conf):
        text = SERVER.format(tag=tag) + POOL.format(python=PYTHON, handlers=json.dumps(HANDLERS),
                                    workers=conf["workers"],
                                    job_timeout=("%g" % conf["job_timeout"]),
                                    pool_keys=conf.get("pool_keys", ""))
        super().__init__(binary, os.path.join(tmpdir, tag + ".toml"), text,
                         label="daemon " + tag, error=RuntimeError, http_timeout=30,
                         stop_timeout=60)
        saved = os.environ.get("BULKHEAD_SDK_DIR")
        os.environ["BULKHEAD_SDK_DIR"] = sdk
        try:
            self.spawn(os.path.join(tmpdir, tag + ".log"))
        finally:
            if saved is None:
                del os.environ["BULKHEAD_SDK_DIR"]
            else:
                os.environ["BULKHEAD_SDK_DIR"] = saved


def bulkhead_job(daemon, res):
    def one_job(state, kind, payload):
        conn = state.get("conn")
        if conn is None:
            conn = state["conn"] = http.client.HTTPConnection(daemon.host, daemon.port,
                                                              timeout=CLIENT_TIMEOUT_S)
        headers = {"Content-Type": "application/octet-stream"}
        if kind == "hang":
            headers["X-Bulkhead-Timeout"] = HANG_TIMEOUT
        try:
            conn.request("POST", "/v1/pools/chaos/jobs", payload, headers)
            r = conn.getresponse()
            body = r.read()
            outcome = r.getheader("X-Bulkhead-Outcome") or "http_%d" % r.status
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            state["conn"] = None
            res.add(kind, "lost", repr(exc).encode())
            return
        if outcome == "ok":
            if body != payload:
                res.add(kind, "ok_wrong_body", body)
            else:
                res.add(kind, "ok")
            return
        quarantined = False
        try:
            quarantined = bool(json.loads(body).get("quarantined"))
        except ValueError:
            pass
        res.add(kind, outcome, body, quarantined)
    return one_job


def pool_counters(d):
    try:
        return d.pools()["chaos"]["counters"]
    except Exception:  # a report detail, not worth failing the run for
        return {}


def run_bulkhead(cfg, system, conf_key, rnd, tmpdir):
    conf = CONFIGS[conf_key]
    tag = "%s-%s-r%d" % (system, conf_key, rnd)
    binary, sdk = cfg["bins"][system]
    d = Daemon(tmpdir, binary, sdk, tag, conf)
    res = Results()
    out = {"system": system, "config": conf_key, "round": rnd, "res": res}
    try:
        d.wait_healthy()
        if d.wait_ready(90, poll_s=0.1, progress_s=10) is None:
            raise RuntimeError("%s: workers not idle within 90 s:\n%s" % (tag, d.log()))
        d.close_conn()
        time.sleep(0.5)
        out["rss0"] = proc_status_kb(d.pid, "VmRSS")
        out["fds0"] = fd_count(d.pid)
        kinds = job_mix(cfg["jobs"], 1000 + rnd)
        out["load"] = loadavg()
        log("%s: %d jobs, 16 threads, load %s" % (tag, len(kinds), out["load"]))
        out["wall"], _ = drive(THREADS, kinds, tag, bulkhead_job(d, res), res)
        out["rss1"] = proc_status_kb(d.pid, "VmRSS")
        out["fds1"] = fd_count(d.pid)
        out["hwm"] = proc_status_kb(d.pid, "VmHWM")
        out["counters"] = pool_counters(d)
    finally:
        out["stop_rc"] = d.stop()
    out["n"] = cfg["jobs"]
    log_run(out)
    return out


# -- ProcessPoolExecutor (and loky) ---------------------------------------------------------------

class CarefulPool:
    """One executor at a time, shared by the caller threads: replaced when broken, or when as
    many hang jobs timed out on it as it has workers (then its processes are SIGKILLed)."""

    def __init__(self, make, workers, kill):
        self.make, self.workers, self.kill = make, workers, kill
        self.lock = threading.Lock()
        self.gen = 0
        self.ex = make()
        self.hung = 0
        self.broken_replacements = 0
        self.hung_replacements = 0
        self.old = []

    def current(self):
        with self.lock:
            return self.ex, self.gen

    def replace(self, gen, why):
        with self.lock:
            if gen != self.gen:
                return
            if why == "hung":
                self.hung_replacements += 1
                self.kill(self.ex)
            else:
                self.broken_replacements += 1
            try:
                self.ex.shutdown(wait=False, cancel_futures=True)
            except Exception:  # a broken executor may complain; it is dropped anyway
                pass
            self.old.append(self.ex)
            self.ex = self.make()
            self.gen += 1
            self.hung = 0

    def hang_timed_out(self, gen):
        with self.lock:
            if gen != self.gen:
                return
            self.hung += 1
            full = self.hung >= self.workers
        if full:
            self.replace(gen, "hung")

    def close(self):
        with self.lock:
            for ex in self.old + [self.ex]:
                self.kill(ex)
                try:
                    ex.shutdown(wait=False, cancel_futures=True)
                except Exception:
                    pass


def _pool_worker_init():
    """PPE workers are forked from the bench: give them back the default SIGTERM action
    (benchlib.begin_run's handler would turn the pool's terminate() into a traceback)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill_ppe(ex):
    for p in list((getattr(ex, "_processes", None) or {}).values()):
        try:
            p.kill()
        except Exception:
            pass


def pool_job(pool, conf, res, broken_types):
    def one_job(state, kind, payload):
        timeout = HANG_TIMEOUT_S if kind == "hang" else conf["job_timeout"]
        for _ in range(100):
            ex, gen = pool.current()
            try:
                fut = ex.submit(promise_handlers.chaos, payload)
                break
            except broken_types:
                pool.replace(gen, "broken")        # the job did not run: submit it again
            except RuntimeError:                  # "cannot schedule new futures after shutdown"
                time.sleep(0.001)
        else:
            res.add(kind, "not_submitted", b"")
            return
        try:
            out = fut.result(timeout=timeout)
            res.add(kind, "ok" if out == payload else "ok_wrong_body", None)
        except cf.TimeoutError:
            res.add(kind, "timed_out", b"TimeoutError (the task keeps running)")
            if kind == "hang":
                pool.hang_timed_out(gen)
        except broken_types as exc:
            res.add(kind, "broken", repr(exc).encode())
            pool.replace(gen, "broken")
        except cf.CancelledError:
            res.add(kind, "cancelled", b"CancelledError")
        except ValueError as exc:
            res.add(kind, "handler_error", repr(exc).encode())
        except Exception as exc:
            res.add(kind, "other:" + type(exc).__name__, repr(exc).encode())
    return one_job


def loky_module():
    try:
        import loky
        return loky, "loky %s" % getattr(loky, "__version__", "?")
    except ImportError:
        pass
    try:
        from joblib.externals import loky
        return loky, "joblib.externals.loky %s" % getattr(loky, "__version__", "?")
    except ImportError:
        return None, None


def run_peer(cfg, system, conf_key, rnd):
    conf = CONFIGS[conf_key]
    tag = "%s-%s-r%d" % (system, conf_key, rnd)
    res = Results()
    if system == "ppe":
        from concurrent.futures.process import BrokenProcessPool
        make = lambda: cf.ProcessPoolExecutor(
            max_workers=conf["workers"], initializer=_pool_worker_init)  # noqa: E731
        broken_types = (BrokenProcessPool,)
        kill = kill_ppe
    else:
        loky = cfg["loky"]
        make = lambda: loky.ProcessPoolExecutor(
            max_workers=conf["workers"], initializer=_pool_worker_init)  # noqa: E731
        broken_types = (loky.process_executor.BrokenProcessPool, cf.process.BrokenProcessPool)
        kill = kill_ppe
    kinds = job_mix(cfg["ppe_jobs"], 1000 + rnd)
    out = {"system": system, "config": conf_key, "round": rnd, "res": res,
           "n": cfg["ppe_jobs"], "load": loadavg()}
    log("%s: %d jobs, 16 threads, load %s" % (tag, len(kinds), out["load"]))
    pool = CarefulPool(make, conf["workers"], kill)
    try:
        # warm up: every worker started before the clock runs (as bulkhead's are)
        list(pool.ex.map(promise_handlers.chaos, [b"ok warm %d" % i for i in range(8)]))
        out["wall"], out["skipped"] = drive(THREADS, kinds, tag, pool_job(pool, conf, res,
                                                                         broken_types),
                                            res, stop_at=time.monotonic() + cfg["ppe_cap_s"])
    finally:
        pool.close()
    out["counters"] = {"broken_replacements": pool.broken_replacements,
                       "hung_replacements": pool.hung_replacements}
    log_run(out)
    return out


# -- report -------------------------------------------------------------------------------------

def good_not_ok(res):
    c = res.by_kind["ok"]
    return sum(v for k, v in c.items() if k != "ok")


def log_run(out):
    res = out["res"]
    ok = res.by_kind["ok"]
    log("  wall %.1f s; good jobs not ok %d of %d %s; faults %s; lost %d%s"
        % (out["wall"], good_not_ok(res), sum(ok.values()),
           dict((k, v) for k, v in ok.items() if k != "ok"),
           {k: dict(res.by_kind[k]) for k in FAULTS}, res.lost,
           "; counters %s" % out["counters"] if out.get("counters") else ""))


def fmt_int(x):
    return "-" if x is None else "%g" % x


def dist(counter, quarantined=0):
    total = sum(counter.values())
    if not total:
        return "-"
    parts = []
    for outcome, n in counter.most_common():
        s = "%s %s%%" % (outcome, fmt(100.0 * n / total, 1))
        if outcome == "crashed" and quarantined:
            s += " (quarantined %s%%)" % fmt(100.0 * quarantined / n, 1)
        parts.append(s)
    return ", ".join(parts)


SYSTEM_NAMES = {"old": "bulkhead OLD (%s)" % OLD_COMMIT, "new": "bulkhead NEW (this tree)",
                "ppe": "ProcessPoolExecutor (careful user)", "loky": "loky (careful user)"}


def report(cfg, runs):
    out = []
    w = out.append
    w("Command: `%s`. Machine: %s. Load average (1/5/15 min) at start %s, at end %s (other "
      "sessions' builds and tests were running on the same 2 cores)."
      % (cfg["command"], machine_line(ram=True), cfg["load_start"], cfg["load_end"]))
    w("NEW: %s, tree %s. OLD: %s, commit %s." % (cfg["bin_desc_new"], cfg["tree"],
                                                cfg["bin_desc_old"], OLD_COMMIT))
    w("")
    w("Load per round: bulkhead %s jobs, ProcessPoolExecutor %s jobs (every crash breaks the "
      "whole pool, so its run is kept shorter); %d round(s), interleaved; 10%% faults (2.5%% "
      "each of abort, segv, raise, hang); %d caller threads; medians over rounds, fault "
      "outcomes pooled over rounds." % ("{:,}".format(cfg["jobs"]),
                                        "{:,}".format(cfg["ppe_jobs"]), cfg["rounds"], THREADS))
    w("")
    w("| system | config | good jobs not ok | their outcomes | abort | segv | raise | hang "
      "(300 ms) | lost | wall s | good ok jobs/s | supervisor VmRSS MB before -> after | "
      "supervisor fds before -> after |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ok_all = True
    for conf_key in cfg["configs"]:
        conf = CONFIGS[conf_key]
        conf_name = "(%s) %d workers, job_timeout %gs" % (conf_key, conf["workers"],
                                                         conf["job_timeout"])
        if conf.get("pool_keys"):
            conf_name += ", " + conf["pool_keys"].strip()
        for system in cfg["systems"]:
            rs = [r for r in runs if r["system"] == system and r["config"] == conf_key]
            if not rs:
                continue
            bad = [good_not_ok(r["res"]) for r in rs]
            goods = [sum(r["res"].by_kind["ok"].values()) for r in rs]
            bad_pct = [100.0 * b / g for b, g in zip(bad, goods) if g]
            pooled = {k: collections.Counter() for k in KINDS}
            quar = collections.Counter()
            for r in rs:
                for k in KINDS:
                    pooled[k].update(r["res"].by_kind[k])
                quar.update(r["res"].quarantined)
            bad_out = collections.Counter(pooled["ok"])
            bad_out.pop("ok", None)
            bad_desc = ", ".join("%s %d" % kv for kv in bad_out.most_common()) or "-"
            if len(rs) > 1:
                bad_desc += " (all rounds)"
            lost = sum(r["res"].lost for r in rs)
            walls = [r["wall"] for r in rs]
            tput = [r["res"].by_kind["ok"]["ok"] / r["wall"] for r in rs]
            if system in ("old", "new"):
                rss = "%s -> %s" % (fmt(median([r.get("rss0") for r in rs]) / 1024.0, 1),
                                    fmt(median([r.get("rss1") for r in rs]) / 1024.0, 1))
                fds = "%s -> %s" % (fmt_int(median([r.get("fds0") for r in rs])),
                                    fmt_int(median([r.get("fds1") for r in rs])))
            else:
                rss = fds = "- (no supervisor)"
            skipped = sum(r.get("skipped", 0) for r in rs)
            jobs_note = "" if system in ("old", "new") else " [%s jobs%s]" % (
                "{:,}".format(cfg["ppe_jobs"]),
                ", %d not started (time cap)" % skipped if skipped else "")
            w("| %s%s | %s | %s (%s%%)%s | %s | %s | %s | %s | %s | %d | %s | %s | %s | %s |"
              % (SYSTEM_NAMES[system], jobs_note, conf_name, fmt_int(median(bad)),
                 fmt(median(bad_pct), 2),
                 "; rounds: %s" % ", ".join(str(b) for b in bad) if len(rs) > 1 else "",
                 bad_desc, dist(pooled["abort"], quar["abort"]),
                 dist(pooled["segv"], quar["segv"]), dist(pooled["raise"]),
                 dist(pooled["hang"]), lost, fmt(median(walls), 1), fmt(median(tput), 0),
                 rss, fds))
            if system == "new":
                wrong = sum(sum(v for o, v in pooled[k].items() if o != EXPECTED[k])
                            for k in KINDS)
                unq = sum(pooled[k]["crashed"] - quar[k] for k in ("abort", "segv"))
                if wrong or lost or unq:
                    ok_all = False
    w("")
    # per-run details: counters, replacements, walls
    w("Per run (round, system, config): wall s; pool counters (bulkhead) or pool "
      "replacements (PPE); SIGTERM exit status.")
    w("")
    w("| round | system | config | load at start | wall s | good ok jobs/s | counters |")
    w("|---|---|---|---|---|---|---|")
    for r in runs:
        c = r.get("counters") or {}
        if r["system"] in ("old", "new"):
            keys = ("retries", "worker_starts", "worker_deaths", "crashed", "timed_out",
                    "overloaded", "handler_error")
            cdesc = ", ".join("%s %s" % (k, c[k]) for k in keys if k in c)
            cdesc += "; exit %s" % r.get("stop_rc")
        else:
            cdesc = "pool replaced %d x (broken), %d x (all workers hung)" % (
                c.get("broken_replacements", 0), c.get("hung_replacements", 0))
        w("| %d | %s | %s | %s | %.1f | %s | %s |"
          % (r["round"] + 1, r["system"], r["config"], r["load"], r["wall"],
             fmt(r["res"].by_kind["ok"]["ok"] / r["wall"], 0), cdesc))
    for note in cfg["notes"]:
        w("")
        w("Note: " + note)
    ex = [(r, e) for r in runs if r["system"] == "new" for e in r["res"].examples]
    if ex:
        r, (kind, outcome, body) = ex[0]
        w("")
        w("**NEW broke the promise**: a `%s` job ended `%s` (round %d, config %s); problem "
          "body:" % (kind, outcome, r["round"] + 1, r["config"]))
        w("")
        w("```")
        w(body.decode("utf-8", "replace")[:3000])
        w("```")
    for system in ("old",):
        ex = [(r, e) for r in runs if r["system"] == system for e in r["res"].examples]
        seen = set()
        for r, (kind, outcome, body) in ex:
            if (kind, outcome) in seen:
                continue
            seen.add((kind, outcome))
            try:
                j = json.loads(body)
                short = {k: j.get(k) for k in ("outcome", "detail", "quarantined", "stage",
                                               "timings") if k in j}
                short = json.dumps(short)
            except ValueError:
                short = body.decode("utf-8", "replace")[:300]
            w("")
            w("OLD, a `%s` job that ended `%s`: `%s`" % (kind, outcome, short[:500]))
    return "\n".join(out), ok_all


# -- main -----------------------------------------------------------------------------------------

def copy_tree_inputs(binary, sdk, tmpdir, name):
    d = os.path.join(tmpdir, name)
    os.makedirs(d)
    dest_bin = os.path.join(d, "bulkhead")
    shutil.copy2(binary, dest_bin)
    if subprocess.run([dest_bin, "--help"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL, timeout=30).returncode != 0:
        raise SystemExit("promise: %s --help failed (a build running?)" % binary)
    dest_sdk = os.path.join(d, "python")
    shutil.copytree(sdk, dest_sdk, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    return dest_bin, dest_sdk


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2,000 jobs x 1 round (smoke run)")
    ap.add_argument("--jobs", type=int, default=None, help="bulkhead jobs per round (10000)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (2)")
    ap.add_argument("--ppe-jobs", type=int, default=None,
                    help="ProcessPoolExecutor jobs per round (2000; --quick 1000)")
    ap.add_argument("--ppe-cap", type=float, default=300.0,
                    help="stop starting PPE jobs after this many seconds (default 300)")
    ap.add_argument("--configs", default="a,b",
                    help="a (4 workers, 3s), b (3 workers, 1s), c (a with prefetch_below 50ms)")
    ap.add_argument("--systems", default="old,new,ppe,loky")
    ap.add_argument("--new-bin", default=os.path.join(ROOT, "build-bench", "bulkhead"))
    ap.add_argument("--new-sdk", default=os.path.join(ROOT, "python"))
    ap.add_argument("--old-bin", default="/tmp/bulkhead-old/build/bulkhead")
    ap.add_argument("--old-sdk", default="/tmp/bulkhead-old/python")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = ap.parse_args()
    q = args.quick
    cfg = {"jobs": args.jobs or (2000 if q else 10000),
           "rounds": args.rounds or (1 if q else 2),
           "ppe_jobs": args.ppe_jobs or (1000 if q else 2000),
           "ppe_cap_s": args.ppe_cap,
           "configs": [c for c in args.configs.split(",") if c in CONFIGS],
           "systems": [s for s in args.systems.split(",") if s in SYSTEM_NAMES],
           "command": "/usr/bin/python3 bench/promise_load.py" + (
               " " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
           "notes": []}
    if "loky" in cfg["systems"]:
        cfg["loky"], ver = loky_module()
        if cfg["loky"] is None:
            cfg["systems"].remove("loky")
            cfg["notes"].append("loky is not available: neither `import loky` nor "
                                "`joblib.externals.loky` (python3-joblib) is installed, so "
                                "there is no loky row.")
        else:
            cfg["notes"].append("loky: %s." % ver)
    for s, b in (("old", args.old_bin), ("new", args.new_bin)):
        if s in cfg["systems"] and not os.path.exists(b):
            sys.exit("promise: %s not built (see the docstring: how to build OLD and NEW)" % b)
    cfg["bin"] = args.new_bin if "new" in cfg["systems"] else args.old_bin
    begin_run(cfg)
    main_pid = os.getpid()

    def on_signal(signum, frame):
        if os.getpid() != main_pid:       # a forked PPE worker before its initializer ran
            os._exit(128 + signum)
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    cfg["bin_desc_new"] = "%s (built %s)" % (args.new_bin, time.strftime(
        "%Y-%m-%d %H:%M", time.localtime(os.stat(args.new_bin).st_mtime))) \
        if os.path.exists(args.new_bin) else "-"
    cfg["bin_desc_old"] = "%s (built %s)" % (args.old_bin, time.strftime(
        "%Y-%m-%d %H:%M", time.localtime(os.stat(args.old_bin).st_mtime))) \
        if os.path.exists(args.old_bin) else "-"
    cfg["tree"] = git_desc()
    tmpdir = tempfile.mkdtemp(prefix="bulkhead-promise-")
    cfg["bins"] = {}
    for s, b, sdk in (("old", args.old_bin, args.old_sdk), ("new", args.new_bin, args.new_sdk)):
        if s in cfg["systems"]:
            cfg["bins"][s] = copy_tree_inputs(b, sdk, tmpdir, s)
    runs = []

    def run():
        order = [s for s in cfg["systems"]]
        for rnd in range(cfg["rounds"]):
            # rotate the order each round, so no system always runs first
            k = rnd % len(order)
            this = order[k:] + order[:k]
            for conf_key in cfg["configs"]:
                for system in this:
                    if system in ("old", "new"):
                        runs.append(run_bulkhead(cfg, system, conf_key, rnd, tmpdir))
                    else:
                        runs.append(run_peer(cfg, system, conf_key, rnd))
        for r in runs:
            if r["system"] == "new":
                for kind, outcome, body in r["res"].examples:
                    log("NEW: a %s job ended %s: %s" % (kind, outcome,
                                                         body.decode("utf-8", "replace")[:2000]))

    return run_and_report(cfg, tmpdir, args.keep, run, lambda: report(cfg, runs))


if __name__ == "__main__":
    sys.exit(main())
