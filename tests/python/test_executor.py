"""bulkhead.Executor: a concurrent.futures executor over a private supervisor.

Real processes: each Executor starts its own ``bulkhead serve`` ($BULKHEAD_BIN) with
``--stop-when-stdin-closes``.  Every daemon and worker carries ``BULKHEAD_TEST_TAG=<unique>`` (the
daemon inherits it from os.environ at start, workers get it through the pool's ``env``), so a
test can check through /proc that nothing survives.  Executors are shared by the tests that do
not need a fresh one; every wait is bounded and waits on state.
"""

import concurrent.futures
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from conftest import BIN, HERE, PYTHON, REPO, tagged_pids, wait_until

import executor_tasks as T

pytestmark = pytest.mark.skipif(os.path.realpath(sys.executable) != os.path.realpath(PYTHON)
                                and not os.environ.get("BULKHEAD_ANY_PYTHON"),
                                reason="the integration suite runs under /usr/bin/python3")

RESULT_LIMIT = 60   # seconds: a bound on any single result wait (expected: well under 1 s)


def tagged_executor(tag=None, **kwargs):
    """An Executor whose daemon and workers carry BULKHEAD_TEST_TAG; returns (executor, tag)."""
    import bulkhead
    tag = tag or uuid.uuid4().hex
    env = dict(kwargs.pop("env", {}))
    env["BULKHEAD_TEST_TAG"] = tag
    old = os.environ.get("BULKHEAD_TEST_TAG")
    os.environ["BULKHEAD_TEST_TAG"] = tag
    try:
        ex = bulkhead.Executor(bulkhead_bin=BIN, env=env, **kwargs)
    finally:
        if old is None:
            del os.environ["BULKHEAD_TEST_TAG"]
        else:
            os.environ["BULKHEAD_TEST_TAG"] = old
    return ex, tag


def assert_all_gone(tag, timeout=20):
    wait_until(lambda: not tagged_pids(tag), timeout, "every process tagged %s to exit" % tag)


@pytest.fixture(scope="module")
def shared():
    ex, tag = tagged_executor(max_workers=2, retries=1)
    yield ex
    ex.shutdown(wait=True)
    assert_all_gone(tag)


@pytest.fixture(scope="module")
def limited():
    """One worker with a run limit and a memory limit, no retries. The run limit leaves a
    600 MiB allocation (0.3 s here) time to reach the memory limit on a loaded machine."""
    ex, tag = tagged_executor(max_workers=1, job_timeout="8s", memory_limit="160MiB",
                              retries=0)
    yield ex
    ex.shutdown(wait=True)
    assert_all_gone(tag)


# -- values, map ---------------------------------------------------------------------------------


def test_submit_returns_values_in_real_futures(shared):
    f = shared.submit(T.add, 2, y=3)
    assert isinstance(f, concurrent.futures.Future)
    assert f.result(RESULT_LIMIT) == 5
    assert f.bulkhead_report["pid"] in [w["pid"] for w in shared.pool_status()["workers"]]
    assert f.bulkhead_report["attempts"] == 1


def test_map_keeps_order_with_and_without_chunksize(shared):
    xs = list(range(57))
    assert list(shared.map(T.square, xs, timeout=RESULT_LIMIT)) == [x * x for x in xs]
    assert list(shared.map(T.square, xs, chunksize=10, timeout=RESULT_LIMIT)) == \
        [x * x for x in xs]
    assert list(shared.map(T.add, xs, xs, chunksize=4)) == [2 * x for x in xs]
    assert list(shared.map(T.square, [])) == []
    with pytest.raises(ValueError):
        shared.map(T.square, xs, chunksize=0)


def test_map_many_more_tasks_than_the_daemon_queue_holds(shared):
    # The Executor keeps its own queue: at most 2 jobs per worker reach the daemon.
    n = 10000
    assert sum(shared.map(T.square, range(n), chunksize=1)) == sum(x * x for x in range(n))


def test_map_timeout(shared, tmp_path):
    release, started = str(tmp_path / "release"), str(tmp_path / "started")
    it = shared.map(T.wait_for_file, [release], [started])
    with pytest.raises(concurrent.futures.TimeoutError):
        list(shared.map(T.wait_for_file, [release], timeout=0.3))
    open(release, "w").close()
    assert list(it) == ["released"]


# -- failures --------------------------------------------------------------------------------------


def test_task_exception_keeps_its_type_with_remote_traceback(shared):
    import bulkhead
    f = shared.submit(T.raise_value_error, "bad input 7")
    with pytest.raises(ValueError, match="bad input 7") as info:
        f.result(RESULT_LIMIT)
    cause = info.value.__cause__
    assert isinstance(cause, bulkhead.HandlerError)
    assert "raise_value_error" in cause.remote_traceback
    assert "executor_tasks.py" in cause.remote_traceback
    assert "_executor_task.py" not in cause.remote_traceback
    assert "raise_value_error('bad input 7')" in str(cause)
    # map raises it too, at its position
    with pytest.raises(ValueError):
        list(shared.map(T.raise_value_error, ["x"]))


