"""The worker end to end: a real ``python -m bulkhead.worker`` process, driven over its control
socket (fd 3) and stacks pipe (fd 4) exactly as the supervisor drives it."""

import json
import os
import signal
import sys
import time

import pytest

from bulkhead import __version__
from bulkhead import _protocol as P


def body_json(frame):
    return json.loads(frame.body.decode("utf-8"))


# -- start-up ------------------------------------------------------------------------------


def test_hello_then_ready(spawn_worker):
    proc = spawn_worker("handlers_for_tests:echo")
    hello = proc.expect(P.HELLO, job_id=0)
    info = body_json(hello)
    assert info["protocol"] == 1
    assert info["pid"] == proc.pid
    assert info["sdk"] == "python"
    assert info["sdk_version"] == __version__
    assert info["runtime"].startswith("CPython 3.")
    ready = body_json(proc.expect(P.READY, job_id=0))
    assert set(ready) == {"preload_seconds", "init_seconds", "payload_view"}
    assert 0 <= ready["preload_seconds"] < 15 and 0 <= ready["init_seconds"] < 15
    assert ready["payload_view"] is False     # echo takes bytes


def test_ready_says_a_memoryview_handler_takes_a_view(spawn_worker):
    proc = spawn_worker("handlers_for_tests:view_echo")
    proc.expect(P.HELLO, job_id=0)
    assert body_json(proc.expect(P.READY, job_id=0))["payload_view"] is True


def test_preload_result_is_ctx_preloaded(ready_worker):
    proc = ready_worker("handlers_for_tests:describe", preload="handlers_for_tests:preload_value")
    result = proc.run_job(41, b"abc")
    assert result.type == P.RESULT_JSON
    assert body_json(result) == {"len": 3, "job_id": 41, "pool": "testpool",
                                 "worker_id": "testpool-1", "preloaded": {"model": "loaded"},
                                 "payload_type": "bytes"}


@pytest.mark.parametrize("handler, preload, error_type, words", [
    ("no_such_module_for_bulkhead:handle", "", "ModuleNotFoundError", "no_such_module"),
    ("handlers_for_tests:missing", "", "AttributeError", "missing"),
    ("handlers_for_tests:NOT_CALLABLE", "", "TypeError", "not callable"),
    ("handlers_for_tests", "", "ValueError", "module:function"),
    ("", "", "ValueError", "BULKHEAD_HANDLER"),
    ("handlers_for_tests:echo", "handlers_for_tests:preload_raises", "RuntimeError",
     "no GPU here"),
    ("handlers_for_tests:echo", "handlers_for_tests:preload_exits", "SystemExit", "9"),
    ("handlers_for_tests:echo", "nope_module_for_bulkhead:load", "ModuleNotFoundError", "nope"),
])
def test_start_failed_then_exit_3(spawn_worker, handler, preload, error_type, words):
    proc = spawn_worker(handler, preload=preload)
    proc.expect(P.HELLO)
    failed = body_json(proc.expect(P.START_FAILED, job_id=0))
    assert set(failed) == {"type", "message", "traceback"}
    assert failed["type"] == error_type
    assert words in failed["message"]
    assert proc.read_frame() is None          # nothing after START_FAILED: EOF
    assert proc.wait() == 3


def test_start_failed_traceback_names_the_failing_code(spawn_worker):
    proc = spawn_worker("handlers_for_tests:echo", preload="handlers_for_tests:preload_raises")
    proc.expect(P.HELLO)
    failed = body_json(proc.expect(P.START_FAILED))
    assert "preload_raises" in failed["traceback"]
    assert failed["traceback"].rstrip().endswith("RuntimeError: no GPU here")


def test_without_a_control_socket_exits_2(spawn_worker):
    proc = spawn_worker("handlers_for_tests:echo", env={"BULKHEAD_CONTROL_FD": "9"})
    assert proc.wait() == 2
    assert "control fd 9" in proc.read_stderr()


# -- results -------------------------------------------------------------------------------


