#!/usr/bin/python3
"""Large payload round trips, memfd against inline, beside the pool peers, in ONE run.

    /usr/bin/python3 bench/large_payloads.py                 # 1, 4, 16, 64 MiB; 5 rounds
    /usr/bin/python3 bench/large_payloads.py --quick         # 1 and 16 MiB; 3 rounds
    /usr/bin/python3 bench/large_payloads.py --results-ab    # only the result-path A/B below
    /usr/bin/python3 bench/large_payloads.py --payloads-ab   # only the payload-path A/B below
    /usr/bin/python3 bench/large_payloads.py --binaries-ab OLD_BIN   # this binary against OLD_BIN

This file owns the large-payload measurement (docs/protocol.md, "Large payloads by memfd"). Three
daemons (`build/bulkhead serve`, or $BULKHEAD_BIN / --bin), each with two 1-worker pools running
bench/handlers/bench_handlers.py's ``echo`` (payload as ``bytes``) and ``echo_view`` (payload as
a ``memoryview``): "inline" with ``memfd_threshold = "0"`` (every payload inline in the
socketpair, as before memfds), "memfd" with the defaults (payloads by memfd from 256 KiB, bytes
results from 16 MiB; the ``bytes`` handler's payloads only from 16 MiB, since 2026-12-07), and "memfd, results too" with ``memfd_result_threshold = "256KiB"`` (bytes
results by memfd from 256 KiB as well, the default before 2026-12-07). One more row calls the
"memfd" daemon's ``echo_view`` through ``bulkhead.AsyncClient``. Beside them
ProcessPoolExecutor (fork), multiprocessing.Pool and loky (when joblib is installed), 1 worker
each, calling ``echo``. Every caller gets its answer as ``bytes``, checked byte for byte.

The machine is noisy (2 shared cores): each round makes one call per system and size after one
warm-up call per system and size, the order rotating per round; the table reports the MEDIAN
per system and size, the ratio to the fastest peer, the daemons' CPU per call and their peak RSS
(VmHWM) at the end, and the load average before and after.

Then a second table, the result path alone: the ``bytes`` echo of the "memfd" and "memfd,
results too" daemons, alternating call by call (200 calls each per size under 8 MiB, 40 from
8 MiB), medians: what ``memfd_result_threshold`` = 16 MiB buys or costs between 0.5 and 16 MiB.
Five cold samples per cell, as in the first table, are too few to see a 20% difference.

``--payloads-ab`` measures the payload path the same way instead: the "memfd" and "inline"
daemons alternating, for the ``bytes`` and the ``memoryview`` handler, 0.5 to 16 MiB (results
under 16 MiB come back through the socket in both daemons, a 16 MiB one by memfd in the first).
Since 2026-12-07 a ``bytes`` handler's payloads take the memfd only from
``memfd_result_threshold`` (16 MiB) on, so below it both columns are inline for that handler.

``--binaries-ab OLD_BIN`` runs two daemons with the default thresholds, OLD_BIN's and this one's
(--bin), and alternates them call by call for the ``bytes`` and the ``memoryview`` handler, 0.5 to
64 MiB: what a change of the binary did to the large-payload path (reused payload files, since
2026-12-08). The calls follow each other without a pause, so a reused file is always at hand.
"""

import argparse
import concurrent.futures
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(HERE, "handlers"))
sys.path.insert(0, HERE)

import bench_handlers as bh  # noqa: E402
import benchlib  # noqa: E402
from benchlib import cpu_seconds, loadavg, log, machine_line, proc_status_kb  # noqa: E402

MIB = 1 << 20
CONFIG = """\
[server]
listen = "127.0.0.1:0"
max_request_body = "80MiB"
memfd_threshold = "{threshold}"
memfd_result_threshold = "{result_threshold}"
journal = ""

[pool.echo]
handler = "bench_handlers:echo"
python = "/usr/bin/python3"
python_path = ["{handlers}"]
workers = 1
max_payload = "80MiB"
job_timeout = "60s"

[pool.view]
handler = "bench_handlers:echo_view"
python = "/usr/bin/python3"
python_path = ["{handlers}"]
workers = 1
max_payload = "80MiB"
job_timeout = "60s"
"""


class BulkheadRow:
    def __init__(self, mode, client, pool, name):
        self.mode, self.client, self.pool, self.name = mode, client, pool, name
        self.peer = False

    def call(self, payload):
        return self.client.call(self.pool, payload, timeout=120)


