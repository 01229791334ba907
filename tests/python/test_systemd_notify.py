"""Type=notify without systemd: the test is the service manager. It binds the datagram socket
systemd would (NOTIFY_SOCKET), gives the daemon a watchdog (WATCHDOG_USEC), and checks that
READY=1 comes only once the pool has a READY worker, that STATUS= describes the pools, that
WATCHDOG=1 keeps coming from the event loop, and that STOPPING=1 comes when it drains."""

import os
import select
import socket
import tempfile

import pytest

from conftest import wait_until

HANDLERS = os.path.dirname(os.path.abspath(__file__))


class Manager:
    """A service manager's notification socket: records every datagram received."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bkn-", dir="/tmp")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def drain(self):
        while select.select([self.sock], [], [], 0)[0]:
            self.messages.append(self.sock.recv(65536).decode())
        return self.messages

    def assignments(self, key):
        """Every value sent for KEY, in order."""
        out = []
        for message in self.drain():
            for line in message.split("\n"):
                if line.startswith(key + "="):
                    out.append(line[len(key) + 1:])
        return out

    def close(self):
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


@pytest.fixture
def manager(monkeypatch):
    m = Manager()
    monkeypatch.setenv("NOTIFY_SOCKET", m.path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # WatchdogSec=0.4: pings every 0.2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield m
    m.close()


def test_ready_only_once_a_worker_is_ready_then_watchdog_and_stopping(start_daemon, manager):
    d = start_daemon({"gated": {"handler": "service_handlers:echo",
                                "preload": "service_handlers:wait_for_gate",
                                "python_path": [HANDLERS]}})
    # Listening, but the worker's preload waits on the gate: not ready, and the daemon says why.
    wait_until(lambda: len(manager.assignments("WATCHDOG")) >= 3, 30,
               "three WATCHDOG=1 pings while the pool starts")
    assert manager.assignments("READY") == [], manager.messages
    assert any("starting: gated" in s for s in manager.assignments("STATUS")), manager.messages
    assert d.pool_status("gated")["ready_workers"] == 0

    open(os.path.join(d.scratch, "gate"), "w").close()
    wait_until(lambda: manager.assignments("READY"), 30, "READY=1 once the worker is ready")
    assert manager.assignments("READY") == ["1"]
    assert d.pool_status("gated")["ready_workers"] == 1
    wait_until(lambda: any(s.startswith("1 pool, 1/1 workers ready")
                           for s in manager.assignments("STATUS")), 10, "STATUS with 1/1 ready")
    assert d.job("gated", b"hello").body == b"hello"
    pings = len(manager.assignments("WATCHDOG"))
    wait_until(lambda: len(manager.assignments("WATCHDOG")) >= pings + 2, 30,
               "WATCHDOG=1 to keep coming once ready")

    assert d.stop() == 0
    assert manager.assignments("STOPPING") == ["1"], manager.messages
    assert manager.assignments("READY") == ["1"]  # said once


def test_a_pool_that_cannot_start_does_not_hold_ready_back_forever(start_daemon, manager):
    d = start_daemon({"broken": {"handler": "echo", "preload": "raise_on_preload",
                                 "startup_timeout": "1s"}})
    wait_until(lambda: manager.assignments("READY"), 30,
               "READY=1 after the broken pool's startup_timeout")
    assert d.pool_status("broken")["ready_workers"] == 0
    assert any("0/1 workers ready" in s for s in manager.assignments("STATUS"))


def test_without_notify_socket_nothing_is_sent_and_the_daemon_serves(start_daemon, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    d = start_daemon({"echo": {"handler": "echo"}})
    d.wait_ready("echo")
    d.assert_serving()
    assert "service notification failed" not in d.log()