def test_bytes_result(ready_worker):
    proc = ready_worker("handlers_for_tests:echo")
    for job_id, payload in ((1, b"hello"), (2, b""), (3, bytes(range(256)))):
        assert proc.run_job(job_id, payload) == P.Frame(P.RESULT_BYTES, job_id, payload)


def test_text_result(ready_worker):
    proc = ready_worker("handlers_for_tests:upper_text")
    assert proc.run_job(9, "héllo".encode()) == P.Frame(P.RESULT_TEXT, 9, "HÉLLO".encode())


def test_json_result_list(ready_worker):
    proc = ready_worker("handlers_for_tests:as_list")
    result = proc.run_job(1, b"")
    assert result.type == P.RESULT_JSON
    assert json.loads(result.body.decode("utf-8")) == [1, "two", None, {"three": 3.5},
                                                       "\u00e9\u4e2d"]


@pytest.mark.parametrize("handler, expected", [
    ("as_bytearray", b"ab!"),
    ("as_memoryview", bytes(memoryview(__import__("array").array("i", [1, 2, 3])))),
    ("as_strided_memoryview", b"ace"),
])
def test_buffer_results(ready_worker, handler, expected):
    proc = ready_worker("handlers_for_tests:" + handler)
    assert proc.run_job(5, b"ab") == P.Frame(P.RESULT_BYTES, 5, expected)


@pytest.mark.parametrize("handler, words", [
    ("return_none", "NoneType"),
    ("return_set", "set"),
])
def test_other_return_types_are_a_type_error(ready_worker, handler, words):
    proc = ready_worker("handlers_for_tests:" + handler)
    result = proc.run_job(3, b"")
    assert result.type == P.HANDLER_ERROR
    error = body_json(result)
    assert error["type"] == "TypeError"
    assert words in error["message"] and "bytes" in error["message"]
    assert proc.run_job(4, b"").type == P.HANDLER_ERROR   # still serving


@pytest.mark.parametrize("handler, error_type", [
    ("return_nan", "ValueError"),
    ("return_lone_surrogate", "UnicodeEncodeError"),
])
def test_unencodable_results_are_handler_errors(ready_worker, handler, error_type):
    proc = ready_worker("handlers_for_tests:" + handler)
    result = proc.run_job(3, b"")
    assert result.type == P.HANDLER_ERROR
    assert body_json(result)["type"] == error_type


def test_large_payload_round_trip_64_mib(ready_worker):
    proc = ready_worker("handlers_for_tests:echo")
    payload = os.urandom(1 << 16) * 1024        # 64 MiB
    result = proc.run_job(64, payload, timeout=60)
    assert result.type == P.RESULT_BYTES
    assert len(result.body) == len(payload) and result.body == payload
    assert proc.run_job(65, b"small") == P.Frame(P.RESULT_BYTES, 65, b"small")


# -- payloads as memoryview ------------------------------------------------------------------


def test_wants_memoryview_reads_the_payload_parameters_annotation():
    from bulkhead.worker import wants_memoryview
    import handlers_for_tests as h
    assert wants_memoryview(h.view_echo)
    assert wants_memoryview(h.view_describe)          # a string annotation
    assert wants_memoryview(h.Handler())              # a callable object
    assert not wants_memoryview(h.unannotated)
    assert not wants_memoryview(h.echo)
    assert not wants_memoryview(print)                # a builtin: no code object

    class Model(object):
        def handle(self, payload: memoryview, ctx):
            return payload
    assert wants_memoryview(Model().handle)           # a bound method: self is skipped


@pytest.mark.parametrize("size", [0, 5, (64 << 10) - 1, 64 << 10, (1 << 20) + 3])
def test_a_memoryview_handler_gets_every_size_as_a_read_only_view(ready_worker, size):
    proc = ready_worker("handlers_for_tests:view_describe")
    result = proc.run_job(1, b"x" * size, timeout=30)
    assert result.type == P.RESULT_JSON
    assert json.loads(result.body) == {"type": "memoryview", "len": size, "readonly": True}


