"""The data-path targets of bench/e2e_peers.py: one markdown table, and the two benches it runs
for the rows e2e_peers does not measure itself.

- table(r, cfg) -> (lines, all_ok): pure; r is e2e_peers' results dict (run_all(), plus
  r["scaling"] / r["zygote"] from the functions below), cfg its config.  all_ok: every row that
  was measured met its target (rows not run count as neither).
- run_scaling(cfg): bench/dispatch_scaling.py --workers 2,256 in a child process; parses the
  growth of the daemon's net CPU per job from its table.
- run_zygote(cfg): bench/zygote.py --latency-only --cases zygote-warm,zygote-warm-standby in a
  child process; parses each case's "crash -> replacement ready" p50 from its log lines.

"best peer" is the best of the in-process pool peers that e2e_peers ran (ProcessPoolExecutor fork
and spawn, multiprocessing.Pool, loky) and that did not hang: Celery and subprocess-per-job are
never close and are not what the targets compare with.
"""

import os
import re
import signal
import subprocess
import sys
import threading

from benchlib import HERE, PYTHON, fmt, log

PEERS = ("PPE", "PPE-spawn", "mp.Pool", "loky")
PAYLOAD_MB = 64            # the 64 MiB jobs; the report's MB are 2^20 bytes (kB / 1024)
RSS_MARGIN_MB = 24
OUTSIDE_MS = 0.3           # warm CNN: round trip p50 minus in-handler p50
SCALING_GROWTH = 1.2
ZYGOTE_MS = 15.0
ZYGOTE_CASES = ("zygote-warm", "zygote-warm-standby", "zygote-standby")
ZYGOTE_LABELS = {"zygote-warm": "warm-up in preload, no standby",
                 "zygote-warm-standby": "warm-up in preload, `standby = 1`",
                 "zygote-standby": "warm-up in init, `standby = 1`"}
# The target is met when a pool can be configured to meet it: with a standby, the replacement is
# READY before the crash. The row shows every case, and the first job after the crash too.


def _num(x):
    return x is not None and x == x


def best_peer(r, field, higher=False):
    """(value, key) of the best peer for res[key][field], or None if no peer has it."""
    res, hung = r["res"], r["hung"]
    got = [(res[k][field], k) for k in PEERS
           if k in res and k not in hung and _num(res[k].get(field))]
    if not got:
        return None
    return (max if higher else min)(got)


def _ms(x):
    return "%s ms" % fmt(x, 3 if x is not None and x < 1 else 2)


def _ratio_row(r, name, field, unit, higher, limit, peer_field=None):
    """bulkhead's res[field] vs the best peer's res[peer_field or field]; (metric, bulkhead,
    peer, ratio, target, ok)."""
    b = r["res"].get("bulkhead", {}).get(field)
    peer = best_peer(r, peer_field or field, higher)
    target = "%s %sx" % ("≥" if higher else "≤", limit)
    show = (lambda x: "%s jobs/s" % fmt(x, 0)) if unit == "jobs/s" else _ms
    if not _num(b) or peer is None:
        return (name, show(b) if _num(b) else "not measured",
                "%s (%s)" % (show(peer[0]), peer[1]) if peer else "-", "-", target, None)
    ratio = b / peer[0]
    ok = ratio >= limit if higher else ratio <= limit
    return (name, show(b), "%s (%s)" % (show(peer[0]), peer[1]), "%.2fx" % ratio, target, ok)


def _child_row(name, target, got, option, measure):
    """A row measured by a child bench (run_scaling, run_zygote): not run, failed, or
    measure(got) -> (cell, ok)."""
    if got is None:
        return (name, "not run (%s)" % option, "-", "-", target, None)
    if "error" in got:
        return (name, "failed: %s" % got["error"], "-", "-", target, None)
    cell, ok = measure(got)
    return (name, cell, "-", "-", target, ok)


def _scaling_cell(s):
    lo, hi = s["rows"][0], s["rows"][-1]
    return ("%.2fx (%s → %s us per job, %d → %d workers; load %s)"
            % (s["growth"], lo[1], hi[1], lo[0], hi[0], s.get("load", "?")),
            s["growth"] <= SCALING_GROWTH and hi[0] >= 256)


def _zygote_cell(z):
    cells, oks = [], []
    for case in ZYGOTE_CASES:
        x = z["cases"].get(case)
        if x is None:
            cells.append("%s: %s" % (ZYGOTE_LABELS[case], z.get("why", {}).get(
                case, "not measured")))
            continue
        oks.append(_num(x["p50"]) and x["p50"] <= ZYGOTE_MS and not x["errors"])
        cells.append("%s: %s (next job 200: %s ms)%s"
                     % (ZYGOTE_LABELS[case],
                        "%s ms" % x["text"] if _num(x["p50"]) else "no sample",
                        x["next_ok"], ", %d errors" % x["errors"] if x["errors"] else ""))
    loads = [x["load"] for x in z["cases"].values()]
    return ("; ".join(cells) + " (%d crashes each%s)"
            % (z["crashes"], "; load %s" % loads[0] if loads else ""),
            any(oks) if oks else None)


