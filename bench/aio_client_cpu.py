#!/usr/bin/python3
"""The asyncio client's own CPU per call, with no socket, daemon or worker in the way.

    /usr/bin/python3 bench/aio_client_cpu.py            # 5 rounds of 50,000 calls each

This file owns one measurement.  bench/client_overhead.py times calls against a real daemon,
where the VM's scheduling noise (tens of us between runs) is larger than what the client itself
costs.  Here both systems talk to a fake transport that answers each request on the next turn of
the event loop, through the same protocol calls a socket transport makes:

- ``AsyncClient.call`` on one ``_aio_connection.Connection`` (``get_buffer`` /
  ``buffer_updated``, the ``bulkhead._h1`` parser, the client's slots and retry plan); the idle
  check's ``poll`` syscall is left out, as nothing is a socket here;
- a raw ``asyncio.Protocol``: one future per call, the request bytes written, the answer found
  by ``Content-Length`` in ``data_received`` (bench/client_overhead.py's raw asyncio client).

Both answer with the daemon's real head for an echo job (11 headers).  The table gives the
median over interleaved rounds of this process's CPU time per call; "AsyncClient - raw" is what
the client adds on top of the event loop turn every asyncio caller pays.
"""

import argparse
import asyncio
import os
import sys
import time

import benchlib
from benchlib import ROOT, git_desc, loadavg, machine_line
from client_overhead import _RawAnswers as RawAnswers   # the same raw client as there

sys.path.insert(0, os.path.join(ROOT, "python"))
import bulkhead  # noqa: E402
from bulkhead import _aio_connection  # noqa: E402

PAYLOAD = bytes(64)
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
          b"X-Bulkhead-Outcome: ok\r\nX-Bulkhead-Pool: echo\r\nX-Bulkhead-Job: 1\r\n"
          b"X-Bulkhead-Attempts: 1\r\nX-Bulkhead-Worker: echo-1\r\nX-Bulkhead-Queue-Ms: 0.000\r\n"
          b"X-Bulkhead-Run-Ms: 0.212\r\nX-Bulkhead-Total-Ms: 0.212\r\nContent-Length: 64\r\n\r\n"
          + PAYLOAD)


class AnsweringTransport(object):
    """Answers every write on the next loop turn, as a BufferedProtocol's socket would."""

    def __init__(self, protocol, loop):
        self.protocol = protocol
        self.loop = loop

    def is_closing(self):
        return False

    def write(self, data):
        self.loop.call_soon(self.answer)

    def answer(self):
        buf = self.protocol.get_buffer(-1)
        buf[:len(ANSWER)] = ANSWER
        self.protocol.buffer_updated(len(ANSWER))

    def get_extra_info(self, name):
        return None

    def close(self):
        pass

    abort = close


class RawTransport(AnsweringTransport):
    def answer(self):
        self.protocol.data_received(ANSWER)


async def client_cpu(calls):
    loop = asyncio.get_running_loop()
    client = bulkhead.AsyncClient("http://127.0.0.1:1")
    conn = _aio_connection.Connection(0, None)
    conn.connection_made(AnsweringTransport(conn, loop))
    conn.dropped = lambda: False        # the poll(0) of a real idle socket: no socket here
    client._bind_loop()
    client._idle.append(conn)
    t0 = time.process_time()
    for _ in range(calls):
        if await client.call("echo", PAYLOAD) != PAYLOAD:
            raise SystemExit("AsyncClient answered wrongly")
    return (time.process_time() - t0) / calls


async def raw_cpu(calls):
    loop = asyncio.get_running_loop()
    protocol = RawAnswers()
    transport = RawTransport(protocol, loop)
    head = b"POST /v1/pools/echo/jobs HTTP/1.1\r\nHost: 127.0.0.1:1\r\nContent-Length: "
    t0 = time.process_time()
    for _ in range(calls):
        protocol.waiter = loop.create_future()
        transport.write(head + str(len(PAYLOAD)).encode() + b"\r\n\r\n" + PAYLOAD)
        if await protocol.waiter != PAYLOAD:
            raise SystemExit("raw answered wrongly")
    return (time.process_time() - t0) / calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=50000)
    args = ap.parse_args()
    benchlib.set_log_tag("aio-cpu")
    load_start = loadavg()
    results = {"AsyncClient": [], "raw asyncio": []}
    for _ in range(args.rounds):
        results["AsyncClient"].append(asyncio.run(client_cpu(args.calls)) * 1e6)
        results["raw asyncio"].append(asyncio.run(raw_cpu(args.calls)) * 1e6)
    med = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    print("asyncio client CPU per call, no sockets; median of %d interleaved rounds of %d calls"
          % (args.rounds, args.calls))
    print("tree %s; %s; load average %s at start, %s at end"
          % (git_desc(), machine_line(), load_start, loadavg()))
    print("")
    print("| system | CPU per call (us) | rounds (us) |")
    print("|---|---:|---|")
    for name, values in results.items():
        print("| %s | %.1f | %s |" % (name, med[name], ", ".join("%.1f" % v for v in values)))
    print("| AsyncClient - raw asyncio | %+.1f | |" % (med["AsyncClient"] - med["raw asyncio"]))


if __name__ == "__main__":
    main()