def test_a_returned_payload_view_round_trips_large_bodies_byte_exact(ready_worker):
    proc = ready_worker("handlers_for_tests:view_echo")
    for job_id, size in enumerate([3 << 20, 100, 1 << 20, 5 << 20, 0], start=1):
        payload = os.urandom(size)
        assert proc.run_job(job_id, payload, timeout=60) == P.Frame(P.RESULT_BYTES, job_id,
                                                                    payload)


def test_a_kept_payload_view_fails_after_its_job_instead_of_showing_the_next(ready_worker):
    proc = ready_worker("handlers_for_tests:view_keep_then_touch")
    assert proc.run_job(1, b"A" * (1 << 20)).body == b"kept"
    answer = proc.run_job(2, b"B" * (1 << 20)).body
    assert answer.startswith(b"ValueError") and b"released" in answer, answer[:200]


def test_an_exported_payload_keeps_its_bytes_when_the_next_job_arrives(ready_worker):
    proc = ready_worker("handlers_for_tests:view_export_then_check")
    assert proc.run_job(1, b"\x01\x02" * (1 << 19)).body == b"exported"
    # job 1's buffer is still exported: job 2 must land in another buffer
    assert proc.run_job(2, b"\x09" * (1 << 20)).body == bytes([1, 2])


def test_result_above_max_frame_is_a_handler_error(ready_worker):
    proc = ready_worker("handlers_for_tests:make_bytes", env={"BULKHEAD_MAX_FRAME": "1000"})
    assert proc.run_job(1, b"1000") == P.Frame(P.RESULT_BYTES, 1, b"x" * 1000)
    result = proc.run_job(2, b"1001")
    assert result.type == P.HANDLER_ERROR
    error = body_json(result)
    assert error["type"] == "ValueError" and "1001 bytes" in error["message"]


def test_jobs_sent_ahead_run_in_order_each_answered_before_the_next(ready_worker):
    """Prefetch (docs/protocol.md): the supervisor may write a job behind the one a worker runs.
    It waits in the socket; the worker answers the first, then runs the second."""
    proc = ready_worker("handlers_for_tests:sleep_for")
    started = time.monotonic()
    proc.send_raw(P.encode_frame(P.JOB, 1, b"0.3") + P.encode_frame(P.JOB, 2, b"0"))
    first = proc.read_frame()
    assert first == P.Frame(P.RESULT_BYTES, 1, b"slept"), "the quick second job did not overtake"
    assert time.monotonic() - started >= 0.3
    assert proc.read_frame() == P.Frame(P.RESULT_BYTES, 2, b"slept")
    proc.send_raw(P.encode_frame(P.JOB, 3, b"x") + P.encode_frame(P.JOB, 4, b"0"))
    failed = proc.read_frame()
    assert failed.type == P.HANDLER_ERROR and failed.job_id == 3, failed
    assert proc.read_frame() == P.Frame(P.RESULT_BYTES, 4, b"slept"), "an error stops nothing"


# -- handler errors ------------------------------------------------------------------------


def test_handler_exception_then_keeps_serving(ready_worker):
    proc = ready_worker("handlers_for_tests:raise_value_error")
    result = proc.run_job(17, b"oops")
    assert result.type == P.HANDLER_ERROR and result.job_id == 17
    error = body_json(result)
    assert error["type"] == "ValueError"
    assert error["message"] == "bad input: oops"
    tb = error["traceback"]
    assert tb.startswith("Traceback (most recent call last):")
    assert "raise_value_error" in tb
    assert "bulkhead/worker.py" not in tb       # our own frame is dropped
    assert proc.run_job(18, b"again").type == P.HANDLER_ERROR


def test_handler_error_type_is_qualified(ready_worker):
    proc = ready_worker("handlers_for_tests:raise_custom")
    error = body_json(proc.run_job(1, b""))
    assert error["type"] == "handlers_for_tests.CustomError"
    assert "_helper_that_raises" in error["traceback"]


@pytest.mark.parametrize("handler, error_type", [("sys_exit", "SystemExit"),
                                                 ("keyboard_interrupt", "KeyboardInterrupt")])