def table(r, cfg):
    res = r["res"]
    b = res.get("bulkhead", {})
    rows = [_ratio_row(r, "echo p50, Python client, sequential calls", "echo_p50", "ms", False,
                       1.0)]
    # The peers' 32 in flight are futures; bulkhead's are 32 threads with a Client each (as the
    # issue measured it), or 32 asyncio tasks on one AsyncClient: both rows are shown, over TCP
    # and over a Unix socket (the peers' own pipes are local too).
    for field, how in (("tput_1x32", "32 threads, a Client each"),
                       ("tput_1x32_async", "AsyncClient, 32 tasks"),
                       ("tput_1x32_unix", "32 threads, a Client each, Unix socket"),
                       ("tput_1x32_unix_async", "AsyncClient, 32 tasks, Unix socket")):
        if field in b or field == "tput_1x32":
            rows.append(_ratio_row(r, "echo throughput, one caller process, 32 in flight: "
                                   + how, field, "jobs/s", True, 1.0, peer_field="tput"))
    rows.append(_ratio_row(r, "1 MiB round trip p50", "mib", "ms", False, 0.5))
    if cfg.get("big_n"):
        rows.append(_ratio_row(r, "64 MiB round trip p50", "big", "ms", False, 0.25))
    else:
        rows.append(("64 MiB round trip p50", "not run (full run only)", "-", "-", "≤ 0.25x",
                     None))

    # Warm CNN: what the round trip adds to the handler's own time (bench_handlers.timed_infer).
    def outside(x):
        if _num(x.get("cnn_p50")) and _num(x.get("cnn_inner_p50")):
            return x["cnn_p50"] - x["cnn_inner_p50"]
        return None
    name = "warm CNN: round trip p50 − in-handler p50"
    target = "≤ %g ms" % OUTSIDE_MS
    bo = outside(b)
    peers = [(outside(res[k]), k) for k in PEERS
             if k in res and k not in r["hung"] and outside(res[k]) is not None]
    peer = min(peers) if peers else None
    peer_cell = ("%s (%s: %s − %s)" % (_ms(peer[0]), peer[1], fmt(res[peer[1]]["cnn_p50"], 3),
                                       fmt(res[peer[1]]["cnn_inner_p50"], 3)) if peer else "-")
    if bo is None:
        rows.append((name, "not measured", peer_cell, "-", target, None))
    else:
        rows.append((name, "%s (%s − %s)" % (_ms(bo), fmt(b["cnn_p50"], 3),
                                             fmt(b["cnn_inner_p50"], 3)),
                     peer_cell, "-", target, bo <= OUTSIDE_MS))

    rows.append(_child_row("daemon CPU per job, 2 → 256 workers (net of idle)",
                           "≤ %gx growth" % SCALING_GROWTH, r.get("scaling"), "--with-scaling",
                           _scaling_cell))
    rows.append(_child_row("zygote crash → replacement ready p50", "≤ %g ms" % ZYGOTE_MS,
                           r.get("zygote"), "--with-zygote", _zygote_cell))

    name = "supervisor peak RSS during the 64 MiB jobs"
    limit = PAYLOAD_MB + RSS_MARGIN_MB
    target = "≤ %d MB (64 MiB + %d MB)" % (limit, RSS_MARGIN_MB)
    if cfg.get("big_n"):
        # VmHWM is the peak over the daemon's life, so it covers the 64 MiB jobs (an upper bound
        # if the peak came earlier: the HWM before them says whether it did).
        hwm = r["sup_hwm_end"]
        before = r.get("sup_hwm_before_big")
        rows.append((name, "VmHWM %s MB%s" % (fmt(hwm, 1), " (%s MB before the 64 MiB jobs)"
                                              % fmt(before, 1) if _num(before) else ""),
                     "-", "-", target, hwm <= limit))
    else:
        rows.append((name, "not run (full run only; VmHWM after the 1 MiB jobs %s MB)"
                     % fmt(r.get("sup_hwm_end"), 1), "-", "-", target, None))

    out = ["### Data path targets (load average %s at the start, %s now)"
           % (cfg.get("load_start", "?"), cfg.get("load_table", "?")), "",
           "| metric | bulkhead | best peer | ratio | target | result |",
           "|---|---|---|---|---|---|"]
    for metric, bcell, pcell, ratio, target, ok in rows:
        out.append("| %s | %s | %s | %s | %s | %s |" % (
            metric, bcell, pcell, ratio, target,
            "-" if ok is None else "**PASS**" if ok else "**MISS**"))
    left = [k for k in PEERS if k in r["hung"]]
    out += ["", "Best peer: the best of %s that ran%s. ratio = bulkhead / best peer. MB = 2^20 "
            "bytes, as in the rest of this report. These targets set the exit status only with "
            "--data-path-targets-strict."
            % (", ".join(PEERS), " (left out, they hung: %s)" % ", ".join(left) if left else "")]
    return out, all(row[5] for row in rows if row[5] is not None)


# -- the benches run for the table --------------------------------------------------------------

