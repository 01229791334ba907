"""Graceful shutdown: in-flight jobs still get their one outcome, exit 0, no process left."""

import signal
import threading
import time

import pytest

from conftest import pid_alive, wait_until


def _submit_in_thread(d, pool, payload):
    box = {}

    def run():
        try:
            box["resp"] = d.job(pool, payload, timeout=40)
        except Exception as exc:  # noqa: BLE001 - a closed connection is examined by the test
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def _stop_and_check(d, sig, pids, deadline=25):
    t0 = time.monotonic()
    d.proc.send_signal(sig)
    rc = d.proc.wait(deadline)
    took = time.monotonic() - t0
    assert rc == 0, "daemon exit status %r; log:\n%s" % (rc, d.log()[-3000:])
    wait_until(lambda: not any(pid_alive(p) for p in pids), 5, "workers %s to be gone" % pids)
    assert not d.survivors(), d.survivors()
    return took


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_with_job_in_flight_completes_it(start_daemon, sig):
    d = start_daemon({"slow": {"handler": "slow", "workers": 2}})
    d.wait_ready("slow")
    pids = d.idle_pids("slow")
    t, box = _submit_in_thread(d, "slow", b"sleep:1.5")
    wait_until(lambda: d.pool_status("slow")["in_flight"] == 1, 10, "the job to be running")
    _stop_and_check(d, sig, pids)
    t.join(10)
    assert not t.is_alive()
    assert "error" not in box, "the in-flight job got no answer: %r" % box.get("error")
    r = box["resp"]
    assert (r.status, r.outcome) in ((200, "ok"), (504, "timed_out")), r
    if r.status == 200:
        assert r.body == b"slept"


def test_shutdown_of_idle_workers_that_ignore_sigterm(start_daemon):
    d = start_daemon({"stubborn": {"handler": "echo", "workers": 2,
                                   "preload": "install_sigterm_handler"}})
    d.wait_ready("stubborn")
    pids = d.idle_pids("stubborn")
    took = _stop_and_check(d, signal.SIGTERM, pids)
    assert took < 20


def test_shutdown_with_a_native_spinning_job_in_flight(start_daemon):
    d = start_daemon({"spin": {"handler": "native_spin_holding_gil", "workers": 1,
                               "preload": "install_sigterm_handler", "job_timeout": "60s"}})
    [w] = d.wait_ready("spin")
    t, box = _submit_in_thread(d, "spin", b"x")
    wait_until(lambda: d.pool_status("spin")["in_flight"] == 1, 10, "the job to be running")
    _stop_and_check(d, signal.SIGTERM, [w["pid"]])
    t.join(10)
    assert not t.is_alive(), "the caller was left waiting after the daemon exited"
    # Exactly one answer or a closed connection; never a 200 for a job that never finished.
    if "resp" in box:
        assert box["resp"].status != 200, box["resp"]
        assert box["resp"].outcome, box["resp"]