def test_base_exceptions_are_handler_errors(ready_worker, handler, error_type):
    proc = ready_worker("handlers_for_tests:" + handler)
    result = proc.run_job(1, b"")
    assert result.type == P.HANDLER_ERROR
    assert body_json(result)["type"] == error_type
    assert proc.run_job(2, b"").type == P.HANDLER_ERROR   # the worker is still alive


@pytest.mark.parametrize("handler, start", [("raise_huge", "xxx"),
                                            ("raise_huge_emoji", "\U0001F600")])
def test_huge_error_messages_stay_under_the_control_limit(ready_worker, handler, start):
    proc = ready_worker("handlers_for_tests:" + handler)
    result = proc.run_job(1, b"")
    assert result.type == P.HANDLER_ERROR
    assert len(result.body) < 1 << 20
    error = body_json(result)
    assert error["message"].startswith(start) and "cut" in error["message"]
    assert "characters cut" in error["traceback"]
    assert proc.run_job(2, b"").type == P.HANDLER_ERROR


def test_lone_surrogates_in_messages_become_valid_json(ready_worker):
    proc = ready_worker("handlers_for_tests:raise_surrogate")
    result = proc.run_job(1, b"")
    result.body.decode("utf-8")                       # strict UTF-8
    assert "\\udc80" in body_json(result)["message"]  # shown, not dropped


# -- progress heartbeats -------------------------------------------------------------------


def test_progress_sends_rate_limited_heartbeats(ready_worker):
    proc = ready_worker("handlers_for_tests:progress_for")
    proc.send(P.JOB, 33, b"0.35")
    beats = []
    while True:
        frame = proc.read_frame()
        if frame.type != P.HEARTBEAT:
            break
        assert frame.job_id == 33
        beats.append(body_json(frame))
    assert frame.type == P.RESULT_JSON and frame.job_id == 33
    result = body_json(frame)
    assert result["ctx_count"] == result["count"]
    # the loop ran for 0.35 s: one beat per 100 ms at most, and at least one
    assert 1 <= len(beats) <= 4
    assert result["count"] > len(beats) * 10            # most calls sent nothing
    counts = [b["progress"] for b in beats]
    assert counts == sorted(counts) and counts[-1] <= result["count"]
    assert all(isinstance(b["cpu_seconds"], float) and b["cpu_seconds"] > 0 for b in beats)


def test_progress_from_another_thread_counts_but_sends_nothing(ready_worker):
    proc = ready_worker("handlers_for_tests:progress_from_thread")
    result = proc.run_job(2, b"")     # run_job would skip heartbeats; check the frame is first
    assert result.type == P.RESULT_JSON
    assert body_json(result) == {"ctx_count": 10}


# -- ending --------------------------------------------------------------------------------


def test_shutdown_exits_0(ready_worker):
    proc = ready_worker()
    assert proc.run_job(1, b"x").type == P.RESULT_BYTES
    proc.send(P.SHUTDOWN)
    assert proc.read_frame() is None
    assert proc.wait() == 0


def test_eof_on_the_control_socket_exits_0(ready_worker):
    proc = ready_worker()
    proc.sock.shutdown(2)
    assert proc.wait() == 0


def test_eof_during_start_up_is_noticed_once_idle(spawn_worker):
    proc = spawn_worker("handlers_for_tests:echo")
    proc.sock.close()
    assert proc.wait() == 0


def test_supervisor_protocol_error_exits_4(ready_worker):
    proc = ready_worker()
    proc.send_raw(b"XX" + b"\x00" * 14)
    assert proc.wait() == 4
    assert "magic" in proc.read_stderr()


def test_frame_type_of_the_wrong_direction_exits_4(ready_worker):
    proc = ready_worker()
    proc.send(P.RESULT_BYTES, 1, b"x")
    assert proc.wait() == 4


def test_eof_mid_frame_exits_4(ready_worker):
    proc = ready_worker()
    proc.send_raw(P.encode_frame(P.JOB, 1, b"abcdef")[:-2])
    proc.sock.shutdown(1)   # SHUT_WR: EOF in the middle of the body
    assert proc.wait() == 4


