"""What one segfaulting Celery task costs, plain against through bulkhead.celery.

Starts a private redis-server (free loopback port, no persistence) and, per case, a real Celery
worker (prefork, one pool process, ``acks_late``; tasks from tests/python/celery_tasks.py), sends
ONE message whose body segfaults, and watches for WINDOW seconds: how many times the body ran
(each run leaves a file), the task's final state and what the client's ``AsyncResult.get()``
raised.  Cases:

- plain, ``task_reject_on_worker_lost=True``: the pool process dies, the message is requeued,
  the next pool process runs it again, for ever;
- plain, ``task_reject_on_worker_lost=False``: one run, ``WorkerLostError`` (no evidence);
- bulkhead.celery (``IsolatedTask``) with ``task_reject_on_worker_lost=True``: 1 + retries runs,
  ``bulkhead.WorkerCrashed`` with the signal and stderr tail, the message acked.

Usage: /usr/bin/python3 bench/celery_redelivery.py [--window 60] (needs the packages of
scripts/deps.sh and build/bulkhead, or $BULKHEAD_BIN).
"""

import argparse
import gc
import importlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTS = os.path.join(ROOT, "tests", "python")
PYTHON = "/usr/bin/python3"
sys.path[:0] = [os.path.join(ROOT, "python"), TESTS, HERE]
from benchlib import machine_line  # noqa: E402
from celery.exceptions import TimeoutError as ResultTimeout  # noqa: E402

CASES = [("plain, reject_on_worker_lost=True", "plain_segfault", "1"),
         ("plain, reject_on_worker_lost=False", "plain_segfault", "0"),
         ("bulkhead.celery, reject_on_worker_lost=True", "isolated_segfault", "1")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_worker(url, queue, reject, log_path):
    env = dict(os.environ, BULKHEAD_TEST_CELERY_URL=url, BULKHEAD_TEST_REJECT_ON_WORKER_LOST=reject,
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "python"), TESTS]))
    env.setdefault("BULKHEAD_BIN", os.path.join(ROOT, "build", "bulkhead"))
    log = open(log_path, "wb")
    return subprocess.Popen(
        [PYTHON, "-m", "celery", "-A", "celery_tasks", "worker", "--pool=prefork", "-c", "1",
         "--without-heartbeat", "--without-gossip", "--without-mingle", "-Q", queue,
         "--loglevel=INFO"], cwd=TESTS, env=env, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True), log


def stop_worker(proc, log):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    log.close()


def run_case(tasks, url, redis_client, label, task_name, reject, window, directory):
    runs = tempfile.mkdtemp(dir=directory)
    queue = "plain" if task_name.startswith("plain") else "celery"
    proc, log = start_worker(url, queue, reject, os.path.join(directory, "%s.log" % task_name))
    try:
        tasks.celery_pid.apply_async(queue=queue).get(timeout=120)    # the worker is up
        started = time.monotonic()
        result = getattr(tasks, task_name).delay(runs)
        raised = finished = None
        try:
            result.get(timeout=window)
        except ResultTimeout:
            pass                                      # still not finished after the window
        except Exception as exc:  # noqa: BLE001 - what the client sees is the measurement
            raised = exc
            finished = time.monotonic() - started
            time.sleep(max(0.0, window - finished))   # the rest of the window: any redelivery?
        count = len(os.listdir(runs))
        what = ("%s: %s" % (type(raised).__name__, str(raised).splitlines()[0][:150])
                if raised is not None else "no answer")
        print("%-46s runs in %ds: %3d   state: %-8s  failed after: %s\n    get(): %s"
              % (label, window, count, result.state,
                 "%.1f s" % finished if finished is not None else "never", what), flush=True)
    finally:
        stop_worker(proc, log)
        redis_client.delete(queue, "unacked", "unacked_index")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=60)
    args = parser.parse_args()
    import redis
    directory = tempfile.mkdtemp(prefix="bh-celery-bench-")
    port = free_port()
    redis_proc = subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server",
                                   "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", directory],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        url = "redis://127.0.0.1:%d/0" % port
        os.environ["BULKHEAD_TEST_CELERY_URL"] = url
        tasks = importlib.import_module("celery_tasks")
        print(machine_line())
        for label, task_name, reject in CASES:
            run_case(tasks, url, client, label, task_name, reject, args.window, directory)
        gc.collect()        # results in reference cycles unsubscribe while redis still answers
        tasks.app.close()
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
