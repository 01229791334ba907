"""Graceful shutdown: in-flight jobs still get their one outcome, exit 0, no process left."""

import signal
import subprocess
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


def test_shutdown_waits_for_in_flight_job_to_time_out(start_daemon):
    """A job that never finishes in a worker that ignores SIGTERM: shutdown lets it run to its
    deadline, then it ends timed_out (SIGKILL after the grace) and the daemon exits 0."""
    d = start_daemon({"spin": {"handler": "native_spin_holding_gil", "workers": 1,
                               "preload": "install_sigterm_handler", "job_timeout": "2s"}})
    [w] = d.wait_ready("spin")
    t, box = _submit_in_thread(d, "spin", b"x")
    wait_until(lambda: d.pool_status("spin")["in_flight"] == 1, 10, "the job to be running")
    took = _stop_and_check(d, signal.SIGTERM, [w["pid"]])
    assert took < 15, "shutdown took %.1fs with a 2s job_timeout" % took
    t.join(10)
    assert not t.is_alive(), "the caller was left waiting after the daemon exited"
    assert "error" not in box, "the in-flight job got no answer: %r" % box.get("error")
    r = box["resp"]
    assert (r.status, r.outcome) == (504, "timed_out"), r
    assert "native_spin_holding_gil" in r.json["attempts"][0]["stacks"]


def test_shutdown_timeout_bounds_a_stuck_job(start_daemon):
    """server.shutdown_timeout caps the drain: a job with a far deadline is given up, its
    SIGTERM-ignoring native-spinning worker is killed, the daemon exits 0."""
    d = start_daemon({"spin": {"handler": "native_spin_holding_gil", "workers": 1,
                               "preload": "install_sigterm_handler", "job_timeout": "60s"}},
                     server={"listen": "127.0.0.1:0", "shutdown_timeout": "1s"})
    [w] = d.wait_ready("spin")
    t, box = _submit_in_thread(d, "spin", b"x")
    wait_until(lambda: d.pool_status("spin")["in_flight"] == 1, 10, "the job to be running")
    took = _stop_and_check(d, signal.SIGTERM, [w["pid"]])
    assert took < 10, "shutdown took %.1fs with shutdown_timeout 1s" % took
    t.join(10)
    assert not t.is_alive(), "the caller was left waiting after the daemon exited"
    # One answer (never a 200 for a job that never finished) or a closed connection.
    if "resp" in box:
        r = box["resp"]
        assert r.status != 200, r
        assert r.outcome in ("cancelled", "unavailable"), r
        assert r.json["attempts"][-1]["signal"] == "SIGKILL", r


def test_stdin_lifeline_drains_and_exits_when_the_owner_closes_it(_daemons, tmp_path):
    """--stop-when-stdin-closes: the owner's end of the pipe closing (its exit, even SIGKILL)
    stops the daemon as SIGTERM would: the job in flight still gets its outcome, nothing left."""
    from conftest import Daemon
    d = Daemon(str(tmp_path), {"slow": {"handler": "slow", "workers": 1}},
               args=["--stop-when-stdin-closes"])
    d.stdin = subprocess.PIPE
    _daemons.append(d)
    d.start()
    d.wait_ready("slow")
    pids = d.idle_pids("slow")
    t, box = _submit_in_thread(d, "slow", b"sleep:1")
    wait_until(lambda: d.pool_status("slow")["in_flight"] == 1, 10, "the job to be running")
    d.proc.stdin.write(b"bytes written to the lifeline are ignored\n")
    d.proc.stdin.flush()
    assert d.proc.poll() is None
    d.proc.stdin.close()
    rc = d.proc.wait(25)
    assert rc == 0, d.log()[-3000:]
    assert "stdin closed: finishing jobs" in d.log()
    t.join(10)
    assert box.get("resp") is not None and box["resp"].outcome == "ok", box
    wait_until(lambda: not any(pid_alive(p) for p in pids), 5, "workers %s to be gone" % pids)
    assert not d.survivors(), d.survivors()
