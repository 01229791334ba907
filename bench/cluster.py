#!/usr/bin/python3
"""Cluster throughput scaling over 1, 2 and 3 nodes, and the cost of the Redis path, in ONE run.

    /usr/bin/python3 bench/cluster.py            # 300 jobs per node count, 500 echo calls; 5 rounds
    /usr/bin/python3 bench/cluster.py --quick    # 120 jobs, 200 echo calls; 3 rounds (< 2 min)
    # options: --bin PATH (default $BULKHEAD_BIN or build/bulkhead), --rounds N, --keep (keep the
    # temp dir: configs, daemon logs, redis log, result.md)

This file owns the measurement of `[cluster]` (docs/cluster.md). One private redis-server on a
free loopback port (no persistence), killed at the end. The daemons (`bulkhead serve`) meet in
it, one Redis database per cluster so that the clusters do not see each other:

- scaling: three clusters of 1, 2 and 3 nodes (db 1, 2, 3), every node with pool ``sleep``
  (bench/handlers/bench_handlers.py's ``sleep50``: 50 ms of sleeping, no CPU) and ONE worker.
  All jobs go to node A of the cluster from 12 threads, each with its own keep-alive
  http.client connection; A runs a job itself when its worker is free, else the job goes
  through the pool's Redis stream to whichever node has a free worker. jobs/s = N jobs / the
  time from the first submit to the last answer. The X-Bulkhead-Node header of every answer
  says which node ran it: the table gives each node's share. Targets: 2 nodes >= 1.9x and
  3 nodes >= 2.8x the 1-node rate.
- Redis path: a cluster of two nodes (db 4), X with pool ``echo`` (1 worker) and Y without it
  (Y has pool ``other``). One caller, sequential 100-byte echo calls on one keep-alive
  connection per node: to X (the local path, Redis untouched) and to Y (Y -> stream -> X ->
  X's outcome stream -> Y). Target: Redis path p50 - local p50 <= 1 ms.
- async jobs: X and Y journal their async jobs, and Z is the same echo pool without [cluster].
  One caller, sequential `?wait=0` submits, alternating Z and X call by call: the time to the
  202, which on X includes writing the job's record to Redis (so any node can answer for it).
  Then GETs of one of X's finished jobs, alternating X (its journal) and Y (Redis record).
  Target: accept p50 on X - on Z <= 1 ms.

All clusters stay up for the whole run: stopping and starting nodes between cases would race
the heartbeats (a stopped node stays listed until the others read Redis again) and the workers'
start-up. The idle clusters only heartbeat every 100 ms; the table says how much CPU they used.
Before each case the bench waits until node A's GET /v1/cluster lists exactly that cluster's
nodes, each with a ready worker for the pool. Warm-up: 50 echo calls per target and 4 jobs per
node per cluster, untimed. The machine is noisy (2 shared cores): each round measures every
node count (the order rotating per round) and then the echo calls (alternating X and Y call by
call, the first one alternating per round); the table gives medians over rounds, and the load
average before and after. Exit status 0 when every target is met, 1 otherwise.
"""

import argparse
import collections
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
from benchlib import (HANDLERS, PYTHON, ROOT, cpu_seconds_sum, fmt, git_desc, log,  # noqa: E402
                      machine_line, percentile)

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
THREADS = 12
TARGETS = {2: 1.9, 3: 2.8}
ECHO_TARGET_MS = 1.0
NODE_NAMES = ["node-a", "node-b", "node-c"]

