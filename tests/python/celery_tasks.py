"""The Celery app of tests/python/test_celery_bridge.py: the same segfault as an isolated task
(through ``bulkhead.celery``) and as a plain one, under ``acks_late`` and
``task_reject_on_worker_lost`` (the settings that turn a lost worker into a redelivery).

Every run of a task body leaves a file in the directory it is given, so the test counts how many
times a body really ran.  The broker and result backend come from ``BULKHEAD_TEST_CELERY_URL``;
``BULKHEAD_TEST_REJECT_ON_WORKER_LOST=0`` turns ``task_reject_on_worker_lost`` off (for
bench/celery_redelivery.py, which measures both).
"""

import ctypes
import os
import sys
import uuid

from celery import Celery

import bulkhead.celery

app = Celery("bulkhead_celery_test", broker=os.environ.get("BULKHEAD_TEST_CELERY_URL"),
             backend=os.environ.get("BULKHEAD_TEST_CELERY_URL"))
app.conf.update(
    task_serializer="json", result_serializer="json", accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=os.environ.get("BULKHEAD_TEST_REJECT_ON_WORKER_LOST", "1") == "1",
    broker_connection_retry_on_startup=True,
    task_routes={"celery_tasks.plain_segfault": {"queue": "plain"}},
    # The private supervisor's workers keep the test's tag, so the test sees that none survive.
    bulkhead_options={"max_workers": 1, "inherit_env": ["BULKHEAD_TEST_TAG"]},
)


def _count_run(runs_dir, name):
    with open(os.path.join(runs_dir, "%s-%d-%s" % (name, os.getpid(), uuid.uuid4().hex)), "w"):
        pass


def _segfault(runs_dir, name):
    _count_run(runs_dir, name)
    sys.stderr.write("%s: native code about to read address 0\n" % name)
    sys.stderr.flush()
    ctypes.string_at(0)


@app.task(base=bulkhead.celery.IsolatedTask)
def add(runs_dir, x, y):
    _count_run(runs_dir, "add")
    return {"sum": x + y, "pid": os.getpid()}


@app.task(base=bulkhead.celery.IsolatedTask)
def isolated_segfault(runs_dir):
    _segfault(runs_dir, "isolated_segfault")


@app.task(base=bulkhead.celery.IsolatedTask)
def isolated_raise(runs_dir):
    _count_run(runs_dir, "isolated_raise")
    raise KeyError("no such user: 42")


@app.task
def plain_segfault(runs_dir):
    _segfault(runs_dir, "plain_segfault")


@app.task
def celery_pid():
    """Runs in the Celery pool process itself: its pid."""
    return os.getpid()
