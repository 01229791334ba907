"""Hang-detection heartbeats (``BULKHEAD_HEARTBEAT_INTERVAL``): a real worker process over a
socketpair, as the supervisor drives it.

No test sleeps to synchronise: every wait is a bounded poll() on the control socket.  The only
timed waits are the ones that assert that *nothing* arrives for a while.
"""

import json
import os
import random
import re
import select
import sys

import pytest

from bulkhead import _protocol as P

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux worker")

INTERVAL = 0.05
ON = {"BULKHEAD_HEARTBEAT_INTERVAL": str(INTERVAL)}
STACK = re.compile(r"^[0-9a-f]{16}$")


def body_json(frame):
    return json.loads(frame.body.decode("utf-8"))


def run_collecting(proc, job_id, payload, timeout=15.0):
    """Send a JOB; return (heartbeat bodies, result frame).  Every frame before the result must
    be a HEARTBEAT for this job."""
    proc.send(P.JOB, job_id, payload)
    beats = []
    while True:
        frame = proc.read_frame(timeout)
        assert frame is not None, "EOF during job %d; stderr:\n%s" % (job_id, proc.read_stderr())
        if frame.type != P.HEARTBEAT:
            assert frame.job_id == job_id, frame
            return beats, frame
        assert frame.job_id == job_id, "heartbeat %r while job %d runs" % (frame, job_id)
        beat = body_json(frame)
        assert set(beat) == {"progress", "cpu_seconds", "stack"}, beat
        assert isinstance(beat["progress"], int) and isinstance(beat["cpu_seconds"], float)
        assert STACK.match(beat["stack"]), beat
        beats.append(beat)


def assert_nothing_arrives(proc, seconds):
    """Nothing is readable on the control socket for ``seconds`` (and nothing is buffered)."""
    assert proc.decoder.buffered == 0 and proc.decoder.next() is None
    poller = select.poll()
    poller.register(proc.sock.fileno(), select.POLLIN)
    events = poller.poll(seconds * 1000)
    assert not events, "unexpected frame from an idle worker: %r" % (proc.read_frame(),)


def os_threads(pid):
    return len(os.listdir("/proc/%d/task" % pid))


def settled(beats, slack=2):
    """The beats taken while the main thread stayed in its blocking call: the run of beats with
    the most common stack, after and before at most ``slack`` others (on a loaded machine a beat
    can come before the handler reaches that call, or after it returned)."""
    stacks = [b["stack"] for b in beats]
    stack = max(set(stacks), key=stacks.count)
    first = stacks.index(stack)
    last = len(stacks) - 1 - stacks[::-1].index(stack)
    assert first <= slack and len(stacks) - 1 - last <= slack, stacks
    return beats[first:last + 1]


def assert_monotonic(values):
    assert all(a <= b for a, b in zip(values, values[1:])), values


# -- beats while a job runs ----------------------------------------------------------------


def test_sleeping_job_beats_every_interval(ready_worker):
    proc = ready_worker("handlers_for_tests:sleep_for", env=ON)
    beats, result = run_collecting(proc, 7, b"0.5")
    assert result == P.Frame(P.RESULT_BYTES, 7, b"slept")
    # 0.5 s at 0.05 s: about 9; allow for a slow machine, but several
    assert 4 <= len(beats) <= 11, beats
    assert_monotonic([b["cpu_seconds"] for b in beats])
    assert all(b["progress"] == 0 for b in beats)
    assert len({b["stack"] for b in settled(beats)}) == 1   # asleep on one line throughout
    # the next job gets its own heartbeats from the same thread
    beats2, result2 = run_collecting(proc, 8, b"0.3")
    assert result2.job_id == 8 and len(beats2) >= 2
    assert beats2[0]["cpu_seconds"] >= beats[-1]["cpu_seconds"]   # never goes down


def test_progress_shows_in_the_heartbeats(ready_worker):
    proc = ready_worker("handlers_for_tests:progress_for", env=ON)
    beats, result = run_collecting(proc, 3, b"0.5")
    assert result.type == P.RESULT_JSON
    count = body_json(result)["ctx_count"]
    progress = [b["progress"] for b in beats]
    assert len(beats) >= 4, beats
    assert_monotonic(progress)
    assert progress[0] < progress[-1] <= count
    assert len(set(progress)) >= 3
    # a busy loop uses CPU
    cpu = [b["cpu_seconds"] for b in beats]
    assert_monotonic(cpu)
    assert cpu[-1] - cpu[0] > 0.02
    # every beat came from the thread (progress() sends nothing itself when the thread runs):
    # run_collecting checked that each one carries "stack"; and they are rate-limited by the
    # interval, not by progress()'s own 100 ms
    assert len(beats) <= 0.5 / INTERVAL + 2