def test_unpicklable_exception_is_handler_error(shared):
    import bulkhead
    with pytest.raises(bulkhead.HandlerError) as info:
        shared.submit(T.raise_unpicklable, "locked").result(RESULT_LIMIT)
    assert info.value.error_type.endswith("Unpicklable")
    assert info.value.error_message == "locked"


def test_crash_fails_only_its_task_with_evidence(shared):
    import bulkhead
    innocents = [shared.submit(T.square, i) for i in range(6)]
    crash = shared.submit(T.abort)
    more = [shared.submit(T.square, i) for i in range(6, 12)]
    with pytest.raises(bulkhead.WorkerCrashed) as info:
        crash.result(RESULT_LIMIT)
    err = info.value
    assert len(err.attempts) == 2          # retries=1: retried once on a fresh worker
    assert err.last_attempt["signal"] == "SIGABRT"
    assert "T.abort" in str(err) or "executor_tasks.abort()" in str(err)
    assert [f.result(RESULT_LIMIT) for f in innocents + more] == [i * i for i in range(12)]
    assert shared.submit(T.square, 9).result(RESULT_LIMIT) == 81   # still serving


def test_job_timeout_is_job_timed_out(limited):
    import bulkhead
    with pytest.raises(bulkhead.JobTimedOut) as info:
        limited.submit(T.sleep, 600).result(RESULT_LIMIT)
    assert info.value.stage == "running"
    assert limited.submit(T.square, 4).result(RESULT_LIMIT) == 16


def test_memory_limit_is_oom_killed(limited):
    import bulkhead
    with pytest.raises(bulkhead.OomKilled):
        limited.submit(T.allocate, 600).result(RESULT_LIMIT)
    assert limited.submit(T.allocate, 20).result(RESULT_LIMIT) == 20


def test_lambda_and_closure_go_through_cloudpickle(shared):
    k = 7
    assert shared.submit(lambda x: x + k, 1).result(RESULT_LIMIT) == 8

    def closure(x):
        return [x] * k
    assert list(shared.map(closure, [1, 2], chunksize=2)) == [[1] * 7, [2] * 7]


def test_unknown_keyword_is_type_error():
    import bulkhead
    with pytest.raises(TypeError, match="max_wrokers"):
        bulkhead.Executor(max_wrokers=2, bulkhead_bin=BIN)


def test_bad_option_reports_the_daemon_log():
    import bulkhead
    with pytest.raises(bulkhead.ExecutorStartError, match="memory_limit"):
        bulkhead.Executor(max_workers=1, memory_limit="lots", bulkhead_bin=BIN)


def test_shutdown_cancel_futures_cancels_pending(tmp_path):
    ex, tag = tagged_executor(max_workers=1, inflight_per_worker=1)
    release, started = str(tmp_path / "release"), str(tmp_path / "started")
    running = ex.submit(T.wait_for_file, release, started)
    pending = [ex.submit(T.square, i) for i in range(5)]
    wait_until(lambda: os.path.exists(started), RESULT_LIMIT, "the first task to start")
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in pending)
    with pytest.raises(RuntimeError):
        ex.submit(T.square, 1)
    open(release, "w").close()
    assert running.result(RESULT_LIMIT) == "released"
    assert_all_gone(tag)


# -- __main__ scripts, process lifecycle -----------------------------------------------------------

SCRIPT = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {python_dir!r})
    import bulkhead

    def cube(x):                       # defined in __main__, like a notebook-less script
        return x ** 3

    if __name__ == "__main__":
        tag = os.environ["BULKHEAD_TEST_TAG"]
        with bulkhead.Executor(max_workers=2, env={{"BULKHEAD_TEST_TAG": tag}}) as ex:
            print("cubes", list(ex.map(cube, range(5))), flush=True)
            pids = sorted(w["pid"] for w in ex.pool_status()["workers"])
            print("pids", pids, flush=True)
            if sys.argv[1:] == ["hang"]:
                print("hanging", flush=True)
                time.sleep(600)
        print("exited", flush=True)
