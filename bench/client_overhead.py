#!/usr/bin/python3
"""What the Python clients cost over a raw keep-alive socket, in ONE run.

    /usr/bin/python3 bench/client_overhead.py                    # this tree's client
    /usr/bin/python3 bench/client_overhead.py --baseline main    # ... and main's, side by side
    /usr/bin/python3 bench/client_overhead.py --quick            # fewer rounds and calls

This file owns the client-overhead measurement: two daemons (`build/bulkhead serve`, or
$BULKHEAD_BIN / --bin), one listening on 127.0.0.1 TCP and one on a Unix socket, each with a
1-worker echo pool (bench/handlers/bench_handlers.py:echo).  Sequential 64-byte echo calls from:

- ``bulkhead.Client`` over TCP and over ``unix:`` (this tree's python/bulkhead);
- with ``--baseline REF``: the clients of git revision REF too (its python/bulkhead is extracted
  with ``git archive`` and imported under another name, so both run in the same process and the
  same rounds);
- ``bulkhead.AsyncClient`` over TCP and ``unix:``, and a raw asyncio client (an
  ``asyncio.Protocol`` on one keep-alive connection, the same request bytes, the answer found by
  Content-Length): each system's calls run as awaits inside one event loop, timed there, so
  "AsyncClient - raw asyncio" is the asyncio client's cost, the loop's own wake-ups left out;
- a raw keep-alive socket client over TCP and Unix: the request written with one sendall, the
  answer found by Content-Length, nothing else (the same code as bench/e2e_peers.py's
  ``RawSocketSys``, which only speaks TCP; copied so this file runs on its own).  What is left in
  its time is the daemon, the worker and the kernel, so "Client - raw" is the client's cost.

The machine is noisy (2 shared cores): every system runs ``--calls`` calls in each of ``--rounds``
interleaved rounds (the order rotates per round), and the table reports the MEDIAN over rounds of
each round's p50 and p99, and of this process's CPU time per call (the client's own cost, the
least noisy number), plus the load average before and after.  ``--timeout S`` gives the Client
rows a deadline per call (the raw rows then send the same deadline headers).
"""

import argparse
import asyncio
import importlib.util
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

import benchlib
from benchlib import HANDLERS, PYTHON, ROOT, fmt, git_desc, loadavg, log, machine_line

benchlib.set_log_tag("overhead")
PAYLOAD = bytes(range(64))
POOL = "echo"
READY_S = 60

CONFIG = """\
[server]
listen = "{listen}"

[pool.{pool}]
handler = "bench_handlers:echo"
python = "{python}"
python_path = [{handlers}]
workers = 1
queue_limit = 1000
job_timeout = "60s"
"""


def start_daemon(binary, tmpdir, name, listen):
    """A daemon listening on ``listen`` ("127.0.0.1:0" or "unix:PATH"); returns (daemon, url)
    once its echo worker is idle."""
    d = benchlib.Daemon(binary, os.path.join(tmpdir, name + ".toml"),
                        CONFIG.format(listen=listen, pool=POOL, python=PYTHON,
                                      handlers=json.dumps(HANDLERS)),
                        label="overhead: daemon " + name, error=SystemExit)
    d.spawn(os.path.join(tmpdir, name + ".log"))
    deadline = time.monotonic() + READY_S
    url = None
    while url is None and time.monotonic() < deadline:
        if d.proc.poll() is not None:
            sys.exit("overhead: daemon %s exited:\n%s" % (name, d.log()))
        for line in d.log().splitlines():
            if "listening on " in line:
                url = line.split("listening on ", 1)[1].split()[0]
        time.sleep(0.02)
    if url is None:
        d.kill()
        sys.exit("overhead: daemon %s is not listening:\n%s" % (name, d.log()))
    # Readiness through the client itself: benchlib's control connection is TCP only.
    import bulkhead
    with bulkhead.Client(url) as c:
        while time.monotonic() < deadline:
            pools = {p["name"]: p for p in c.pools()["pools"]}
            if any(w["state"] == "idle" for w in pools[POOL]["workers"]):
                return d, url
            time.sleep(0.05)
    d.kill()
    sys.exit("overhead: daemon %s: no idle worker within %d s" % (name, READY_S))