def test_deadlocked_job_beats_with_a_frozen_stack_and_no_cpu(ready_worker):
    proc = ready_worker("handlers_for_tests:deadlock", env=ON)
    beats, result = run_collecting(proc, 11, b"1.0")
    assert body_json(result) == {"second_acquire": False}
    # the lock releases the GIL: the thread keeps beating (about 19 in 1 s)
    assert {b["progress"] for b in beats} == {0}
    beats = settled(beats)
    assert len(beats) >= 8, beats
    assert len({b["stack"] for b in beats}) == 1, beats        # same stack throughout
    cpu = [b["cpu_seconds"] for b in beats]
    assert_monotonic(cpu)
    # the heartbeat thread's own CPU is not counted: a blocked job's CPU stays (almost) flat
    assert cpu[-1] - cpu[0] < 0.01, cpu


def test_stack_fingerprint_follows_the_code_location(ready_worker):
    proc = ready_worker("handlers_for_tests:sleep_or_spin", env=ON)
    sleeping, _ = run_collecting(proc, 1, b"sleep:0.3")
    spinning, _ = run_collecting(proc, 2, b"spin:0.3")
    sleeping = settled(sleeping)
    assert len({b["stack"] for b in sleeping}) == 1
    assert {b["stack"] for b in spinning}.isdisjoint({b["stack"] for b in sleeping})
    # a hash of (file, function, line) tuples, not of addresses: the same in another process
    other = ready_worker("handlers_for_tests:sleep_or_spin", env=ON)
    sleeping_there, _ = run_collecting(other, 1, b"sleep:0.3")
    assert {b["stack"] for b in settled(sleeping_there)} == {b["stack"] for b in sleeping}


def test_gil_holding_c_call_stops_the_heartbeats(ready_worker):
    """sum(range(n)) runs in C without ever releasing the GIL: the heartbeat thread cannot run,
    which is how the supervisor sees a native busy hang (no heartbeat for hang_after)."""
    proc = ready_worker("handlers_for_tests:gil_busy", env=ON)
    beats, result = run_collecting(proc, 5, b"%d" % 10 ** 8, timeout=60)
    clocks = body_json(result)
    busy_cpu = clocks["cpu_after"] - clocks["cpu_before"]
    busy_wall = clocks["t_after"] - clocks["t_before"]
    if busy_wall < 10 * INTERVAL:
        pytest.skip("sum() took only %.3f s here: too fast to tell" % busy_wall)
    # the 0.3 s sleep before it did beat
    assert len(beats) >= 2, beats
    # no heartbeat was taken while sum() ran: every beat's CPU reading is from before it started
    # or after it returned (a live thread would have sent ~busy_wall / INTERVAL of them)
    during = [b for b in beats
              if clocks["cpu_before"] + 2 * INTERVAL < b["cpu_seconds"]
              < clocks["cpu_after"] - 2 * INTERVAL]
    assert during == [], (during, clocks, busy_cpu)


# -- never for a job that has ended --------------------------------------------------------


def test_no_heartbeat_after_the_result_frame(ready_worker):
    """Hammer the race between a job ending and a heartbeat falling due: most jobs last about
    one interval (so the end and the beat coincide), with the GIL released (sleep) or held by
    bytecode (spin), and the GIL handed between threads as often as possible.  The stream is
    ordered, so a late heartbeat for job N would arrive after N's result, among N+1's frames (or
    before the EOF that follows SHUTDOWN), and run_collecting would fail on it.  (Checking the
    job under the lock only when taking the stack, not again when sending, shows here as about 1
    late heartbeat per 100 jobs.)"""
    interval = 0.002
    proc = ready_worker("handlers_for_tests:sleep_or_spin",
                        preload="handlers_for_tests:tiny_switch_interval",
                        env={"BULKHEAD_HEARTBEAT_INTERVAL": str(interval)})
    rng = random.Random(1234)
    total_beats = 0
    for job_id in range(1, 1001):
        if job_id % 3:
            seconds = interval * rng.uniform(0.9, 1.1)
        else:
            seconds = interval * rng.uniform(0.0, 2.5)
        how = "sleep" if job_id % 2 else "spin"
        payload = ("%s:%.6f" % (how, seconds)).encode("ascii")
        beats, result = run_collecting(proc, job_id, payload)
        assert result == P.Frame(P.RESULT_BYTES, job_id, payload)
        total_beats += len(beats)
    assert total_beats > 100          # the race was exercised: beats fell due while jobs ran
    proc.send(P.SHUTDOWN)
    assert proc.read_frame() is None
    assert proc.wait() == 0


def test_idle_worker_sends_nothing(ready_worker):
    proc = ready_worker("handlers_for_tests:sleep_for", env=ON)
    assert_nothing_arrives(proc, 4 * INTERVAL)              # before the first job
    beats, _ = run_collecting(proc, 1, b"0.2")
    assert beats
    assert_nothing_arrives(proc, 6 * INTERVAL)              # after it
    beats, _ = run_collecting(proc, 2, b"0.2")
    assert beats
    assert_nothing_arrives(proc, 6 * INTERVAL)


