"""``bulkhead run``: steps as isolated, resumable processes (docs/run.md), against real processes
and real cgroups. Every wait is on state (marker files, /proc, exit), never a sleep.

The step programs are in run_step.py. Each test tags its steps with ``--env
BULKHEAD_TEST_TAG=<unique>`` so that /proc tells whether any process of a run survived.
"""

import json
import os
import signal
import subprocess
import uuid

import pytest

from conftest import BIN, PYTHON, HERE, pid_alive, tagged_pids, wait_until

STEP = os.path.join(HERE, "run_step.py")


def run(args, timeout=120):
    """Runs ``bulkhead run ARGS``; returns (exit code, parsed JSON or None, stdout, stderr)."""
    p = subprocess.run([BIN, "run", *args], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=timeout)
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    doc = None
    if "--json" in args:
        try:
            doc = json.loads(out)
        except ValueError:
            pytest.fail("stdout is not one JSON document:\n%s\nstderr:\n%s" % (out, err))
    return p.returncode, doc, out, err


def steps_by_name(doc):
    return {s["step"]: s for s in doc["steps"]}


@pytest.fixture
def tag():
    t = "run-" + uuid.uuid4().hex
    yield t
    # Nothing of any run of this test may survive it.
    wait_until(lambda: not tagged_pids(t), 10, "no tagged process left")


# -- 1. leaky cross-validation folds in miniature --------------------------------------------

def test_folds_in_one_process_exhaust_pids_but_one_process_per_fold_succeeds(tmp_path, tag):
    # 3 folds x 20 leaked threads: 61 tasks in one process, 21 per fold. Limit 50.
    common = ["--pids", "50", "--json", "--env", "BULKHEAD_TEST_TAG=" + tag]
    code, doc, _, err = run(["--steps", "all-in-one", *common, "--", PYTHON, STEP, "folds",
                             str(tmp_path), "1,2,3"])
    assert code == 1, err
    step = doc["steps"][0]
    assert step["outcome"] == "resource_exhausted", step
    assert step["evidence"]["limit"] == "pids"
    assert step["evidence"]["pids_max_events"] >= 1
    assert "fold 3/3 START" in err and "fold 2 done" in err and "fold 3 done" not in err

    code, doc, _, err = run(["--steps", "1-3", *common, "--", PYTHON, STEP, "folds",
                             str(tmp_path), "{step}"])
    assert code == 0, err
    steps = steps_by_name(doc)
    assert list(steps) == ["1", "2", "3"]
    for name, s in steps.items():
        assert s["outcome"] == "ok", s
        assert s["attempts"] == 1
        assert s["result"]["folds"] == [name]
        assert s["peaks"]["maps"] >= 1000, s["peaks"]
        assert s["peaks"]["threads"] >= 21, s["peaks"]
        assert s["peaks"]["rss_bytes"] >= 50 << 20, s["peaks"]
        assert s["peaks"]["pids"] <= 50


# -- 2. SIGKILL of the runner ---------------------------------------------------------------

