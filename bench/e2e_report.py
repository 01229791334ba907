"""bench/e2e_peers.py's report: the results table, the targets, the notes, and the data-path
table (bench/data_path_table.py), as one markdown text."""

import os

import data_path_table
from benchlib import fmt, machine_line


ORDER = ["subprocess", "PPE", "PPE-spawn", "mp.Pool", "loky", "celery", "bulkhead", "bulkhead-raw",
         "wrk"]


def report(r, cfg):
    res, names, hung = r["res"], r["names"], r["hung"]
    out = []
    w = out.append
    w("## bulkhead vs peers, %s run" % ("quick" if cfg["quick"] else "full"))
    w("")
    w("Machine: %s. Load average at start %s, at end %s." % (machine_line(), cfg["load_start"],
                                                            cfg["load_end"]))
    w("Daemon: %s; repo at %s." % (cfg["bin_desc"], cfg["git"]))
    w("")
    w("| system | echo p50 / p99 ms | jobs/s | 1 MiB / 64 MiB round trip ms | warm CNN p50 ms "
      "| idle RSS of 2 warm workers MB (echo / CNN) |")
    w("|---|---|---|---|---|---|")
    for key in ORDER:
        if key not in res:
            continue
        x = res[key]
        bigs = "%s / %s" % (fmt(x.get("mib"), 1), fmt(x.get("big"), 0))
        if key == "subprocess":
            rss = "0 (%s per job)" % fmt(r["sub_peak_mb"], 0)
            cnn = "%s (import torch %.1f s)" % (fmt(x.get("cnn_p50")), r["import_torch_s"])
        else:
            rss = "%s / %s" % (fmt(r["echo_worker_rss"].get(key), 0),
                               fmt(r["cnn_worker_rss"].get(key), 0))
            cnn = fmt(x.get("cnn_p50"))
        tput = fmt(x.get("tput"), 0)
        if x.get("tput_cfg"):
            tput += " (%s)" % x["tput_cfg"]
        elif key in ("PPE", "PPE-spawn", "mp.Pool", "loky", "celery") and x.get("tput"):
            tput += " (32 in flight)"
        elif key == "subprocess":
            tput += " (2 launchers)"
        if key in ("bulkhead-raw", "wrk"):
            rss = bigs = cnn = "-"
        name = names.get(key) or key
        if key in hung:
            name += " **[%s]**" % hung[key]
        w("| %s | %s / %s | %s | %s | %s | %s |" % (
            name, fmt(x.get("echo_p50"), 3), fmt(x.get("echo_p99"), 3), tput, bigs, cnn, rss))
    w("")
    w("bulkhead supervisor (daemon) RSS: %.1f MB idle after start; %.1f MB after the echo, "
      "throughput and CNN runs (VmHWM %.1f); %.1f MB at the end, after the 1 MiB%s round trips "
      "(VmHWM %.1f). SIGTERM to exit: %.2f s (exit status %s)."
      % (r["sup_rss_start"], r["sup_rss_runs"], r["sup_hwm_runs"], r["sup_rss_end"],
         " and 64 MiB" if cfg["big_n"] else "", r["sup_hwm_end"], r["stop"][1], r["stop"][0]))
    w("")
    w("jobs/s is the median of %d interleaved repeats per system (%s). bulkhead's caller "
      "configuration was picked by a sweep (processes x threads, one Client per thread): %s. "
      "In the same repeats, bulkhead from one caller process with 32 in flight, as the "
      "in-process peers: 32 threads with a Client each %s jobs/s; AsyncClient with 32 tasks %s "
      "jobs/s; over a Unix socket (a second daemon, the echo pool alone) %s and %s jobs/s."
      % (cfg["tput_repeats"], "; ".join("%s: %s" % (k, ", ".join(fmt(v, 0) for v in
                                                               res[k]["tput_all"]))
                                        for k in ORDER if k in res and "tput_all" in res[k]),
         "; ".join("%dx%d: %.0f/s" % (p, t, x) for p, t, x, _ in r["tput_tried"]),
         ", ".join(fmt(v, 0) for v in res["bulkhead"]["tput_1x32_all"]),
         ", ".join(fmt(v, 0) for v in res["bulkhead"]["tput_1x32_async_all"]),
         ", ".join(fmt(v, 0) for v in res["bulkhead"].get("tput_1x32_unix_all", [])),
         ", ".join(fmt(v, 0) for v in res["bulkhead"].get("tput_1x32_unix_async_all", []))))
    c = r["tput_best"][3]
    tot = c["daemon_us"] + c["workers_us"] + c["callers_us"]
    w("CPU per job at that configuration (/proc, over the measuring window): daemon %.0f us, "
      "its 2 workers %.0f us, caller processes %.0f us; total %.0f us, i.e. at most %.0f jobs/s "
      "on %d cores." % (c["daemon_us"], c["workers_us"], c["callers_us"], tot,
                        os.cpu_count() * 1e6 / tot if tot else 0, os.cpu_count()))
    if r.get("wrk_runs"):
        w("")
        w("Daemon CPU per job vs connections (wrk; each connection has one job queued or "
          "running, so connections - 2 jobs wait in the queue): " + "; ".join(
              "%d conns: %s req/s, %s us" % (c, fmt(x, 0), fmt(d, 0))
              for c, x, d in r["wrk_runs"]) + ".")
    if r.get("celery_main_echo") is not None:
        w("")
        w("Celery's main worker process (not counted above): %s MB (echo), %s MB (CNN); plus "
          "redis-server." % (fmt(r.get("celery_main_echo"), 0), fmt(r.get("celery_main_cnn"), 0)))
    for line in r["notes"]:
        w("")
        w("Note: " + line)

    b, p, sub = res["bulkhead"], res["PPE"], res["subprocess"]
    speedup = sub["cnn_p50"] / b["cnn_p50"]
    targets = [
        ("echo p50 <= 1.5x ProcessPoolExecutor's",
         "%.3f ms vs %.3f ms = %.2fx (limit 1.5x)" % (b["echo_p50"], p["echo_p50"],
                                                      b["echo_p50"] / p["echo_p50"]),
         b["echo_p50"] <= 1.5 * p["echo_p50"]),
        (">= 5,000 echo jobs/s", "%s jobs/s (%s), %.2fx the target"
         % (fmt(b["tput"], 0), b["tput_cfg"], b["tput"] / 5000.0), b["tput"] >= 5000),
        ("warm inference >= 50x faster than subprocess-per-job",
         "%.0f ms / %.2f ms = %.0fx" % (sub["cnn_p50"], b["cnn_p50"], speedup), speedup >= 50),
        ("supervisor RSS <= 20 MB after the echo, throughput and CNN runs",
         "%.1f MB (VmHWM %.1f)" % (r["sup_rss_runs"], r["sup_hwm_runs"]),
         r["sup_rss_runs"] <= 20),
        ("supervisor RSS <= 20 MB after the large-payload runs (1 MiB%s)"
         % (", 64 MiB" if cfg["big_n"] else ""),
         "%.1f MB retained, idle, connections closed (VmHWM %.1f)"
         % (r["sup_rss_end"], r["sup_hwm_end"]), r["sup_rss_end"] <= 20),
    ]
    w("")
    w("| target | measured | result |")
    w("|---|---|---|")
    for name, measured, ok in targets:
        w("| %s | %s | %s |" % (name, measured, "PASS" if ok else "MISS"))
    lines, dp_ok = data_path_table.table(r, cfg)
    w("")
    out.extend(lines)
    return "\n".join(out), all(ok for _, _, ok in targets), dp_ok
