"""Celery app for bench/e2e_peers.py (optional peer: Debian's python3-celery, python3-redis and
redis-server).  Broker and result backend: the Redis at $BENCH_CELERY_REDIS (a unix socket path),
pickle serialization (payloads are bytes).  With BENCH_CELERY_CNN=1 every prefork child builds
the model when it starts (worker_process_init), like a pool initializer."""

import os

from celery import Celery
from celery.signals import worker_process_init

import bench_handlers as bh

_url = "redis+socket://" + os.environ.get("BENCH_CELERY_REDIS", "/tmp/redis.sock")
app = Celery("bench_celery", broker=_url, backend=_url)
app.conf.update(task_serializer="pickle", result_serializer="pickle",
                accept_content=["pickle"], result_accept_content=["pickle"],
                worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@worker_process_init.connect
def _init(**_):
    if os.environ.get("BENCH_CELERY_CNN") == "1":
        bh.init_model()


@app.task(name="echo")
def echo(payload):
    return payload


@app.task(name="cnn")
def cnn(payload):
    return bh.cnn_global(payload)


@app.task(name="pid")
def pid():
    return os.getpid()