def test_sigkill_of_the_runner_leaves_nothing_and_the_next_run_resumes(tmp_path, tag):
    state = tmp_path / "state"
    (tmp_path / "hold-2").write_text("")
    args = ["--steps", "1-3", "--state", str(state), "--json", "--env",
            "BULKHEAD_TEST_TAG=" + tag, "--", PYTHON, STEP, "marker", str(tmp_path), "{step}"]
    runner = subprocess.Popen([BIN, "run", *args], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (tmp_path / "started-2").exists(), 60, "step 2 running")
        step2 = int((tmp_path / "started-2").read_text())
        assert pid_alive(step2)
        runner.send_signal(signal.SIGKILL)
        assert runner.wait(timeout=10) == -signal.SIGKILL
    finally:
        if runner.poll() is None:
            runner.kill()
    wait_until(lambda: not tagged_pids(tag), 10, "the killed run's steps gone")
    # A process in the middle of dying has no environment left to read (so tagged_pids no longer
    # sees it) but is not a zombie yet: on a loaded machine that takes a moment.
    wait_until(lambda: not pid_alive(step2), 10, "step 2 (pid %d) dead" % step2)

    (tmp_path / "hold-2").unlink()
    code, doc, _, err = run(args)
    assert code == 0, err
    steps = steps_by_name(doc)
    assert steps["1"]["skipped"] and steps["1"]["result"] == {"step": "1"}
    assert "step 1: ok in an earlier run, skipped" in err and '{"step":"1"}' in err
    assert "step 2 was running in run pid" in err
    assert not steps["2"]["skipped"] and steps["2"]["outcome"] == "ok"
    assert steps["3"]["outcome"] == "ok"
    assert (tmp_path / "starts").read_text().split() == ["1", "2", "2", "3"]

    # Everything ok now: a third run runs nothing; --fresh starts over.
    code, doc, _, _ = run(args)
    assert code == 0 and all(s["skipped"] for s in doc["steps"])
    code, doc, _, _ = run(["--fresh", *args])
    assert code == 0 and not any(s["skipped"] for s in doc["steps"])
    assert (tmp_path / "starts").read_text().split() == ["1", "2", "2", "3", "1", "2", "3"]


# -- 3. Ctrl-C --------------------------------------------------------------------------------

def test_sigint_ends_the_whole_tree_records_cancelled_and_resumes(tmp_path, tag):
    state = tmp_path / "state"
    args = ["--steps", "1", "--state", str(state), "--json", "--env", "BULKHEAD_TEST_TAG=" + tag,
            "--", PYTHON, STEP, "session", str(tmp_path), "{step}"]
    runner = subprocess.Popen([BIN, "run", *args], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: (tmp_path / "started-1").exists(), 60, "step 1 running")
        grandchild = int((tmp_path / "grandchild").read_text())
        assert pid_alive(grandchild)
        runner.send_signal(signal.SIGINT)
        out, err = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 130, err
    doc = json.loads(out)
    step = doc["steps"][0]
    assert step["outcome"] == "cancelled", step
    assert doc["interrupted"] is True
    assert "SIGINT" in step["evidence"]["cause"]
    wait_until(lambda: not pid_alive(grandchild), 10, "the grandchild in its own session gone")
    assert not tagged_pids(tag)

    # Resume: the cancelled step runs again (now a quick one).
    code, doc, _, err = run(["--steps", "1", "--state", str(state), "--json", "--", PYTHON, STEP,
                             "marker", str(tmp_path), "{step}"])
    assert code == 0, err
    assert doc["steps"][0]["outcome"] == "ok" and not doc["steps"][0]["skipped"]


# -- 4. typed outcomes ------------------------------------------------------------------------

def test_memory_limit_is_oom_killed(tag):
    code, doc, _, err = run(["--steps", "1", "--memory", "64MiB", "--json", "--env",
                             "BULKHEAD_TEST_TAG=" + tag, "--", PYTHON, STEP, "oom", "200"])
    assert code == 1, err
    step = doc["steps"][0]
    assert step["outcome"] == "oom_killed", step
    assert step["evidence"]["limit"] == "memory"
    assert step["evidence"]["limit_value"] == 64 << 20
    assert step["attempts"] == 1


def test_segfault_is_crashed_with_signal_and_stderr_tail(tag):
    code, doc, _, err = run(["--steps", "1", "--json", "--env", "BULKHEAD_TEST_TAG=" + tag, "--",
                             PYTHON, STEP, "segv"])
    assert code == 1
    step = doc["steps"][0]
    assert step["outcome"] == "crashed", step
    assert step["evidence"]["signal"] == "SIGSEGV"
    assert "about to segfault" in step["evidence"]["stderr_tail"]
    assert "about to segfault" in err, "stderr is passed through too"