""")


def _write_script(tmp_path):
    path = tmp_path / "main_script.py"
    path.write_text(SCRIPT.format(python_dir=os.path.join(REPO, "python")))
    return str(path)


def _script_env(tag):
    env = dict(os.environ)
    env["BULKHEAD_TEST_TAG"] = tag
    env["BULKHEAD_BIN"] = BIN
    return env


def test_main_script_functions_run_and_nothing_is_left(tmp_path):
    tag = uuid.uuid4().hex
    out = subprocess.run([PYTHON, _write_script(tmp_path)], capture_output=True, text=True,
                         env=_script_env(tag), cwd=str(tmp_path), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "cubes [0, 1, 8, 27, 64]" in out.stdout
    assert "exited" in out.stdout
    assert_all_gone(tag)


def test_interactive_main_functions_go_by_value(tmp_path):
    # python3 -c (no __file__ in __main__): the workers cannot import it, so its functions go
    # through cloudpickle by value, as in a REPL or a notebook.
    tag = uuid.uuid4().hex
    code = ("import os, sys; sys.path.insert(0, %r); import bulkhead\n"
            "def double(x): return 2 * x\n"
            "with bulkhead.Executor(max_workers=1, env={'BULKHEAD_TEST_TAG': os.environ["
            "'BULKHEAD_TEST_TAG']}) as ex: print('doubles', list(ex.map(double, range(4))))\n"
            % os.path.join(REPO, "python"))
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True,
                         env=_script_env(tag), cwd=str(tmp_path), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "doubles [0, 2, 4, 6]" in out.stdout
    assert_all_gone(tag)


def test_sigkill_of_the_owner_leaves_nothing(tmp_path):
    tag = uuid.uuid4().hex
    proc = subprocess.Popen([PYTHON, _write_script(tmp_path), "hang"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_script_env(tag),
                            cwd=str(tmp_path))
    try:
        lines = []
        while True:
            line = proc.stdout.readline()
            assert line, "script ended early: %s" % proc.stderr.read()
            lines.append(line)
            if line.startswith("hanging"):
                break
        assert len(tagged_pids(tag)) >= 3      # the script, its daemon, 2 workers
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert_all_gone(tag, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# -- leaky cross-validation folds in miniature -------------------------------------------------------

FOLDS = 4
PIDS_LIMIT = 64   # a fold peaks at ~32 tasks (2 + 20 leaked + 10 of its own): 3 folds need ~72


def test_leaky_folds_in_one_process_exhaust_pids(tmp_path):
    import bulkhead
    ex, tag = tagged_executor(max_workers=1, max_jobs_per_worker=0, pids_limit=PIDS_LIMIT,
                              retries=0)
    with ex:
        futures = [ex.submit(T.leaky_fold, i) for i in range(FOLDS)]
        results = []
        for f in futures:
            try:
                results.append(f.result(RESULT_LIMIT))
            except bulkhead.ResourceExhausted as exc:
                results.append(exc)
    assert isinstance(results[0], dict) and isinstance(results[1], dict)
    assert results[0]["pid"] == results[1]["pid"]
    assert isinstance(results[2], bulkhead.ResourceExhausted), results
    assert "leaky_fold(2)" in str(results[2])
    assert "pids limit" in results[2].last_attempt.get("cause", "") or \
        "thread" in results[2].last_attempt.get("cause", ""), results[2].last_attempt
    assert_all_gone(tag)


def test_leaky_folds_one_fold_per_worker_finishes_every_fold(tmp_path):
    ex, tag = tagged_executor(max_workers=1, max_jobs_per_worker=1, pids_limit=PIDS_LIMIT,
                              retries=0)
    with ex:
        futures = [ex.submit(T.leaky_fold, i) for i in range(FOLDS)]
        results = [f.result(RESULT_LIMIT) for f in futures]
        reports = [f.bulkhead_report for f in futures]
    assert [r["fold"] for r in results] == list(range(FOLDS))
    assert len({r["pid"] for r in results}) == FOLDS      # a fresh worker per fold
    for rep in reports:
        # Each fold's own peaks, measured in its worker after the task.
        assert rep["jobs_served"] == 1
        assert rep["maps"] >= 1000
        assert 20 <= rep["threads"] < 30
        assert rep["rss_peak"] >= 50 << 20
    assert_all_gone(tag)


# -- attach mode -------------------------------------------------------------------------------------


def test_attach_to_a_running_daemons_pool(start_daemon):
    import bulkhead
    d = start_daemon({"train": {"handler": "bulkhead._executor_task:handle",
                                "preload": "bulkhead._executor_task:preload", "workers": 2,
                                "retries": 1}}, unix=True)
    d.wait_ready("train")
    with bulkhead.Executor(url=d.url, pool="train") as ex:
        assert ex.max_workers == 2
        assert list(ex.map(T.square, range(20))) == [x * x for x in range(20)]
        with pytest.raises(ValueError):
            ex.submit(T.raise_value_error, "attached").result(RESULT_LIMIT)
        with pytest.raises(bulkhead.WorkerCrashed):
            ex.submit(T.segfault).result(RESULT_LIMIT)
    with pytest.raises(TypeError, match="memory_limit"):
        bulkhead.Executor(url=d.url, pool="train", memory_limit="1GiB")


def test_one_task_per_process_with_a_standby_each_task_runs_on_a_worker_already_ready():
    import bulkhead
    ex, tag = tagged_executor(max_workers=1, max_jobs_per_worker=1, standby=1, retries=0)
    with ex:
        pids = [ex.submit(T.whoami).result(RESULT_LIMIT) for _ in range(4)]
        pool = bulkhead.Client(ex.url).pool(ex.pool)
    assert len(set(pids)) == 4, pids                     # still one process per task
    # Every task after the first ran on the standby promoted when its predecessor retired.
    assert pool["counters"]["standby_promotions"] >= 3, pool["counters"]
    assert pool["counters"]["recycles"] >= 3
    assert_all_gone(tag)