def run_bench(argv, timeout_s):
    """`PYTHON argv` in a child: its log lines (stderr) pass through and are kept.  Returns
    (exit status, stdout, stderr, timed out)."""
    proc = subprocess.Popen([PYTHON] + argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = [], []

    def pump(src, acc, echo):
        for line in src:
            acc.append(line)
            if echo:
                sys.stderr.write(line)
                sys.stderr.flush()
    pumps = [threading.Thread(target=pump, args=(proc.stdout, out, False), daemon=True),
             threading.Thread(target=pump, args=(proc.stderr, err, True), daemon=True)]
    for t in pumps:
        t.start()
    timed_out = False
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if proc.poll() is None:
            # SIGINT, not SIGTERM: dispatch_scaling.py stops its daemons on KeyboardInterrupt
            # but does not catch SIGTERM (its daemons run in sessions of their own).
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for t in pumps:
        t.join(10)
    return proc.returncode, "".join(out), "".join(err), timed_out


def _failure(rc, err, timed_out, timeout_s):
    if timed_out:
        return "no result within %d s" % timeout_s
    last = [line for line in err.splitlines() if line.strip()]
    return "exit status %s%s" % (rc, ": " + last[-1][:200] if last else "")


SCALING_ROW = re.compile(r"^\|\s*(\d+)\s*\|[^|]*\|[^|]*\|[^|]*\|\s*([^|]*?)\s*\|\s*([0-9.]+|nan)x"
                         r"\s*\|\s*$", re.M)


def parse_scaling(text):
    """dispatch_scaling.py's table: {"rows": [(workers, net us/job, vs first)], "growth": the
    last row's ratio, "load"}; None if there is no table."""
    rows = [(int(m.group(1)), m.group(2), float(m.group(3))) for m in SCALING_ROW.finditer(text)]
    if not rows:
        return None
    load = re.search(r"^daemon CPU per job, .*; load (.+)$", text, re.M)
    return {"rows": rows, "growth": rows[-1][2], "load": load.group(1) if load else "?"}


def run_scaling(cfg, timeout_s=1500):
    # Enough jobs for a few seconds per size: CPU time comes in 10 ms clock ticks.
    jobs = 20000 if cfg["quick"] else 50000
    log("data path: bench/dispatch_scaling.py --workers 2,256 --jobs %d" % jobs)
    rc, out, err, timed_out = run_bench(
        [os.path.join(HERE, "dispatch_scaling.py"), "--workers", "2,256", "--jobs", str(jobs),
         "--bin", cfg["bin"]], timeout_s)
    got = parse_scaling(out) if rc == 0 else None
    if got is None:
        return {"error": "dispatch_scaling.py: " + _failure(rc, err, timed_out, timeout_s)}
    got["jobs"] = jobs
    return got


ZYGOTE_CASE = re.compile(r"\] latency, (\S+): ready .*\(load ([^)]*)\)")
ZYGOTE_P50 = re.compile(r"crashed->ready p50 (\S+) ms .*crashed->next job ok p50 (\S+) ms.*; "
                        r"(\d+) errors")


def parse_zygote(err):
    """zygote.py's log lines: {case: {"p50": ms, "errors": n, "load": ...}} (each case's first
    round: the table's runs use one)."""
    cases, case = {}, None
    for line in err.splitlines():
        m = ZYGOTE_CASE.search(line)
        if m:
            case, load = m.group(1), m.group(2)
            continue
        m = ZYGOTE_P50.search(line)
        if m and case and case not in cases:
            try:
                p50 = float(m.group(1))
            except ValueError:
                p50 = float("nan")
            # text: as zygote.py printed it (0.1 ms resolution)
            cases[case] = {"p50": p50, "text": m.group(1), "next_ok": m.group(2),
                           "errors": int(m.group(3)), "load": load}
            case = None
    return cases


def run_zygote(cfg, crashes=10, timeout_s=900):
    """Both cases in one zygote.py run; a case that zygote.py does not know (the standby case is
    new) is left out and said so, the others still run."""
    cases, why = list(ZYGOTE_CASES), {}
    for attempt in (0, 1):
        log("data path: bench/zygote.py --latency-only --cases %s --crashes %d"
            % (",".join(cases), crashes))
        rc, out, err, timed_out = run_bench(
            [os.path.join(HERE, "zygote.py"), "--latency-only", "--cases", ",".join(cases),
             "--crashes", str(crashes), "--bin", cfg["bin"]], timeout_s)
        known = re.search(r"--cases takes some of (\S+)", err)
        if rc != 0 and known and not attempt:
            have = known.group(1).split(",")
            for c in cases:
                if c not in have:
                    why[c] = "no such case in bench/zygote.py"
            cases = [c for c in cases if c in have]
            if cases:
                continue
        break
    got = parse_zygote(err)
    if not got:
        return {"error": "zygote.py: " + _failure(rc, err, timed_out, timeout_s)}
    # rc 1 is a missed target, still a measurement; anything else left a case unmeasured.
    for c in cases:
        if c not in got:
            why[c] = "not measured (" + _failure(rc, err, timed_out, timeout_s) + ")"
    return {"cases": got, "why": why, "crashes": crashes}