def test_pids_exhaustion_is_resource_exhausted_and_retried(tag):
    code, doc, _, err = run(["--steps", "1", "--pids", "20", "--retries", "1", "--json", "--env",
                             "BULKHEAD_TEST_TAG=" + tag, "--", PYTHON, STEP, "threads", "100"])
    assert code == 1, err
    step = doc["steps"][0]
    assert step["outcome"] == "resource_exhausted", step
    assert step["attempts"] == 2
    assert step["attempt_outcomes"] == ["resource_exhausted", "resource_exhausted"]
    assert step["evidence"]["limit"] == "pids"
    assert "retrying in a fresh process" in err


def test_max_maps_stops_the_step_resource_exhausted(tmp_path, tag):
    # One fold leaks 1,000 maps and holds them: over --max-maps 600, the runner stops it.
    code, doc, _, err = run(["--steps", "1", "--max-maps", "600", "--grace", "2s", "--json",
                             "--env", "BULKHEAD_TEST_TAG=" + tag, "--", PYTHON, STEP, "folds",
                             str(tmp_path), "1"])
    assert code == 1, err
    step = doc["steps"][0]
    assert step["outcome"] == "resource_exhausted", step
    assert step["evidence"]["limit"] == "maps"
    assert step["evidence"]["limit_value"] == 600
    assert step["evidence"]["largest_process_maps"] >= 600


def test_timeout_is_timed_out(tag):
    code, doc, _, err = run(["--steps", "1", "--timeout", "1s", "--grace", "2s", "--retries", "2",
                             "--json", "--env", "BULKHEAD_TEST_TAG=" + tag, "--", PYTHON, STEP,
                             "sleep"])
    assert code == 1, err
    step = doc["steps"][0]
    assert step["outcome"] == "timed_out", step
    assert step["attempts"] == 1, "timed_out is not retried"
    assert "--timeout" in step["evidence"]["cause"]


def test_a_step_shorter_than_a_sample_still_reports_its_peak_rss(tag):
    # Touches 48 MiB and exits at once: the peak comes from wait4's ru_maxrss at the reap, not
    # from a sample that may have been taken mid-exec.
    code, doc, _, err = run(["--steps", "1", "--json", "--env", "BULKHEAD_TEST_TAG=" + tag, "--",
                             PYTHON, STEP, "oom", "48"])
    assert code == 0, err
    step = doc["steps"][0]
    assert step["outcome"] == "ok", step
    assert step["peaks"]["rss_bytes"] >= 48 << 20, step


def test_stderr_and_result_that_are_not_utf8_are_reported_not_fatal(tmp_path, tag):
    state = str(tmp_path / "state")
    args = ["--steps", "1", "--json", "--state", state, "--env", "BULKHEAD_TEST_TAG=" + tag, "--",
            PYTHON, STEP, "garbage"]
    code, doc, _, err = run(args)
    assert code == 1, err
    step = doc["steps"][0]
    assert step["outcome"] == "handler_error", step
    assert "not utf-8" in step["evidence"]["stderr_tail"]
    assert "\ufffd" in step["evidence"]["stderr_tail"]
    # The next run reruns it (not ok) over the row stored with that text: still no crash.
    code, doc, _, err = run(args)
    assert code == 1 and doc["steps"][0]["outcome"] == "handler_error", err


def test_own_nonzero_exit_is_handler_error_never_retried(tag):
    code, doc, _, err = run(["--steps", "1", "--retries", "2", "--json", "--env",
                             "BULKHEAD_TEST_TAG=" + tag, "--", PYTHON, STEP, "exit", "3"])
    assert code == 1, err
    step = doc["steps"][0]
    assert step["outcome"] == "handler_error", step
    assert step["attempts"] == 1
    assert step["evidence"]["exit_code"] == 3
    assert "failed on its own" in step["evidence"]["stderr_tail"]


