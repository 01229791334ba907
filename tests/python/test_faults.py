"""One test per real worker fault (abort, segfault, hang, OOM, ...): the outcome, its evidence,
and that the supervisor keeps serving and replaces the worker."""

import os
import time

import pytest

from proc_helpers import group_members, pid_alive, proc_state, wait_until

MiB = 1024 * 1024


def _problem(resp, status, outcome):
    assert resp.status == status, resp
    assert resp.headers.get("content-type", "").startswith("application/problem+json"), resp
    body = resp.json
    assert body["outcome"] == outcome, body
    assert resp.outcome == outcome, resp.headers
    assert body["status"] == status, body
    assert body["attempts"], body
    return body


def _fault_daemon(start_daemon, handler, **keys):
    pools = {"echo": {"handler": "echo"}, "fault": dict(keys, handler=handler)}
    d = start_daemon(pools)
    [worker] = d.wait_ready("fault", 1)
    d.wait_ready("echo", 1)
    return d, int(worker["pid"])


def _after_fault(d, dead_pid):
    """The supervisor still answers, a normal job succeeds, the dead worker was replaced and its
    replacement serves the same pool (the payload ``ok`` skips the fault)."""
    d.assert_serving("echo")
    new = d.wait_replaced("fault", dead_pid)
    assert dead_pid not in new
    assert not pid_alive(dead_pid)
    r = d.job("fault", b"ok")
    assert r.status == 200, r
    assert r.body == b"ok pid=%d" % new[0], (r.body, new)
    return new


def test_echo_roundtrip(start_daemon):
    d, pid = _fault_daemon(start_daemon, "echo")
    r = d.job("fault", b"\x00\x01binary\xff")
    assert r.status == 200, r
    assert r.body == b"\x00\x01binary\xff"
    assert r.headers["x-bulkhead-outcome"] == "ok"
    # A healthy job does not cost the worker its life.
    wait_until(lambda: d.idle_pids("fault") == [pid], 5, "worker %d idle again" % pid)


def test_double_free_is_crashed_sigabrt_with_glibc_message(start_daemon):
    d, pid = _fault_daemon(start_daemon, "double_free")
    r = d.job("fault", b"x")
    body = _problem(r, 502, "crashed")
    assert body["pool"] == "fault"
    assert len(body["attempts"]) == 1
    a = body["attempts"][0]
    assert a["outcome"] == "crashed"
    assert a["pid"] == pid
    assert a["signal"] == "SIGABRT"
    assert a["signal_number"] == 6
    assert a.get("exit_code") is None
    assert a.get("core_dumped") is False
    assert "free(): double free detected in tcache 2" in a["stderr_tail"]
    assert "double_free" in a["stacks"], a["stacks"]
    assert "SIGABRT" in body["detail"]
    _after_fault(d, pid)


def test_segfault_is_crashed_sigsegv_with_stack(start_daemon):
    d, pid = _fault_daemon(start_daemon, "segfault")
    r = d.job("fault", b"x")
    body = _problem(r, 502, "crashed")
    a = body["attempts"][0]
    assert a["signal"] == "SIGSEGV"
    assert a["signal_number"] == 11
    assert a["pid"] == pid
    # stderr may be empty: the "Segmentation fault" text comes from shells. The stack comes from
    # faulthandler on the stacks fd.
    assert a["stacks"].strip(), a
    assert "segfault" in a["stacks"]
    _after_fault(d, pid)


def test_handler_exception_is_handler_error_and_never_retried(start_daemon):
    d, pid = _fault_daemon(start_daemon, "raise_value_error", retries=2)
    r = d.job("fault", b"payload-42")
    body = _problem(r, 422, "handler_error")
    assert len(body["attempts"]) == 1, body["attempts"]
    err = body["attempts"][-1]["error"]
    assert err["type"] == "ValueError"
    assert "bad input" in err["message"] and "payload-42" in err["message"]
    assert "raise_value_error" in err["traceback"]
    assert "Traceback" in err["traceback"]
    # The user's bug does not cost the worker: the same process serves the next job.
    r2 = d.job("fault", b"again")
    _problem(r2, 422, "handler_error")
    assert r2.json["attempts"][0]["pid"] == pid
    assert pid_alive(pid)
    d.assert_serving("echo")


def test_deadlock_with_sigterm_handler_times_out_and_group_is_killed(start_daemon):
    d, pid = _fault_daemon(start_daemon, "deadlock_with_sigterm_handler",
                           preload="install_sigterm_handler", job_timeout="1s", retries=2)
    t0 = time.monotonic()
    r = d.job("fault", b"x")
    elapsed = time.monotonic() - t0
    body = _problem(r, 504, "timed_out")
    assert len(body["attempts"]) == 1, "timed_out must not be retried: %r" % body["attempts"]
    a = body["attempts"][0]
    assert a["pid"] == pid
    assert "deadlock_with_sigterm_handler" in a["stacks"], a["stacks"]
    assert elapsed < 15, "timed_out took %.1fs with a 1s job_timeout" % elapsed
    wait_until(lambda: not group_members(pid), 10, "process group %d to be killed" % pid)
    _after_fault(d, pid)


def test_native_gil_holding_busy_loop_times_out_and_is_killed(start_daemon):
    d, pid = _fault_daemon(start_daemon, "native_spin_holding_gil",
                           preload="install_sigterm_handler", job_timeout="1s")
    t0 = time.monotonic()
    r = d.job("fault", b"x")
    elapsed = time.monotonic() - t0
    body = _problem(r, 504, "timed_out")
    a = body["attempts"][0]
    assert a["pid"] == pid
    # faulthandler's dump needs no GIL: the spinning thread's Python frame is there.
    assert "native_spin_holding_gil" in a["stacks"], a["stacks"]
    assert elapsed < 15, "timed_out took %.1fs with a 1s job_timeout" % elapsed
    wait_until(lambda: not group_members(pid), 10, "process group %d to be killed" % pid)
    _after_fault(d, pid)