def load_baseline(ref, tmpdir):
    """The ``bulkhead`` package of git revision ``ref``, imported as ``bulkhead_base``."""
    data = subprocess.run(["git", "-C", ROOT, "archive", ref, "python/bulkhead"],
                          stdout=subprocess.PIPE, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(os.path.join(tmpdir, "base"))
    where = os.path.join(tmpdir, "base", "python", "bulkhead")
    spec = importlib.util.spec_from_file_location(
        "bulkhead_base", os.path.join(where, "__init__.py"), submodule_search_locations=[where])
    module = importlib.util.module_from_spec(spec)
    sys.modules["bulkhead_base"] = module
    spec.loader.exec_module(module)
    return module


class ClientSys:
    def __init__(self, package, label, url, timeout=None):
        self.name = label
        self.client = package.Client(url, timeout=timeout)

    def call(self, payload):
        return self.client.call(POOL, payload)

    def close(self):
        self.client.close()


class RawSys:
    """bench/e2e_peers.py's RawSocketSys, over TCP or a Unix socket."""

    def __init__(self, label, url, timeout=None):
        self.name = label
        if url.startswith("unix:"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(url[len("unix:"):])
        else:
            host, port = url[len("http://"):].rsplit(":", 1)
            sock = socket.create_connection((host, int(port)))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # with --timeout, the deadline headers the Client sends: the daemon's work per job
        # (a deadline timer) is then the same for both, and the difference stays the client's
        extra = ("X-Bulkhead-Timeout: %dms\r\nX-Bulkhead-Deadline: %dms\r\n"
                 % (timeout * 1000, timeout * 1000)) if timeout else ""
        self.conn = benchlib.RawJobConnection(sock, POOL, extra)
        self.call = self.conn.call
        self.close = self.conn.close


class AsyncClientSys:
    """``bulkhead.AsyncClient`` in this process's event loop (``LOOP``)."""

    is_async = True

    def __init__(self, package, label, url, timeout=None):
        self.name = label
        self.client = package.AsyncClient(url, timeout=timeout)

    async def call(self, payload):
        return await self.client.call(POOL, payload)

    def close(self):
        LOOP.run_until_complete(self.client.close())


class _RawAnswers(asyncio.Protocol):
    """The raw asyncio client's connection: bytes in, one answer body per request out."""

    def __init__(self):
        self.buf = b""
        self.waiter = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        i = buf.find(b"Content-Length:", 0, end)
        if i < 0:
            i = buf.lower().find(b"content-length:", 0, end)
        body_end = end + 4 + int(buf[i + 15:buf.find(b"\r\n", i)])
        if len(buf) < body_end:
            return
        if not buf.startswith(b"HTTP/1.1 200"):
            self.waiter.set_exception(RuntimeError(buf[:200]))
        else:
            self.waiter.set_result(buf[end + 4:body_end])
        self.buf = buf[body_end:]
        self.waiter = None

    def connection_lost(self, exc):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))