def test_parallel_runs_steps_at_once(tmp_path, tag):
    # a waits for b's marker and b for a's: both can end ok only when they overlap (c pairs
    # with a, whose marker is there by then).
    wrapper = tmp_path / "pair.sh"
    wrapper.write_text('#!/bin/sh\nif [ "$1" = a ]; then o=b; else o=a; fi\n'
                       'exec %s %s overlap %s "$1" "$o"\n' % (PYTHON, STEP, tmp_path))
    wrapper.chmod(0o755)
    code, doc, _, err = run(["--steps", "a,b,c", "--parallel", "2", "--json", "--timeout", "90s",
                             "--env", "BULKHEAD_TEST_TAG=" + tag, "--", str(wrapper), "{step}"],
                            timeout=150)
    steps = steps_by_name(doc)
    assert steps["a"]["outcome"] == "ok" and steps["b"]["outcome"] == "ok", err
    assert steps["c"]["outcome"] == "ok"
    assert code == 0


def test_step_substitution_env_and_result(tmp_path, tag):
    script = tmp_path / "show.py"
    script.write_text(
        "import json, os, sys\n"
        "print('argv', sys.argv[1:], 'env', os.environ['BULKHEAD_STEP'], os.environ['K'],\n"
        "      os.environ.get('OMP_NUM_THREADS'))\n"
        "json.dump({'argv': sys.argv[1:], 'step': os.environ['BULKHEAD_STEP']},\n"
        "          open(os.environ['BULKHEAD_STEP_RESULT'], 'w'))\n")
    code, doc, _, err = run(["--steps", "x,y", "--threads", "3", "--env", "K=V", "--json",
                             "--env", "BULKHEAD_TEST_TAG=" + tag, "--", PYTHON, str(script),
                             "--fold", "{step}", "f-{step}.csv"])
    assert code == 0, err
    steps = steps_by_name(doc)
    assert steps["x"]["result"] == {"argv": ["--fold", "x", "f-x.csv"], "step": "x"}
    assert steps["y"]["result"]["step"] == "y"
    # with --json the steps' stdout goes to stderr, so stdout holds the document only
    assert "argv ['--fold', 'x', 'f-x.csv'] env x V 3" in err


def test_json_schema(tag):
    code, doc, _, _ = run(["--steps", "1", "--json", "--env", "BULKHEAD_TEST_TAG=" + tag, "--",
                           "/bin/true"])
    assert code == 0
    assert set(doc) >= {"exit_code", "interrupted", "max_map_count", "cgroups", "steps"}
    assert doc["max_map_count"] > 0
    step = doc["steps"][0]
    assert set(step) >= {"step", "outcome", "skipped", "attempts", "attempt_outcomes",
                         "duration_ms", "peaks", "evidence", "result"}
    assert set(step["peaks"]) == {"rss_bytes", "threads", "maps", "pids"}
    assert step["result"] is None


def test_table_without_json(tag):
    code, _, out, _ = run(["--steps", "1-2", "--env", "BULKHEAD_TEST_TAG=" + tag, "--",
                           "/bin/sh", "-c", "echo hello-$BULKHEAD_STEP"])
    assert code == 0
    assert "hello-1" in out and "hello-2" in out
    assert "outcome" in out and "peak_rss" in out


@pytest.mark.parametrize("args, message", [
    (["--steps", "3-1", "--", "/bin/true"], "backwards"),
    (["--steps", "a,,b", "--", "/bin/true"], "empty item"),
    (["--steps", "1", "--", "/no/such/program"], "command not found"),
    (["--steps", "1", "--memory", "lots", "--", "/bin/true"], "--memory"),
    (["--steps", "1", "--timeout", "soon", "--", "/bin/true"], "--timeout"),
    (["--steps", "1", "--parallel", "0", "--", "/bin/true"], "--parallel"),
    (["--steps", "1", "--profile", "jax", "--", "/bin/true"], "--profile"),
    (["--steps", "1", "--env", "NOEQUALS", "--", "/bin/true"], "--env"),
    (["--", "/bin/true"], "--steps"),
])
def test_bad_arguments_exit_2(args, message):
    code, _, _, err = run(args)
    assert code == 2
    assert message in err
