"""Handlers for test_containment.py: a worker that starts a process in a session of its own
(``subprocess.Popen(..., start_new_session=True)``: out of the worker's process group, so killing
the group misses it), records that process's pid in the test's scratch directory, and then crashes
or returns.

The payload names what the worker does after starting it: ``abort`` (SIGABRT), ``segfault``
(SIGSEGV), ``return``. ``pid`` only answers the worker's pid. The pid file is
``grandchild-<payload>.pid`` with ``"<grandchild pid> <worker pid>"``.
"""

import ctypes
import os
import subprocess

_started = []  # keeps the Popen objects, so nothing reaps or warns about them


def _scratch(name):
    return os.path.join(os.environ["BULKHEAD_TEST_DIR"], name)


def preload():
    return "preloaded"


def _start_grandchild(label):
    child = subprocess.Popen(["sleep", "1000"], start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _started.append(child)
    path = _scratch("grandchild-%s.pid" % label)
    with open(path + ".tmp", "w") as f:
        f.write("%d %d" % (child.pid, os.getpid()))
    os.replace(path + ".tmp", path)  # the test never reads half a file
    return child


def grandchild(payload, ctx):
    action = payload.decode()
    if action == "pid":
        return str(os.getpid())
    _start_grandchild(action)
    if action == "abort":
        os.abort()
    if action == "segfault":
        ctypes.string_at(0)
    return "started"