class AsyncRawSys:
    """A raw asyncio client: RawJobConnection's request bytes through an asyncio.Protocol."""

    is_async = True

    def __init__(self, label, url, timeout=None):
        self.name = label
        if url.startswith("unix:"):
            connect = LOOP.create_unix_connection(_RawAnswers, url[len("unix:"):])
        else:
            host, port = url[len("http://"):].rsplit(":", 1)
            connect = LOOP.create_connection(_RawAnswers, host, int(port))
        transport, self.proto = LOOP.run_until_complete(connect)
        sock = transport.get_extra_info("socket")
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        extra = ("X-Bulkhead-Timeout: %dms\r\nX-Bulkhead-Deadline: %dms\r\n"
                 % (timeout * 1000, timeout * 1000)) if timeout else ""
        self.head = benchlib.RawJobConnection(None, POOL, extra).head

    async def call(self, payload):
        proto = self.proto
        proto.waiter = LOOP.create_future()
        proto.transport.write(self.head + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        return await proto.waiter

    def close(self):
        self.proto.transport.close()


LOOP = asyncio.new_event_loop()


def measure(system, calls):
    if getattr(system, "is_async", False):
        return LOOP.run_until_complete(measure_async(system, calls))
    return measure_blocking(system, calls)


async def measure_async(system, calls):
    """measure() for an asyncio system: the calls are awaited one after another in one loop."""
    clock = time.perf_counter
    call = system.call
    samples = []
    cpu0 = time.process_time()
    for _ in range(calls):
        t0 = clock()
        out = await call(PAYLOAD)
        samples.append(clock() - t0)
        if out != PAYLOAD:
            raise SystemExit("overhead: %s answered %r" % (system.name, out[:80]))
    return samples, (time.process_time() - cpu0) / calls


def measure_blocking(system, calls):
    """Per-call seconds of ``calls`` sequential echo calls (each answer checked), and this
    process's CPU seconds per call over them (the client's own cost, user and kernel: much less
    noisy than the latency, which waits for the daemon and the worker)."""
    clock = time.perf_counter
    call = system.call
    samples = []
    cpu0 = time.process_time()
    for _ in range(calls):
        t0 = clock()
        out = call(PAYLOAD)
        samples.append(clock() - t0)
        if out != PAYLOAD:
            raise SystemExit("overhead: %s answered %r" % (system.name, out[:80]))
    return samples, (time.process_time() - cpu0) / calls


def median(values):
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=3000, help="calls per system per round")
    ap.add_argument("--quick", action="store_true", help="5 rounds of 1000 calls")
    ap.add_argument("--baseline", metavar="REF", help="also measure the client of git REF")
    ap.add_argument("--bin", default=os.environ.get("BULKHEAD_BIN", benchlib.BIN))
    ap.add_argument("--timeout", type=float, help="Client(timeout=...) for the Client rows "
                    "(a deadline per call: the socket waits with a timeout)")
    ap.add_argument("--no-async", action="store_true",
                    help="leave out the AsyncClient and raw asyncio rows")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.calls = 5, 1000
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import bulkhead

    tmpdir = tempfile.mkdtemp(prefix="bulkhead-overhead-")
    load_start = loadavg()
    log("machine: %s; load %s; binary %s" % (machine_line(), load_start, args.bin))
    systems = []
    try:
        _, tcp = start_daemon(args.bin, tmpdir, "tcp", "127.0.0.1:0")
        _, unix = start_daemon(args.bin, tmpdir, "unix",
                               "unix:" + os.path.join(tmpdir, "bulkhead.sock"))
        packages = [("Client", bulkhead)]
        if args.baseline:
            packages.insert(0, ("Client@" + args.baseline, load_baseline(args.baseline, tmpdir)))
        for transport, url in (("tcp", tcp), ("unix", unix)):
            for label, package in packages:
                systems.append(ClientSys(package, "%s %s" % (label, transport), url,
                                         args.timeout))
            systems.append(RawSys("raw %s" % transport, url, args.timeout))
            if not args.no_async:
                for label, package in packages:
                    systems.append(AsyncClientSys(package, "Async%s %s" % (label, transport),
                                                  url, args.timeout))
                systems.append(AsyncRawSys("raw asyncio %s" % transport, url, args.timeout))
        results = {s.name: ([], [], []) for s in systems}   # p50s, p99s, CPU per call
        for s in systems:                       # warm up: connections, caches, the worker
            measure(s, 300)
        for r in range(args.rounds):
            k = r % len(systems)
            for s in systems[k:] + systems[:k]:
                samples, cpu = measure(s, args.calls)
                samples.sort()
                results[s.name][0].append(samples[len(samples) // 2] * 1e3)
                results[s.name][1].append(samples[min(len(samples) - 1,
                                                      int(len(samples) * 0.99))] * 1e3)
                results[s.name][2].append(cpu * 1e6)
            log("round %d/%d done (load %s)" % (r + 1, args.rounds, loadavg()))
        for s in systems:
            s.close()
    finally:
        benchlib.kill_daemons()
        shutil.rmtree(tmpdir, ignore_errors=True)

    lines = ["Client overhead, 64-byte echo, sequential calls, 1 worker; median over %d "
             "interleaved rounds of %d calls each (ms)%s" % (
                 args.rounds, args.calls,
                 "; Client(timeout=%g)" % args.timeout if args.timeout else ""),
             "tree %s; %s" % (git_desc(), machine_line()),
             "load average: %s at start, %s at end" % (load_start, loadavg()), "",
             "| system | p50 | p99 | p50 - raw (us) | p99 - raw (us) | client CPU/call (us) |",
             "|---|---:|---:|---:|---:|---:|"]
    for s in systems:
        p50, p99 = median(results[s.name][0]), median(results[s.name][1])
        raw = ("raw asyncio " if getattr(s, "is_async", False) else "raw ") + \
            s.name.rsplit(" ", 1)[1]
        r50, r99 = median(results[raw][0]), median(results[raw][1])
        d50 = "" if s.name == raw else "%+.0f" % ((p50 - r50) * 1e3)
        d99 = "" if s.name == raw else "%+.0f" % ((p99 - r99) * 1e3)
        lines.append("| %s | %s | %s | %s | %s | %.1f |" % (
            s.name, fmt(p50, 3), fmt(p99, 3), d50, d99, median(results[s.name][2])))
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