class AsyncRow(BulkheadRow):
    """bulkhead.AsyncClient on an event loop of its own, one call at a time."""

    def __init__(self, mode, url, pool, name):
        import asyncio
        import bulkhead.aio
        self.loop = asyncio.new_event_loop()
        client = bulkhead.aio.AsyncClient(url, max_response_body=100 * MIB)
        super().__init__(mode, client, pool, name)

    def call(self, payload):
        return self.loop.run_until_complete(self.client.call(self.pool, payload, timeout=120))

    def close(self):
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


class PeerRow:
    def __init__(self, name, executor):
        self.name, self.executor, self.peer = name, executor, True

    def call(self, payload):
        return self.executor.submit(bh.echo, payload).result(timeout=120)


def start_daemon(binary, tmpdir, label, threshold, result_threshold="16MiB"):
    d = benchlib.Daemon(binary, os.path.join(tmpdir, label + ".toml"),
                        CONFIG.format(threshold=threshold, result_threshold=result_threshold,
                                      handlers=os.path.join(HERE, "handlers")),
                        label="bench: daemon " + label, keep_alive=False)
    d.spawn(os.path.join(tmpdir, label + ".log"))
    d.wait_healthy()
    if d.wait_ready(60) is None:
        sys.exit("bench: the %s daemon's pools did not get ready:\n%s" % (label, d.log()))
    return d


def peers():
    rows = [PeerRow("ProcessPoolExecutor (fork)", concurrent.futures.ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("fork")))]
    pool = multiprocessing.get_context("fork").Pool(1)

    class PoolAsExecutor:
        def submit(self, fn, arg):
            return pool.apply_async(fn, (arg,))
    rows.append(PeerRow("multiprocessing.Pool", PoolAsExecutor()))
    rows[-1].call = lambda payload: pool.apply_async(bh.echo, (payload,)).get(120)
    rows[-1].close = pool.terminate
    try:
        from joblib.externals import loky
        rows.append(PeerRow("loky", loky.get_reusable_executor(max_workers=1, reuse=False)))
    except ImportError:
        log("loky (joblib) not installed: no loky row")
    return rows


def alternating_ab(daemons, modes, pool, sizes_mib, title, columns):
    """Two daemons' ``pool`` echo, alternating call by call (200 calls per size under 8 MiB, 40
    from 8 MiB), medians; one table, printed."""
    import bulkhead
    pair = [(m, bulkhead.Client(daemons[m].url, max_response_body=100 * MIB)) for m in modes]
    print("\n## %s, A/B\n" % title)
    print("| size | %s ms | %s ms | change |" % columns)
    print("|---|---:|---:|---:|")
    for size in sizes_mib:
        payload = os.urandom(int(size * MIB))
        times = {m: [] for m, _ in pair}
        for _, client in pair:
            assert client.call(pool, payload, timeout=120) == payload
        for i in range(200 if size < 8 else 40):
            for mode, client in (pair if i % 2 else pair[::-1]):
                t = time.perf_counter()
                out = client.call(pool, payload, timeout=120)
                times[mode].append((time.perf_counter() - t) * 1e3)
                assert out == payload
                out = None
        a, b = (statistics.median(times[m]) for m, _ in pair)
        print("| %g MiB | %.2f | %.2f | %+.0f%% |" % (size, a, b, (a / b - 1) * 100))
        log("A/B %s %g MiB done" % (pool, size))


def results_ab(daemons, sizes_mib):
    """The result-path A/B table (see the top of the file), printed."""
    alternating_ab(daemons, ("memfd", "memfd, results too"), "echo", sizes_mib,
                   "Bytes results through the socket (under 16 MiB) or a memfd",
                   ("results by socket under 16 MiB (default)", "results by memfd"))


def payloads_ab(daemons, sizes_mib):
    """The payload-path A/B tables (--payloads-ab): inline against memfd, for a bytes handler
    and a memoryview handler; results come back through the socket in both (under 16 MiB)."""
    for pool, kind in (("echo", "bytes"), ("view", "memoryview")):
        alternating_ab(daemons, ("memfd", "inline"), pool, sizes_mib,
                       "Payloads the default way or inline, %s handler" % kind,
                       ("default (memfd; a bytes handler's inline under 16 MiB)",
                        "memfd_threshold = 0 (inline)"))


def binaries_ab(daemons, sizes_mib):
    """--binaries-ab: the two binaries' default daemons, both handlers."""
    for pool, kind in (("echo", "bytes"), ("view", "memoryview")):
        alternating_ab(daemons, ("this", "baseline"), pool, sizes_mib,
                       "This binary against the baseline, %s handler" % kind,
                       ("this binary", "baseline binary"))