POOL = """
[pool.{name}]
handler = "bench_handlers:{handler}"
python = "{python}"
python_path = ["{handlers}"]
workers = 1
job_timeout = "60s"
"""
CONFIG = """\
[server]
listen = "127.0.0.1:0"
journal = "{journal}"
{pools}
[cluster]
redis = "redis://127.0.0.1:{port}/{db}"
node = "{node}"
heartbeat = "100ms"
claim_after = "2s"
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """A private redis-server: no RDB, no AOF, its files in tmpdir."""

    def __init__(self, tmpdir):
        self.port = free_port()
        self.log = open(os.path.join(tmpdir, "redis.log"), "wb")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmpdir],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            # PING by hand: the bench needs no Redis client library
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("bench: redis-server did not answer PING (see %s)"
                                 % self.log.name)
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def start_node(cfg, tmpdir, db, node, pools, journal=False, cluster=True):
    """pools: [(pool name, handler)]; spawns the daemon, does not wait. `journal`: with async
    jobs; `cluster`: False for a daemon without [cluster] (the baseline)."""
    label = "db%d-%s" % (db, node)
    text = CONFIG.format(
        pools="".join(POOL.format(name=n, handler=h, python=PYTHON, handlers=HANDLERS)
                      for n, h in pools),
        port=cfg["redis_port"], db=db, node=node,
        journal=os.path.join(tmpdir, label + ".db") if journal else "")
    if not cluster:
        text = text[:text.index("[cluster]")]
    d = benchlib.Daemon(cfg["bin"], os.path.join(tmpdir, label + ".toml"), text,
                        label="bench: daemon " + label, error=RuntimeError)
    d.spawn(os.path.join(tmpdir, label + ".log"))
    d.name = node
    return d


def wait_cluster(d, expect, pool, holders=None, deadline_s=30):
    """Waits until d's GET /v1/cluster lists exactly the nodes `expect`, each of `holders`
    (default: all of them) with a ready worker for `pool`."""
    deadline = time.monotonic() + deadline_s
    seen = None
    while time.monotonic() < deadline:
        if d.proc.poll() is not None:
            raise RuntimeError("%s died:\n%s" % (d.label, d.log()))
        c = d.get_json("/v1/cluster")
        seen = {n["node"]: max([p.get("ready_workers", 0) for p in n.get("pools", [])
                                if p["name"] == pool] or [-1]) for n in c.get("nodes", [])}
        if c.get("redis", {}).get("connected") and set(seen) == set(expect) and \
                all(seen[n] >= 1 for n in holders or expect):
            return
        time.sleep(0.05)
    raise RuntimeError("%s: /v1/cluster did not show %s ready for pool %s within %d s; "
                       "last seen (node: ready workers) %s" % (d.label, expect, pool,
                                                                deadline_s, seen))


def call(conn, method, path, payload=None, want=200):
    """One request on a keep-alive connection: (body, response); raises unless the status is
    `want`."""
    headers = {"Content-Type": "application/octet-stream"} if payload is not None else {}
    conn.request(method, path, payload, headers)
    r = conn.getresponse()
    body = r.read()
    if r.status != want:
        raise RuntimeError("%s %s: %d %s" % (method, path, r.status, body[:300]))
    return body, r


def post(conn, pool, payload):
    """One job: (body, X-Bulkhead-Node, X-Bulkhead-Runs)."""
    body, r = call(conn, "POST", "/v1/pools/%s/jobs" % pool, payload)
    return body, r.getheader("X-Bulkhead-Node"), r.getheader("X-Bulkhead-Runs")


def throughput(node_a, n_jobs):
    """n_jobs sleep jobs to node A from THREADS threads: (jobs/s, Counter of the node that ran
    each job, jobs handed out more than once)."""
    lock = threading.Lock()
    next_job = iter(range(n_jobs))
    ran_on = collections.Counter()
    reruns, errors = [0], []
    ready = threading.Barrier(THREADS + 1)
    last = [0.0]

    def caller():
        conn = http.client.HTTPConnection(node_a.host, node_a.port, timeout=120)
        try:
            conn.connect()
            ready.wait()
            while True:
                with lock:
                    i = next(next_job, None)
                if i is None:
                    return
                payload = b"job-%d" % i
                body, node, runs = post(conn, "sleep", payload)
                if body != payload:
                    raise RuntimeError("job %d: wrong answer %r" % (i, body[:100]))
                with lock:
                    ran_on[node] += 1
                    reruns[0] += runs not in (None, "1")
                    last[0] = time.perf_counter()
        except BaseException as e:
            errors.append(e)
            try:
                ready.abort()
            except threading.BrokenBarrierError:
                pass
        finally:
            conn.close()

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(THREADS)]
    for t in threads:
        t.start()
    try:
        ready.wait(30)
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError("caller failed: %r" % (errors[0],))
    return n_jobs / (last[0] - t0), ran_on, reruns[0]


def echo_calls(x, y, k, first_y):
    """k sequential echo calls to X and k to Y, alternating call by call: (ms to X, ms to Y)."""
    payload = os.urandom(100)
    conns = {d.name: http.client.HTTPConnection(d.host, d.port, timeout=60) for d in (x, y)}
    times = {x.name: [], y.name: []}
    try:
        for c in conns.values():   # a fresh connection: its handshake is not timed
            post(c, "echo", payload)
        order = [y, x] if first_y else [x, y]
        for _ in range(k):
            for d in order:
                t = time.perf_counter()
                body, node, _runs = post(conns[d.name], "echo", payload)
                times[d.name].append((time.perf_counter() - t) * 1e3)
                if body != payload or node != x.name:
                    raise RuntimeError("echo via %s: ran on %s, answer ok %s"
                                       % (d.name, node, body == payload))
    finally:
        for c in conns.values():
            c.close()
    return times[x.name], times[y.name]


def submit_async(conn, pool, payload):
    """One async job: its id, once accepted (202)."""
    _, r = call(conn, "POST", "/v1/pools/%s/jobs?wait=0" % pool, payload, want=202)
    return r.getheader("X-Bulkhead-Job")


def get_job(conn, path, payload):
    """GET of a finished echo job, whose body must be `payload`."""
    body, _ = call(conn, "GET", path)
    if body != payload:
        raise RuntimeError("GET %s: not the job's result" % path)


def async_calls(z, x, y, k, first_x):
    """k async submits to Z (no cluster) and k to X, alternating; then k GETs of one of X's
    finished jobs on X and on Y, alternating: ({accept: (Z ms, X ms)}, {get: (X ms, Y ms)})."""
    payload = os.urandom(100)
    conns = {d.name: http.client.HTTPConnection(d.host, d.port, timeout=60) for d in (x, y, z)}
    accept = {z.name: [], x.name: []}
    get = {x.name: [], y.name: []}
    try:
        submit_async(conns[z.name], "echo", payload)  # fresh connections: not timed
        job = submit_async(conns[x.name], "echo", payload)
        order = [x, z] if first_x else [z, x]
        for _ in range(k):
            for d in order:
                t = time.perf_counter()
                submit_async(conns[d.name], "echo", payload)
                accept[d.name].append((time.perf_counter() - t) * 1e3)
        path = "/v1/jobs/%s" % job
        for d in (x, y):  # finished, as each node sees it
            get_job(conns[d.name], path + "?wait=20s", payload)
        for _ in range(k):
            for d in ([y, x] if first_x else [x, y]):
                t = time.perf_counter()
                get_job(conns[d.name], path, payload)
                get[d.name].append((time.perf_counter() - t) * 1e3)
    finally:
        for c in conns.values():
            c.close()
    return (accept[z.name], accept[x.name]), (get[x.name], get[y.name])


def log_findings(path):
    """Lines of a daemon log that look like trouble (warnings, errors), less the start-up notices
    about this host's cgroups, which every daemon here writes and which say nothing of the
    cluster."""
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8", "replace").splitlines()
    return [ln for ln in lines
            if any(w in ln.lower() for w in ("error", "warn", "fail", "crash", "refused"))
            and "cgroup" not in ln]


def run(cfg, tmpdir, res):
    redis = Redis(tmpdir)
    cfg["redis_port"] = redis.port
    try:
        clusters = {}
        for k in (1, 2, 3):
            clusters[k] = [start_node(cfg, tmpdir, k, NODE_NAMES[i], [("sleep", "sleep50")])
                           for i in range(k)]
        x = start_node(cfg, tmpdir, 4, "x", [("echo", "echo")], journal=True)
        y = start_node(cfg, tmpdir, 4, "y", [("other", "echo")], journal=True)
        z = start_node(cfg, tmpdir, 5, "z", [("echo", "echo")], journal=True, cluster=False)
        daemons = [d for k in clusters for d in clusters[k]] + [x, y, z]
        for d in daemons:
            d.wait_healthy()
        for d in daemons:
            if d.wait_ready(60) is None:
                raise RuntimeError("%s: workers not ready in 60 s:\n%s" % (d.label, d.log()))
        log("%d daemons up, load %s" % (len(daemons), benchlib.loadavg()))
        wait_cluster(y, ["x", "y"], "echo", ["x"])
        echo_calls(x, y, cfg["warm"], False)   # warm-up: both paths, workers, Redis connections
        async_calls(z, x, y, cfg["warm"], False)
        for k in (1, 2, 3):
            wait_cluster(clusters[k][0], NODE_NAMES[:k], "sleep")
            throughput(clusters[k][0], 4 * k)
        for rnd in range(cfg["rounds"]):
            for j in range(3):
                k = (1, 2, 3)[(j + rnd) % 3]
                nodes = clusters[k]
                wait_cluster(nodes[0], NODE_NAMES[:k], "sleep")
                idle = [d.pid for d in daemons if d not in nodes]
                cpu0, t0 = cpu_seconds_sum(idle), time.monotonic()
                rate, ran_on, reruns = throughput(nodes[0], cfg["jobs"])
                res["idle_cpu"].append((cpu_seconds_sum(idle) - cpu0) / (time.monotonic() - t0))
                res["rate"][k].append(rate)
                res["ran_on"][k].update(ran_on)
                res["reruns"] += reruns
                log("round %d: %d node(s) %.1f jobs/s, ran on %s"
                    % (rnd + 1, k, rate, dict(sorted(ran_on.items(), key=str))))
            wait_cluster(y, ["x", "y"], "echo", ["x"])
            xs, ys = echo_calls(x, y, cfg["echo"], rnd % 2 == 1)
            res["local"].append(xs)
            res["redis"].append(ys)
            log("round %d: echo p50 local %.2f ms, via Redis %.2f ms (load %s)"
                % (rnd + 1, percentile(xs, 50), percentile(ys, 50), benchlib.loadavg()))
            (zs, xa), (xg, yg) = async_calls(z, x, y, cfg["echo"], rnd % 2 == 1)
            for key, values in (("accept_plain", zs), ("accept_cluster", xa), ("get_origin", xg),
                                ("get_other", yg)):
                res[key].append(values)
            log("round %d: async accept p50 without cluster %.2f ms, with %.2f ms; GET p50 on "
                "the origin %.2f ms, on another node %.2f ms"
                % (rnd + 1, percentile(zs, 50), percentile(xa, 50), percentile(xg, 50),
                   percentile(yg, 50)))
        res["logs"] = {os.path.basename(d.log_path): d.log_path for d in daemons}
        # SIGTERM, not kill_daemons()'s SIGKILL: a killed daemon leaves its cgroups behind
        t = time.monotonic()
        res["exits"] = {d.label.split()[-1]: d.stop() for d in daemons}
        log("daemons stopped in %.1f s" % (time.monotonic() - t))
    finally:
        # daemons before Redis: a daemon that outlives Redis logs the lost connection
        benchlib.kill_daemons()
        redis.stop()


def latency_table(w, res, what, rows):
    """Writes a table of p50 (median of rounds) and p99 (all calls) per (key in res, name) row;
    returns the p50 by key."""
    w("| %s | p50 ms (median of rounds) | p99 ms (all calls) |" % what)
    w("|---|---:|---:|")
    p50 = {}
    for key, name in rows:
        p50[key] = statistics.median(percentile(r, 50) for r in res[key])
        w("| %s | %.3f | %.3f |" % (name, p50[key],
                                    percentile([t for r in res[key] for t in r], 99)))
    return p50


def report(cfg, res):
    out = []
    w = out.append
    ok = True
    w("## Cluster: throughput over 1, 2, 3 nodes, and the Redis path\n")
    w("Machine: %s. Load average at start %s, at end %s." % (machine_line(), cfg["load_start"],
                                                            cfg["load_end"]))
    w("Daemon: %s; repo at %s. Command: `%s`." % (cfg["bin_desc"], git_desc(),
                                                 " ".join(sys.argv)))
    w("%d rounds, medians over rounds. Heartbeat 100 ms, one private redis-server.\n"
      % cfg["rounds"])
    w("### Throughput: 50 ms sleep handler, 1 worker per node, %d jobs per case to node A from "
      "%d threads\n" % (cfg["jobs"], THREADS))
    w("| nodes | jobs/s (median) | min-max | ratio to 1 node | ideal | target | share of jobs "
      "per node | verdict |")
    w("|---:|---:|---:|---:|---:|---:|---|---|")
    base = statistics.median(res["rate"][1])
    for k in (1, 2, 3):
        m = statistics.median(res["rate"][k])
        total = sum(res["ran_on"][k].values())
        share = ", ".join("%s %.0f%%" % (n, 100.0 * res["ran_on"][k][n] / total)
                          for n in sorted(res["ran_on"][k], key=str))
        verdict = ""
        if k in TARGETS:
            hit = m / base >= TARGETS[k]
            ok &= hit
            verdict = "PASS" if hit else "MISS"
        w("| %d | %s | %s-%s | %.2fx | %dx | %s | %s | %s |"
          % (k, fmt(m), fmt(min(res["rate"][k])), fmt(max(res["rate"][k])), m / base, k,
             ">= %.1fx" % TARGETS[k] if k in TARGETS else "-", share, verdict))
    missing = [n for k in (2, 3) for n in NODE_NAMES[:k] if not res["ran_on"][k][n]]
    w("\nJobs handed out more than once (X-Bulkhead-Runs > 1): %d.%s Idle clusters' daemons "
      "during a case: median %.1f%% of one core."
      % (res["reruns"], " Nodes that ran no job: %s." % missing if missing else "",
         100 * statistics.median(res["idle_cpu"])))
    w("\n### Redis path: 100-byte echo, one caller, sequential, %d calls per target per round\n"
      % cfg["echo"])
    p50 = latency_table(w, res, "path", (
        ("local", "to X, which has the pool (local)"),
        ("redis", "to Y, which has not (Y -> Redis -> X -> Redis -> Y)")))
    diff = p50["redis"] - p50["local"]
    hit = diff <= ECHO_TARGET_MS
    ok &= hit
    w("\nRedis path p50 overhead: %.3f ms (target <= %.1f ms): %s. Per round: %s."
      % (diff, ECHO_TARGET_MS, "PASS" if hit else "MISS",
         ", ".join("%.3f" % (percentile(b, 50) - percentile(a, 50))
                   for a, b in zip(res["local"], res["redis"]))))
    w("\n### Async jobs: 100-byte echo, one caller, sequential, %d calls per target per round\n"
      % cfg["echo"])
    p50.update(latency_table(w, res, "call", (
        ("accept_plain", "submit `?wait=0` to Z, without [cluster] (to the 202)"),
        ("accept_cluster", "submit `?wait=0` to X, which also records it in Redis"),
        ("get_origin", "GET of a finished X job on X (its journal)"),
        ("get_other", "GET of the same job on Y (its Redis record)"))))
    diff = p50["accept_cluster"] - p50["accept_plain"]
    hit = diff <= ECHO_TARGET_MS
    ok &= hit
    w("\nAsync accept p50 overhead of [cluster]: %.3f ms (target <= %.1f ms): %s."
      % (diff, ECHO_TARGET_MS, "PASS" if hit else "MISS"))
    findings = {name: log_findings(path) for name, path in sorted(res.get("logs", {}).items())}
    if any(findings.values()):
        w("\nDaemon log lines with error/warn/fail/crash/refused:")
        for name, lines in findings.items():
            for ln in lines[:5]:
                w("- %s: %s" % (name, ln[:200]))
            if len(lines) > 5:
                w("- %s: ... %d more" % (name, len(lines) - 5))
    else:
        w("\nDaemon logs: no line with error/warn/fail/crash/refused (cgroup notices aside).")
    bad = {n: rc for n, rc in res.get("exits", {}).items() if rc != 0}
    if bad:
        w("Daemons that did not exit 0 on SIGTERM (None: killed after 30 s): %s." % bad)
    return "\n".join(out), ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.environ.get("BULKHEAD_BIN",
                                                    os.path.join(ROOT, "build", "bulkhead")))
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    args = ap.parse_args()
    benchlib.set_log_tag("cluster")
    if not os.access(REDIS_SERVER, os.X_OK):
        sys.exit("bench: redis-server not found")
    cfg = {"bin": os.path.abspath(args.bin),
           "rounds": args.rounds or (3 if args.quick else 5),
           "jobs": 120 if args.quick else 300,
           "echo": 200 if args.quick else 500,
           "warm": 50}
    benchlib.begin_run(cfg)
    res = {"rate": {1: [], 2: [], 3: []}, "ran_on": {k: collections.Counter() for k in (1, 2, 3)},
           "reruns": 0, "idle_cpu": [], "local": [], "redis": [], "accept_plain": [],
           "accept_cluster": [], "get_origin": [], "get_other": []}
    tmpdir = tempfile.mkdtemp(prefix="bulkhead-cluster-")
    log("configs and logs in %s" % tmpdir)
    return benchlib.run_and_report(cfg, tmpdir, args.keep, lambda: run(cfg, tmpdir, res),
                                   lambda: report(cfg, res))


if __name__ == "__main__":
    sys.exit(main())
