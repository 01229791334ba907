"""bulkhead.zygote's fork-safety check, run in a fresh interpreter per case (the check looks at
the whole process, and pytest's own process may have threads)."""

import json
import subprocess
import sys

import pytest

PYTHON = "/usr/bin/python3"
SDK = __import__("os").path.join(__import__("os").path.dirname(__file__), "..")


def _hazards(setup):
    code = ("import sys, json; sys.path.insert(0, %r)\n%s\n"
            "from bulkhead.zygote import fork_hazards\n"
            "print(json.dumps(fork_hazards(settle=0.05)))" % (SDK, setup))
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_a_plain_interpreter_is_safe_to_fork():
    assert _hazards("") == []


def test_a_live_thread_is_a_hazard_that_names_init():
    found = _hazards("import threading\nev = threading.Event()\n"
                     "threading.Thread(target=ev.wait, daemon=True).start()")
    assert len(found) == 1
    assert "1 thread besides the main one" in found[0] and "`init`" in found[0]


def test_a_thread_that_ends_within_the_settle_time_is_not_a_hazard():
    assert _hazards("import threading, time\n"
                    "threading.Thread(target=time.sleep, args=(0.01,)).start()") == []


def test_importing_torch_is_safe_but_an_openmp_pool_is_not():
    pytest.importorskip("torch")
    assert _hazards("import torch") == []
    found = _hazards("import torch\ntorch.set_num_threads(2)\n"
                     "(torch.ones(64, 64) @ torch.ones(64, 64)).sum()")
    assert found and "thread" in found[0], found


def test_the_zygote_exits_2_without_a_control_socket():
    out = subprocess.run([PYTHON, "-m", "bulkhead.zygote"], capture_output=True, text=True,
                         timeout=30, cwd=SDK, env={"BULKHEAD_CONTROL_FD": "57"})
    assert out.returncode == 2, out
    assert "control fd 57" in out.stderr
