"""Handlers for test_systemd_notify.py: a preload that waits for the test's go-ahead, so the
test decides when the pool's worker becomes READY."""

import os
import time


def wait_for_gate():
    gate = os.path.join(os.environ["BULKHEAD_TEST_DIR"], "gate")
    while not os.path.exists(gate):
        time.sleep(0.02)
    return None


def echo(payload, ctx):
    return bytes(payload)
