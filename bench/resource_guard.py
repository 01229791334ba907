#!/usr/bin/python3
"""Resource-guard benchmark: what sampling, recycling and large payloads cost the supervisor.

    /usr/bin/python3 bench/resource_guard.py            # full run, a few minutes
    /usr/bin/python3 bench/resource_guard.py --quick    # under a minute
    # options: --bin PATH (another bulkhead binary), --keep (keep the temp dir: configs, logs)

1. Sampling cost: the supervisor's CPU (utime+stime from /proc/<daemon pid>/stat over a window)
   with N IDLE workers sampled every second (sample_interval = "1s"), minus the same daemon
   configuration sampled every hour (sample_interval = "1h", i.e. no sample in the window).
   N = 16, 64, 256 echo workers, and 16 workers that `import torch` in preload (~1,700 maps each;
   idle workers' maps are not re-read, so this shows whether the map count matters when idle).
   Target: < 2% of one core at 256 idle workers.
2. Recycle-to-ready latency, spawn mode: a 1-worker pool with max_jobs = 1, so every job triggers a
   recycle.  After each job we poll GET /v1/pools/{pool} every ~5 ms until the replacement is
   "idle".  Reported: (a) decision -> ready, the age_s of the "recycled" event in the first
   snapshot that shows the replacement idle (the replacement is spawned at the decision, so its own
   age_s agrees); (b) end to end, from the job's HTTP response to that snapshot (client clock).
   Plain echo handler and a handler whose preload imports torch.
3. Supervisor RSS around 64 MiB echo jobs (Python client): sequential jobs, then one on each of
   the 2 workers at once; VmHWM (peak; reset through /proc/PID/clear_refs between phases) and
   VmRSS after the connections are closed and 5 s idle.

Every daemon gets its own temp TOML config (listen 127.0.0.1:0; the port is read from its log),
waits for /healthz and for all workers idle with deadlines, and is stopped with SIGTERM.
Nothing comes from PyPI; torch rows need Debian's python3-torch and are skipped without it.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import benchlib
from benchlib import (BIN, HANDLERS, MIB, PYTHON, ROOT, begin_run, cpu_seconds, fmt, git_desc,
                      loadavg, log, machine_line, meminfo_kb, pct, percentile,
                      proc_status_kb, run_and_report)

sys.path.insert(0, os.path.join(ROOT, "python"))
import bulkhead  # noqa: E402

benchlib.set_log_tag("guard")


# -- /proc helpers ------------------------------------------------------------------------------

def cpu_seconds_ns(pid):
    """CPU time of every thread of the process from /proc/PID/task/*/schedstat (ns resolution)."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e9


def have_torch():
    import importlib.util
    return importlib.util.find_spec("torch") is not None


# -- the daemon ---------------------------------------------------------------------------------

SERVER = """\
[server]
listen = "127.0.0.1:0"
max_request_body = "80MiB"
"""

POOL = """
[pool.{name}]
handler = "guard_handlers:echo"
python = "{python}"
python_path = [{handlers}]
workers = {workers}
queue_limit = 1000
max_payload = "80MiB"
job_timeout = "60s"
startup_timeout = "{startup}"
sample_interval = "{interval}"
env = {{ OMP_NUM_THREADS = "1", MKL_NUM_THREADS = "1" }}
{extra}"""


class Daemon(benchlib.Daemon):
    def __init__(self, tmpdir, binary, tag, pools):
        """pools: list of dicts with name, workers, interval and optional startup, extra."""
        text = SERVER
        for p in pools:
            text += POOL.format(python=PYTHON, handlers=json.dumps(HANDLERS),
                                startup=p.get("startup", "120s"), extra=p.get("extra", ""),
                                name=p["name"], workers=p["workers"], interval=p["interval"])
        super().__init__(binary, os.path.join(tmpdir, tag + ".toml"), text, label="the daemon",
                         error=RuntimeError, http_timeout=30, stop_timeout=60)
        self.spawn(os.path.join(tmpdir, tag + ".log"))

    def wait_ready(self, deadline_s):
        """Wait until every pool has workers_target idle workers; returns the pools or None."""
        return super().wait_ready(deadline_s, poll_s=0.25, progress_s=10.0)


# -- 1. sampling cost ---------------------------------------------------------------------------

def idle_cpu(daemon, window_s, settle_s):
    """Daemon CPU % of one core over window_s, after settle_s of quiet; no HTTP in the window.

    Returns (% from schedstat, % from stat utime+stime, CPU seconds (schedstat), load average)."""
    daemon.close_conn()
    time.sleep(settle_s)
    load0 = loadavg()
    c0, n0, t0 = cpu_seconds(daemon.pid), cpu_seconds_ns(daemon.pid), time.monotonic()
    time.sleep(window_s)
    c1, n1, t1 = cpu_seconds(daemon.pid), cpu_seconds_ns(daemon.pid), time.monotonic()
    return 100.0 * (n1 - n0) / (t1 - t0), 100.0 * (c1 - c0) / (t1 - t0), n1 - n0, load0


def sampling_case(cfg, tmpdir, n, torch, interval):
    tag = "sample-%d%s-%s" % (n, "-torch" if torch else "", interval)
    extra = 'preload = "guard_handlers:torch_preload"\n' if torch else ""
    d = Daemon(tmpdir, cfg["bin"], tag,
               [{"name": "idle", "workers": n, "interval": interval, "extra": extra,
                 "startup": "120s" if n <= 64 else "240s"}])
    try:
        d.wait_healthy()
        deadline = 90 + (3.0 if torch else 1.0) * n
        if d.wait_ready(deadline) is None:
            return {"error": "not all %d workers idle within %.0f s" % (n, deadline)}
        took = time.monotonic() - d.started
        cpu_pct, stat_pct, cpu_s, load = idle_cpu(d, cfg["window_s"], cfg["settle_s"])
        after = d.pool("idle")
        ws = after["workers"]
        rss = sum((w.get("sample") or {}).get("rss_bytes", 0) for w in ws) / 1e6
        maps = [h["maps"] for w in ws for h in w.get("history", []) if h.get("maps") is not None]
        still_idle = sum(w["state"] == "idle" for w in ws)
        if still_idle != n:
            log("  only %d of %d workers idle after the window" % (still_idle, n))
        return {"ready_s": took, "rss_mb": rss, "maps": max(maps) if maps else None,
                "cpu_pct": cpu_pct, "stat_pct": stat_pct, "cpu_s": cpu_s, "load": load,
                "idle_after": still_idle, "recycles": after["counters"]["recycles"]}
    finally:
        rc = d.stop()
        if rc != 0:
            log("  %s: daemon exit status %s" % (tag, rc))


def run_sampling(cfg, tmpdir, r):
    avail_mb = meminfo_kb("MemAvailable") / 1024.0
    r["mem_avail_mb"] = avail_mb
    # Measured here: an idle echo worker ~10 MB RSS, a torch one ~240 MB; keep 2 GB spare.
    echo_mb, torch_mb, spare_mb = 20.0, 320.0, 2048.0
    cases = []
    for n in cfg["sample_ns"]:
        fit = int((avail_mb - spare_mb) / echo_mb)
        if fit < n:
            m = max(16, fit)
            r["notes"].append("sampling: %d echo workers scaled down to %d (MemAvailable %.0f MB)"
                              % (n, m, avail_mb))
            n = m
        cases.append((n, False))
    if cfg["torch"]:
        n = 16
        if not have_torch():
            r["notes"].append("torch rows skipped: python3-torch is not installed")
        elif avail_mb - spare_mb < n * torch_mb:
            m = int((avail_mb - spare_mb) / torch_mb)
            if m >= 2:
                r["notes"].append("sampling: 16 torch workers scaled down to %d (MemAvailable "
                                  "%.0f MB)" % (m, avail_mb))
                cases.append((m, True))
            else:
                r["notes"].append("torch sampling row skipped: MemAvailable %.0f MB" % avail_mb)
        else:
            cases.append((n, True))
    else:
        r["notes"].append("sampling with 64 echo workers and with torch workers: full run only")
    rows = []
    for n, torch in cases:
        row = {"n": n, "torch": torch}
        intervals = ["1s"]
        if cfg["baseline_all"] or (n, torch) == max(cases):
            intervals.insert(0, "1h")
        for interval in intervals:
            log("sampling: %d %s workers, sample_interval %s: starting (load %s)"
                % (n, "torch" if torch else "echo", interval, loadavg()))
            res = sampling_case(cfg, tmpdir, n, torch, interval)
            if "error" in res:
                log("  " + res["error"])
                row.setdefault("errors", []).append("%s: %s" % (interval, res["error"]))
                continue
            log("  all idle %.1f s after the daemon started; workers' RSS %.0f MB, max maps %s; "
                "daemon CPU %.3f%% of a core (stat: %.2f%%; %.4f s in %.0f s; load %s)"
                % (res["ready_s"], res["rss_mb"], res["maps"], res["cpu_pct"], res["stat_pct"],
                   res["cpu_s"], cfg["window_s"], res["load"]))
            row[interval] = res
        rows.append(row)
    # Rows without their own baseline (quick run) use the one measured (sampling off: the daemon
    # has no timer to serve, so it should be ~0 whatever the number of workers).
    base = next((x["1h"] for x in rows if "1h" in x), None)
    for row in rows:
        b = row.get("1h", base)
        if "1s" in row and b is not None:
            row["net_pct"] = row["1s"]["cpu_pct"] - b["cpu_pct"]
            row["net_stat_pct"] = row["1s"]["stat_pct"] - b["stat_pct"]
            samples = cfg["window_s"] / 1.0
            row["us_per_sample"] = (row["net_pct"] / 100.0 * cfg["window_s"]
                                    / (samples * row["n"]) * 1e6)
            row["base_pct"] = b["cpu_pct"]
            row["base_own"] = "1h" in row
    r["sampling"] = rows


# -- 2. recycle-to-ready latency ------------------------------------------------------------------

def recycle_latency(cfg, daemon, pool, n, poll_s=0.005, deadline_s=60):
    client = bulkhead.Client(daemon.url)
    decision, e2e, polls, errors = [], [], [], []
    try:
        for i in range(n):
            # Wait for a steady state: one worker, idle (the retired one gone).
            deadline = time.monotonic() + deadline_s
            while True:
                ws = daemon.pool(pool)["workers"]
                if len(ws) == 1 and ws[0]["state"] == "idle":
                    old = ws[0]["id"]
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("pool %s not steady: %s" % (pool, ws))
                time.sleep(0.02)
            time.sleep(cfg["recycle_gap_s"])
            client.call(pool, b"x")
            t_ret = time.monotonic()
            seen = None
            npoll = 0
            while time.monotonic() < t_ret + deadline_s:
                snap = daemon.pool(pool)
                t_snap = time.monotonic()
                npoll += 1
                new = [w for w in snap["workers"] if w["id"] != old]
                if new and new[0]["state"] == "idle":
                    ev = [e for e in snap["events"] if e["kind"] == "recycled"
                          and e["worker"] == old]
                    seen = (t_snap, ev[-1]["age_s"] if ev else None, new[0]["age_s"])
                    break
                time.sleep(poll_s)
            if seen is None:
                errors.append("no idle replacement within %d s" % deadline_s)
                continue
            e2e.append(seen[0] - t_ret)
            if seen[1] is not None:
                decision.append(seen[1])
            polls.append(npoll)
    finally:
        client.close()
    return {"decision": decision, "e2e": e2e, "polls": polls, "errors": errors}


def startup_reference(code, n):
    """Median wall time of a fresh /usr/bin/python3 running `code`."""
    times = []
    for _ in range(n):
        t = time.monotonic()
        subprocess.run([PYTHON, "-c", code], check=True, env=dict(os.environ,
                       PYTHONPATH=os.path.join(ROOT, "python"), OMP_NUM_THREADS="1"))
        times.append(time.monotonic() - t)
    return percentile(times, 50)


def run_recycle(cfg, tmpdir, r):
    pools = [{"name": "plain", "workers": 1, "interval": "1s", "extra": "max_jobs = 1\n"}]
    torch = cfg["torch_recycle"] and have_torch()
    if torch:
        pools.append({"name": "torch", "workers": 1, "interval": "1s",
                      "extra": 'max_jobs = 1\npreload = "guard_handlers:torch_preload"\n'})
    elif cfg["torch_recycle"]:
        r["notes"].append("torch recycle row skipped: python3-torch is not installed")
    else:
        r["notes"].append("recycle with torch preload: full run only")
    d = Daemon(tmpdir, cfg["bin"], "recycle", pools)
    rows = []
    try:
        d.wait_healthy()
        if d.wait_ready(120) is None:
            raise RuntimeError("recycle pools not ready:\n" + d.log())
        for p in pools:
            n = cfg["recycle_n"] if p["name"] == "plain" else cfg["recycle_torch_n"]
            load = loadavg()
            log("recycle: %d jobs on pool %s (max_jobs = 1), polling every 5 ms (load %s)"
                % (n, p["name"], load))
            res = recycle_latency(cfg, d, p["name"], n)
            res["pool"], res["load"] = p["name"], load
            res["counters"] = d.pools()[p["name"]]["counters"]
            log("  decision->ready p50 %.1f ms p90 %.1f ms; end to end p50 %.1f ms; %d errors"
                % (pct(res["decision"], 50), pct(res["decision"], 90), pct(res["e2e"], 50),
                   len(res["errors"])))
            rows.append(res)
    finally:
        rc = d.stop()
        if rc != 0:
            log("recycle daemon exit status %s" % rc)
    r["recycle"] = rows
    log("recycle: reference, fresh interpreters")
    worker_import = "import bulkhead.worker, sys; sys.path.insert(0, %r); import guard_handlers" \
        % HANDLERS
    r["ref"] = {"python -c pass": startup_reference("pass", cfg["ref_n"]),
                "python -c 'import bulkhead.worker, guard_handlers'":
                    startup_reference(worker_import, cfg["ref_n"])}
    if torch:
        r["ref"]["python -c 'import torch'"] = startup_reference("import torch", cfg["ref_n"])


# -- 3. supervisor RSS around 64 MiB payloads ---------------------------------------------------

def reset_hwm(pid):
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")    # resets VmHWM to the current VmRSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def run_rss(cfg, tmpdir, r):
    d = Daemon(tmpdir, cfg["bin"], "rss", [{"name": "echo", "workers": 2, "interval": "1s"}])
    rows = []
    try:
        d.wait_healthy()
        if d.wait_ready(60) is None:
            raise RuntimeError("echo pool not ready:\n" + d.log())
        d.close_conn()
        time.sleep(1)
        rows.append(("idle after start", proc_status_kb(d.pid, "VmRSS") / 1024.0,
                     proc_status_kb(d.pid, "VmHWM") / 1024.0))
        big = os.urandom(64 * MIB)
        mib = os.urandom(MIB)

        def phase(name, fn):
            can_reset = reset_hwm(d.pid)
            log("rss: %s" % name)
            fn()
            time.sleep(0.2)
            peak = proc_status_kb(d.pid, "VmHWM") / 1024.0
            time.sleep(cfg["idle_s"])
            idle = proc_status_kb(d.pid, "VmRSS") / 1024.0
            log("  VmHWM %.1f MB%s; VmRSS after %.0f s idle, connections closed: %.1f MB"
                % (peak, "" if can_reset else " (since start)", cfg["idle_s"], idle))
            rows.append((name, idle, peak if can_reset else None))
            r["rss_peak"] = max(r.get("rss_peak", 0.0), peak)

        def sequential():
            with bulkhead.Client(d.url) as c:
                for _ in range(cfg["mib_n"]):
                    if c.call("echo", mib) != mib:
                        raise RuntimeError("1 MiB echo differs")
                for _ in range(cfg["big_n"]):
                    if c.call("echo", big) != big:
                        raise RuntimeError("64 MiB echo differs")

        def concurrent():
            errs = []

            def one():
                try:
                    with bulkhead.Client(d.url) as c:
                        if c.call("echo", big) != big:
                            errs.append("64 MiB echo differs")
                except Exception as exc:  # reported below
                    errs.append(repr(exc))
            ts = [threading.Thread(target=one) for _ in range(2)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            if errs:
                raise RuntimeError("; ".join(errs))

        seq_name = "%s%d x 64 MiB, sequential, one client" % (
            "%d x 1 MiB then " % cfg["mib_n"] if cfg["mib_n"] else "", cfg["big_n"])
        phase(seq_name, sequential)
        phase("2 x 64 MiB at once, one per worker (2 clients)", concurrent)
        if cfg["small_after"]:
            def small():
                with bulkhead.Client(d.url) as c:
                    for _ in range(cfg["small_after"]):
                        c.call("echo", b"x" * 100)
            phase("%d small jobs after that" % cfg["small_after"], small)
    finally:
        rc = d.stop()
        r["rss_stop_rc"] = rc
    r["rss"] = rows


# -- main -----------------------------------------------------------------------------------------

def report(r, cfg):
    out = []
    w = out.append
    w("## Resource guard, %s run" % ("quick" if cfg["quick"] else "full"))
    w("")
    w("Machine: %s. Load average (1/5/15 min) at start %s, at end %s. MemAvailable at start "
      "%.1f GB." % (machine_line(ram=True), cfg["load_start"], cfg["load_end"],
                    r.get("mem_avail_mb", 0) / 1024.0))
    w("Daemon: %s; repo at %s." % (cfg["bin_desc"], cfg["git"]))
    w("")
    w("| measurement | result | target | load avg |")
    w("|---|---|---|---|")
    targets = []
    for row in r.get("sampling", []):
        what = "%d idle %s workers, sampled at 1 Hz" % (
            row["n"], "torch-preloaded" if row["torch"] else "echo")
        if "net_pct" not in row:
            w("| sampling cost: %s | not measured: %s | | |" % (what, "; ".join(row.get("errors",
                                                                              []))))
            continue
        s = row["1s"]
        res = ("**%.2f%%** of one core = %.3f%% at 1 Hz - %.3f%% with sampling off%s "
               "(stat ticks: %.2f%%); %.0f us per worker sample; all ready %.1f s after start; "
               "workers' RSS %.0f MB in all, %s maps each"
               % (row["net_pct"], s["cpu_pct"], row["base_pct"],
                  "" if row["base_own"] else " [baseline of the %d-worker row]" % max(
                      x["n"] for x in r["sampling"] if "1h" in x),
                  row["net_stat_pct"], row["us_per_sample"], s["ready_s"], s["rss_mb"],
                  "{:,}".format(s["maps"]) if s["maps"] is not None else "-"))
        tgt = ""
        if row["n"] >= 256 and not row["torch"]:
            ok = row["net_pct"] < 2.0
            tgt = "< 2%%: **%s**" % ("PASS" if ok else "MISS")
            targets.append(ok)
        w("| sampling cost: %s | %s | %s | %s |" % (what, res, tgt, s["load"]))
    for row in r.get("recycle", []):
        what = "recycle-to-ready, spawn mode, %s (max_jobs = 1), %d recycles" % (
            "plain echo worker" if row["pool"] == "plain" else "worker importing torch in preload",
            len(row["e2e"]))
        res = ("decision->ready p50 **%.0f ms**, p90 %.0f ms; job response->idle seen p50 %.0f "
               "ms, p90 %.0f ms" % (pct(row["decision"], 50), pct(row["decision"], 90),
                                    pct(row["e2e"], 50), pct(row["e2e"], 90)))
        if row["errors"]:
            res += "; %d without a replacement: %s" % (len(row["errors"]), row["errors"][0])
        w("| %s | %s | | %s |" % (what, res, row["load"]))
    if r.get("ref"):
        w("| reference: fresh interpreter, median wall | %s | | |" % "; ".join(
            "`%s` %.0f ms" % (k, v * 1e3) for k, v in r["ref"].items()))
    rss = r.get("rss", [])
    for name, idle, peak in rss:
        if name == "idle after start":
            w("| supervisor RSS, idle after start | VmRSS %.1f MB | | |" % idle)
        else:
            w("| supervisor RSS: %s | VmHWM (peak) %s MB; VmRSS %.1f MB after %.0f s idle, "
              "connections closed | idle <= 20 MB: **%s** | |"
              % (name, fmt(peak, 1), idle, cfg["idle_s"], "PASS" if idle <= 20 else "MISS"))
            targets.append(idle <= 20)
    if rss:
        w("")
        w("Supervisor peak (VmHWM) over the payload run: %.1f MB; VmHWM is reset through "
          "/proc/PID/clear_refs before each phase. SIGTERM exit status %s."
          % (r.get("rss_peak", 0.0), r.get("rss_stop_rc")))
    for line in r["notes"]:
        w("")
        w("Note: " + line)
    return "\n".join(out), all(targets)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    ap.add_argument("--bin", default=BIN, help="the bulkhead binary (default: %(default)s)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = ap.parse_args()
    q = args.quick
    cfg = {
        "quick": q, "bin": os.path.abspath(args.bin),
        "sample_ns": [16, 256] if q else [16, 64, 256],
        "window_s": 4.0 if q else 20.0, "settle_s": 1.5 if q else 4.0,
        "baseline_all": not q, "torch": not q, "torch_recycle": not q,
        "recycle_n": 15 if q else 40, "recycle_torch_n": 12, "recycle_gap_s": 0.05 if q else 0.3,
        "ref_n": 3 if q else 5,
        "mib_n": 0 if q else 10, "big_n": 2 if q else 3, "idle_s": 5.0,
        "small_after": 0 if q else 50,
    }
    if not os.path.exists(cfg["bin"]):
        sys.exit("bench: %s not built (ninja -C build)" % cfg["bin"])

    begin_run(cfg)
    cfg["git"] = git_desc()
    tmpdir = tempfile.mkdtemp(prefix="bulkhead-guard-")
    r = {"notes": []}

    def run():
        run_sampling(cfg, tmpdir, r)
        run_recycle(cfg, tmpdir, r)
        run_rss(cfg, tmpdir, r)

    return run_and_report(cfg, tmpdir, args.keep, run, lambda: report(r, cfg))


if __name__ == "__main__":
    sys.exit(main())