def test_control_and_stacks_fds_are_not_inherited(ready_worker):
    proc = ready_worker("handlers_for_tests:fd_flags")
    assert body_json(proc.run_job(1, b"")) == {"3": False, "4": False}


# -- stacks --------------------------------------------------------------------------------


def test_dump_signal_while_idle_writes_stacks_and_worker_lives(ready_worker):
    proc = ready_worker()
    proc.signal(signal.SIGUSR2)
    # the worker may still be returning from sending READY: wait for the dump's last line
    stacks = proc.read_stacks_until(b"in _run_module_as_main").decode()
    assert "most recent call first" in stacks
    assert "bulkhead/worker.py" in stacks and "in main" in stacks
    assert proc.run_job(1, b"still here") == P.Frame(P.RESULT_BYTES, 1, b"still here")
    proc.stacks = b""
    proc.signal(signal.SIGUSR2)                 # again: the handler stays registered
    proc.read_stacks_until(b"in _run_module_as_main")
    assert proc.run_job(2, b"x").type == P.RESULT_BYTES


def test_dump_signal_during_a_job_shows_the_handler(ready_worker):
    proc = ready_worker("handlers_for_tests:announce_then_block", stdout_pipe=True)
    proc.send(P.JOB, 5, b"")
    proc.read_stdout_until(b"started\n")
    proc.signal(signal.SIGUSR2)
    stacks = proc.read_stacks_until(b"in _run_module_as_main").decode()
    assert "in announce_then_block" in stacks
    assert "_blocked_in_here" in stacks
    # dumping did not stop the job: the worker is still running it (no frame, still alive)
    assert proc.returncode is None
    proc.kill()
    assert proc.returncode == -signal.SIGKILL


def test_fatal_signal_writes_the_python_stack_to_the_stacks_fd(ready_worker):
    proc = ready_worker("handlers_for_tests:segfault")
    proc.send(P.JOB, 1, b"")
    assert proc.wait() == -signal.SIGSEGV
    stacks = proc.read_stacks_until(b"in segfault").decode()
    assert "Fatal Python error: Segmentation fault" in stacks
    assert proc.read_frame() is None


@pytest.mark.skipif(sys.platform != "linux", reason="Linux worker")
def test_worker_import_is_light():
    """``import bulkhead.worker`` must not pull in socket, json, re, traceback or http."""
    import subprocess
    code = ("import sys, bulkhead.worker; "
            "print(' '.join(m for m in ('socket', 'json', 're', 'traceback', 'http.client', "
            "'bulkhead.client', 'threading', 'collections') if m in sys.modules))")
    from conftest import PY_DIR, PYTHON
    env = {"PYTHONPATH": PY_DIR, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([PYTHON, "-S", "-c", code], env=env,
                         stdout=subprocess.PIPE, timeout=15, check=True).stdout.decode().strip()
    assert out == ""


def test_init_gets_the_preloaded_value_and_its_result_replaces_it(ready_worker):
    proc = ready_worker("handlers_for_tests:describe", preload="handlers_for_tests:preload_value",
                        env={"BULKHEAD_INIT": "handlers_for_tests:init_adds"})
    info = body_json(proc.run_job(1, b""))
    assert info["preloaded"] == {"model": "loaded", "init": "ran"}


def test_init_returning_none_keeps_the_preloaded_value(ready_worker):
    proc = ready_worker("handlers_for_tests:describe", preload="handlers_for_tests:preload_value",
                        env={"BULKHEAD_INIT": "handlers_for_tests:init_returns_none"})
    assert body_json(proc.run_job(1, b""))["preloaded"] == {"model": "loaded"}


def test_init_that_raises_is_a_start_failure(spawn_worker):
    proc = spawn_worker("handlers_for_tests:echo",
                        env={"BULKHEAD_INIT": "handlers_for_tests:init_raises"})
    proc.expect(P.HELLO)
    failed = body_json(proc.expect(P.START_FAILED))
    assert failed["type"] == "RuntimeError" and "cuda:0" in failed["message"]
    assert proc.wait() == 3