def ab_then_stop(daemons, sizes_mib, ab=results_ab):
    try:
        ab(daemons, sizes_mib)
    finally:
        for d in daemons.values():
            d.kill()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.environ.get("BULKHEAD_BIN",
                                                    os.path.join(ROOT, "build", "bulkhead")))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--results-ab", action="store_true")
    ap.add_argument("--payloads-ab", action="store_true")
    ap.add_argument("--binaries-ab", metavar="OLD_BIN")
    args = ap.parse_args()
    sizes = [1, 16] if args.quick else [1, 4, 16, 64]
    rounds = 3 if args.quick else args.rounds
    load_start = loadavg()
    log("machine: %s; load average %s" % (machine_line(), load_start))
    tmpdir = tempfile.mkdtemp(prefix="bulkhead-large-")
    if args.binaries_ab:
        log("this: %s; baseline: %s" % (args.bin, args.binaries_ab))
        daemons = {"this": start_daemon(args.bin, tmpdir, "this", "256KiB"),
                   "baseline": start_daemon(args.binaries_ab, tmpdir, "baseline", "256KiB")}
        return ab_then_stop(daemons, [1, 4] if args.quick else [0.5, 2, 8, 16, 64], binaries_ab)
    daemons = {"inline": start_daemon(args.bin, tmpdir, "inline", "0"),
               "memfd": start_daemon(args.bin, tmpdir, "memfd", "256KiB"),
               "memfd, results too": start_daemon(args.bin, tmpdir, "memfd-results", "256KiB",
                                                  "256KiB")}
    ab_sizes = [1, 4] if args.quick else [0.5, 1, 2, 4, 8, 16]
    if args.results_ab:
        return ab_then_stop(daemons, ab_sizes)
    if args.payloads_ab:
        return ab_then_stop(daemons, ab_sizes, payloads_ab)
    import bulkhead
    rows = []
    for mode, d in daemons.items():
        client = bulkhead.Client(d.url, max_response_body=100 * MIB)
        rows.append(BulkheadRow(mode, client, "echo", "bulkhead %s, bytes handler" % mode))
        rows.append(BulkheadRow(mode, client, "view", "bulkhead %s, memoryview handler" % mode))
    rows.append(AsyncRow("memfd", daemons["memfd"].url, "view",
                         "bulkhead memfd, memoryview handler, asyncio client"))
    rows += peers()
    times = {(r.name, s): [] for r in rows for s in sizes}
    calls = {mode: 0 for mode in daemons}
    cpu0 = {mode: cpu_seconds(d.pid) for mode, d in daemons.items()}
    try:
        for size in sizes:
            payload = os.urandom(size * MIB)
            for r in rows:  # warm: each worker has seen a payload of this size once
                assert r.call(payload) == payload, r.name
            for rnd in range(rounds):
                for i in range(len(rows)):
                    r = rows[(i + rnd) % len(rows)]
                    t = time.perf_counter()
                    out = r.call(payload)
                    times[(r.name, size)].append((time.perf_counter() - t) * 1e3)
                    assert out == payload, r.name
                    out = None
                    if not r.peer:
                        calls[r.mode] += 1
            log("%d MiB done" % size)
        cpu = {m: (cpu_seconds(d.pid) - cpu0[m]) / max(calls[m], 1) * 1e3
               for m, d in daemons.items()}
        hwm = {m: proc_status_kb(d.pid, "VmHWM") / 1024.0 for m, d in daemons.items()}
    except BaseException:
        for d in daemons.values():
            d.kill()
        raise
    finally:   # the daemons stay for the A/B below
        for r in rows:
            if r.peer:
                getattr(r, "close", lambda: r.executor.shutdown())()
            elif isinstance(r, AsyncRow):
                r.close()
    print("## Large payload round trips, memfd vs inline, beside the peers\n")
    print("Machine: %s. Load average at start %s, at end %s. %d rounds, medians, ms; the "
          "ratio is to the fastest peer of that size.\n" % (machine_line(), load_start, loadavg(),
                                                           rounds))
    print("| system | " + " | ".join("%d MiB" % s for s in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    best = {s: min(statistics.median(times[(r.name, s)]) for r in rows if r.peer) for s in sizes}
    for r in rows:
        cells = []
        for s in sizes:
            m = statistics.median(times[(r.name, s)])
            cells.append("%.1f (%.2fx)" % (m, m / best[s]))
        print("| %s | %s |" % (r.name, " | ".join(cells)))
    print("\nDaemon CPU per call (all sizes together): %s. Daemon peak RSS (VmHWM) at the end: "
          "%s." % (", ".join("%s %.1f ms" % (m, cpu[m]) for m in daemons),
                   ", ".join("%s %.1f MB" % (m, hwm[m]) for m in daemons)))
    return ab_then_stop(daemons, ab_sizes)


if __name__ == "__main__":
    sys.exit(main())