def test_large_results_do_not_interleave_with_heartbeats(ready_worker):
    """Results above 64 KiB go out in two sendall calls; heartbeats fall due all the time."""
    proc = ready_worker("handlers_for_tests:make_bytes",
                        preload="handlers_for_tests:tiny_switch_interval",
                        env={"BULKHEAD_HEARTBEAT_INTERVAL": "0.001"})
    for job_id in range(1, 41):
        size = (1 << 20) + job_id
        beats, result = run_collecting(proc, job_id, b"%d" % size)
        assert result.type == P.RESULT_BYTES and len(result.body) == size


def test_handler_error_ends_the_heartbeats_too(ready_worker):
    proc = ready_worker("handlers_for_tests:raise_value_error",
                        preload="handlers_for_tests:tiny_switch_interval",
                        env={"BULKHEAD_HEARTBEAT_INTERVAL": "0.001"})
    for job_id in range(1, 51):
        _, result = run_collecting(proc, job_id, b"x")
        assert result.type == P.HANDLER_ERROR
    proc.send(P.SHUTDOWN)
    assert proc.read_frame() is None


# -- the thread exists only when asked for, from the first job on --------------------------


@pytest.mark.parametrize("value", [None, "0", "", "0.0"])
def test_without_an_interval_there_is_no_thread(ready_worker, value):
    proc = ready_worker("handlers_for_tests:threads",
                        env={"BULKHEAD_HEARTBEAT_INTERVAL": value})
    for job_id in (1, 2):
        beats, result = run_collecting(proc, job_id, b"")
        assert beats == []
        assert body_json(result) == {"tasks": 1, "active_count": 1, "names": ["MainThread"]}
    assert os_threads(proc.pid) == 1
    assert proc.read_stderr() == ""


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf"])
def test_invalid_interval_warns_and_turns_heartbeats_off(ready_worker, value):
    proc = ready_worker("handlers_for_tests:threads",
                        env={"BULKHEAD_HEARTBEAT_INTERVAL": value})
    _, result = run_collecting(proc, 1, b"")
    assert body_json(result)["tasks"] == 1
    assert "BULKHEAD_HEARTBEAT_INTERVAL" in proc.read_stderr()


def test_thread_starts_at_the_first_job_and_is_reused(ready_worker):
    proc = ready_worker("handlers_for_tests:threads", env=ON)
    assert os_threads(proc.pid) == 1                       # READY sent, no job yet: no thread
    seen = []
    for job_id in range(1, 6):
        _, result = run_collecting(proc, job_id, b"")
        seen.append(body_json(result))
        assert os_threads(proc.pid) == 2
    # an OS thread started with _thread: threading (which a handler may have monkey-patched)
    # neither starts nor lists it
    assert seen == [{"tasks": 2, "active_count": 1, "names": ["MainThread"]}] * 5


def thread_switches(pid, tid):
    with open("/proc/%d/task/%d/status" % (pid, tid)) as f:
        status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
    return (int(status["voluntary_ctxt_switches"]) +
            int(status["nonvoluntary_ctxt_switches"]))


def test_short_jobs_do_not_wake_the_thread_per_job(ready_worker):
    """Jobs shorter than the interval cost the heartbeat thread at most a wake-up per interval:
    it is not woken for every job (that doubled an echo's round trip)."""
    proc = ready_worker("handlers_for_tests:echo", env={"BULKHEAD_HEARTBEAT_INTERVAL": "1.0"})
    assert proc.run_job(1, b"x").type == P.RESULT_BYTES          # starts the thread
    (tid,) = [int(t) for t in os.listdir("/proc/%d/task" % proc.pid) if int(t) != proc.pid]
    before = thread_switches(proc.pid, tid)
    for job_id in range(2, 1002):
        beats, result = run_collecting(proc, job_id, b"x")
        assert result.type == P.RESULT_BYTES
    # 1000 jobs take well under a second here; a few wake-ups at most (one per interval)
    assert thread_switches(proc.pid, tid) - before < 50


def test_progress_without_the_thread_still_sends_its_own_heartbeats(ready_worker):
    """Heartbeats off: ctx.progress() keeps today's rate-limited beats, without a stack."""
    proc = ready_worker("handlers_for_tests:progress_for")
    proc.send(P.JOB, 4, b"0.25")
    beats = []
    frame = proc.read_frame()
    while frame.type == P.HEARTBEAT:
        beats.append(body_json(frame))
        frame = proc.read_frame()
    assert frame.type == P.RESULT_JSON and frame.job_id == 4
    assert beats and all(set(b) == {"progress", "cpu_seconds"} for b in beats)
    assert os_threads(proc.pid) == 1
