"""bulkhead.celery against a real redis-server and real Celery workers (prefork, one pool
process, ``acks_late`` and ``task_reject_on_worker_lost``; tasks in celery_tasks.py).

Through the bridge a segfaulting body fails as ``bulkhead.WorkerCrashed`` with its evidence,
runs 1 + retries times, its message is acked, and the Celery pool process serves the next task.
For contrast, the same segfault in a plain task kills the pool process and, under the same
settings, is redelivered again and again without ever finishing.
"""

import gc
import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import BIN, HERE, PYTHON, REPO, tagged_pids, wait_until
from example_apps import free_port

pytest.importorskip("celery")
redis = pytest.importorskip("redis")
bulkhead = pytest.importorskip("bulkhead")

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
RESULT_WAIT_S = 90        # a result's bound: a body that crashes twice, its workers replaced
PLAIN_RUNS_SHOWN = 3      # runs of the plain task's one message that prove the redelivery


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A private redis-server on a free loopback port, no persistence."""
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip("redis-server not installed")
    directory = tmp_path_factory.mktemp("redis")
    port = free_port()
    log = open(directory / "redis.log", "wb")
    proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(directory)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        wait_until(client.ping, 20, "redis-server to answer PING")
        yield "redis://127.0.0.1:%d/0" % port, client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def tasks(broker):
    os.environ["BULKHEAD_TEST_CELERY_URL"] = broker[0]
    module = importlib.import_module("celery_tasks")
    yield module
    # Results caught in reference cycles (a raised exception's traceback) unsubscribe from the
    # backend when collected: collect them while redis-server still answers.
    gc.collect()
    module.app.close()


class CeleryWorker(object):
    """``celery worker`` for one queue: prefork, one pool process, its output in a log; its
    processes and those of its private bulkhead supervisors carry a tag, to check none is
    left."""

    def __init__(self, queue, url, directory):
        self.queue = queue
        self.tag = uuid.uuid4().hex
        self.log_path = os.path.join(str(directory), "celery-%s.log" % queue)
        env = dict(os.environ, BULKHEAD_TEST_CELERY_URL=url, BULKHEAD_TEST_TAG=self.tag,
                   BULKHEAD_BIN=BIN,
                   PYTHONPATH=os.pathsep.join([os.path.join(REPO, "python"), HERE]))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "celery", "-A", "celery_tasks", "worker", "--pool=prefork", "-c", "1",
             "--without-heartbeat", "--without-gossip", "--without-mingle", "-Q", queue,
             "-n", "%s-%s@%%h" % (queue, self.tag[:8]), "--loglevel=INFO"],
            cwd=HERE, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        """Warm shutdown (SIGTERM), SIGKILL of its group after 20 s; then nothing it started
        (the private supervisor, its workers) may be left."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)
        finally:
            self._log.close()
        wait_until(lambda: not tagged_pids(self.tag), 20,
                   "the processes of the Celery worker for %s to be gone" % self.queue)


@pytest.fixture(scope="module")
def bridge_worker(broker, tasks, tmp_path_factory):
    worker = CeleryWorker("celery", broker[0], tmp_path_factory.mktemp("celery"))
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def runs(tmp_path):
    """A directory where each run of a body leaves a file."""
    directory = tmp_path / "runs"
    directory.mkdir()
    return str(directory)


def count_runs(directory, name):
    return sum(1 for entry in os.listdir(directory) if entry.startswith(name + "-"))


def test_an_isolated_task_returns_its_value_computed_in_a_bulkhead_worker(bridge_worker, tasks,
                                                                          runs):
    celery_pid = tasks.celery_pid.delay().get(timeout=RESULT_WAIT_S)
    out = tasks.add.delay(runs, 2, 3).get(timeout=RESULT_WAIT_S)
    assert out["sum"] == 5
    assert out["pid"] not in (celery_pid, bridge_worker.proc.pid)   # not in Celery's processes
    assert count_runs(runs, "add") == 1


def test_a_segfault_is_a_typed_failure_with_evidence_run_1_plus_retries_times_and_acked(
        bridge_worker, tasks, broker, runs):
    celery_pid = tasks.celery_pid.delay().get(timeout=RESULT_WAIT_S)
    result = tasks.isolated_segfault.delay(runs)
    with pytest.raises(bulkhead.WorkerCrashed) as caught:
        result.get(timeout=RESULT_WAIT_S)
    exc = caught.value          # rebuilt by Celery from the JSON result: the evidence survived
    assert exc.outcome == "crashed" and exc.status == 502
    assert exc.last_attempt["signal"] == "SIGSEGV"
    assert "isolated_segfault: native code about to read address 0" in \
        exc.last_attempt["stderr_tail"]
    assert exc.problem["celery_task"] == {"name": "celery_tasks.isolated_segfault",
                                          "id": result.id}
    assert result.state == "FAILURE"
    assert "bulkhead.errors.WorkerCrashed" in result.traceback
    assert "signal SIGSEGV" in result.traceback
    assert count_runs(runs, "isolated_segfault") == 2      # 1 + the Executor's 1 retry

    # The Celery pool process never died: the same one serves the next tasks.
    assert tasks.celery_pid.delay().get(timeout=RESULT_WAIT_S) == celery_pid
    assert tasks.add.delay(runs, 1, 1).get(timeout=RESULT_WAIT_S)["sum"] == 2
    # The failed message was acked: nothing is left in the queue or unacked (acks_late acks a
    # message just after its result is stored, so the last one's ack may still be on its way),
    # and it never ran again.
    client = broker[1]
    wait_until(lambda: client.llen("celery") == 0 and client.hlen("unacked") == 0, 20,
               "every message acked")
    assert count_runs(runs, "isolated_segfault") == 2
    assert "WorkerLostError" not in bridge_worker.log()


def test_the_bodys_own_exception_keeps_its_type_and_is_not_retried(bridge_worker, tasks, runs):
    result = tasks.isolated_raise.delay(runs)
    with pytest.raises(KeyError, match="no such user: 42"):
        result.get(timeout=RESULT_WAIT_S)
    assert "KeyError" in result.traceback and count_runs(runs, "isolated_raise") == 1


@pytest.mark.limit(120)
def test_for_contrast_a_plain_segfault_is_redelivered_without_end(broker, tasks, runs,
                                                                  tmp_path):
    worker = CeleryWorker("plain", broker[0], tmp_path)
    try:
        started = time.monotonic()
        result = tasks.plain_segfault.delay(runs)
        wait_until(lambda: count_runs(runs, "plain_segfault") >= PLAIN_RUNS_SHOWN, 60,
                   "%d runs of the plain task's one message" % PLAIN_RUNS_SHOWN, interval=0.1)
        elapsed = time.monotonic() - started
        # Never finished: each run killed the pool process, and the message was requeued.
        assert result.state == "PENDING"
        assert worker.log().count("WorkerLostError") >= PLAIN_RUNS_SHOWN - 1
        sys.stderr.write("plain segfault: %d runs of one message in %.1f s\n"
                         % (count_runs(runs, "plain_segfault"), elapsed))
    finally:
        worker.stop()
        broker[1].delete("plain")       # the message would crash the next worker too