def test_stderr_flood_then_crash_is_drained_and_bounded(start_daemon):
    d, pid = _fault_daemon(start_daemon, "stderr_flood_then_segfault")
    t0 = time.monotonic()
    r = d.job("fault", b"x")
    elapsed = time.monotonic() - t0
    body = _problem(r, 502, "crashed")
    a = body["attempts"][0]
    assert a["signal"] == "SIGSEGV"
    # Undrained, the worker would block forever in write() and never reach the crash.
    assert elapsed < 10, "50 MiB of stderr then a crash took %.1fs" % elapsed
    tail = a["stderr_tail"]
    assert len(tail.encode()) < 2 * MiB, "stderr_tail is %d bytes: not bounded" % len(tail)
    assert "END-OF-FLOOD" in tail, "the last bytes before the crash are missing from the tail"
    assert a["stderr_dropped_bytes"] > 0
    written = 50 * MiB + len(b"END-OF-FLOOD\n")
    accounted = a["stderr_dropped_bytes"] + len(tail.encode())
    assert accounted >= written, (
        "stderr bytes unaccounted for: the worker wrote %d, stderr_dropped_bytes %d + "
        "stderr_tail %d = %d (%d missing)" % (written, a["stderr_dropped_bytes"],
                                              len(tail.encode()), accounted, written - accounted))
    _after_fault(d, pid)


def _grandchild_pid(d, tag):
    path = os.path.join(d.scratch, "grandchild-%s.pid" % tag)
    return int(wait_until(lambda: os.path.exists(path) and open(path).read().strip(), 5,
                          "grandchild pid file"))


def test_hung_worker_with_grandchild_holding_pipes(start_daemon):
    d, pid = _fault_daemon(start_daemon, "grandchild_then_hang", job_timeout="1s")
    t0 = time.monotonic()
    r = d.job("fault", b"hang")
    elapsed = time.monotonic() - t0
    body = _problem(r, 504, "timed_out")
    assert elapsed < 15, "outcome took %.1fs" % elapsed
    a = body["attempts"][0]
    assert "grandchild_then_hang" in a["stacks"]
    gc = _grandchild_pid(d, "hang")
    d.seen_pids.add(gc)
    wait_until(lambda: not pid_alive(gc), 10,
               "grandchild %d (state %s) to be killed" % (gc, proc_state(gc)))
    _after_fault(d, pid)


def test_crashed_worker_with_grandchild_holding_pipes(start_daemon):
    d, pid = _fault_daemon(start_daemon, "grandchild_then_segfault")
    t0 = time.monotonic()
    r = d.job("fault", b"segv")
    elapsed = time.monotonic() - t0
    body = _problem(r, 502, "crashed")
    # The pipes never reach EOF while the grandchild lives: the supervisor must not wait for it.
    assert elapsed < 10, "outcome took %.1fs" % elapsed
    a = body["attempts"][0]
    assert a["signal"] == "SIGSEGV"
    assert "grandchild started, now crashing" in a["stderr_tail"]
    gc = _grandchild_pid(d, "segv")
    d.seen_pids.add(gc)
    wait_until(lambda: not pid_alive(gc), 10,
               "orphaned grandchild %d (state %s) to be killed" % (gc, proc_state(gc)))
    _after_fault(d, pid)


@pytest.mark.parametrize("handler", ["garbage_frame", "oversized_frame_header"])
def test_bad_frame_kills_only_that_worker(start_daemon, handler):
    d, pid = _fault_daemon(start_daemon, handler)
    echo_pids = d.idle_pids("echo")
    t0 = time.monotonic()
    r = d.job("fault", b"x")
    elapsed = time.monotonic() - t0
    body = _problem(r, 502, "crashed")
    a = body["attempts"][0]
    assert a["cause"].startswith("protocol_error"), a
    assert elapsed < 10, "protocol error took %.1fs to end the job" % elapsed
    _after_fault(d, pid)
    # Only the offending worker was killed.
    assert all(pid_alive(p) for p in echo_pids)
    assert set(echo_pids) <= {int(w["pid"]) for w in d.workers("echo")}


def test_exit_mid_job_is_crashed_with_exit_code(start_daemon):
    d, pid = _fault_daemon(start_daemon, "exit_midjob")
    body = _problem(d.job("fault", b"x"), 502, "crashed")
    a = body["attempts"][0]
    assert a["exit_code"] == 7
    assert a.get("signal") is None
    assert "leaving with code 7" in a["stderr_tail"]
    _after_fault(d, pid)


def test_stdout_flood_is_drained_and_job_ok(start_daemon):
    d, pid = _fault_daemon(start_daemon, "stdout_flood")
    t0 = time.monotonic()
    r = d.job("fault", b"x")
    assert r.status == 200, r
    assert r.json == {"printed_lines": 80000}
    assert time.monotonic() - t0 < 10
    # Same worker, still serving.
    r2 = d.job("fault", b"crash")
    body = _problem(r2, 502, "crashed")
    a = body["attempts"][0]
    assert a["pid"] == pid
    assert "STDOUT-LAST-LINE" in a["stdout_tail"], (
        "the worker's last stdout bytes before the crash are missing; stdout_tail ends with %r"
        % a["stdout_tail"][-200:])
    assert len(a["stdout_tail"].encode()) < 2 * MiB
    _after_fault(d, pid)
