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


# -- the reseed a forked worker gets (bulkhead.zygote._reseed)

_RESEED = """
import json, os, sys
sys.path.insert(0, %(sdk)r)
import numpy, torch
%(setup)s
calls = []
torch.cuda.manual_seed_all = lambda seed: calls.append(seed)
from bulkhead.zygote import _reseed
out = []
for _ in range(2):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _reseed()
        os.write(w, json.dumps({"numpy": float(numpy.random.random()),
                                "torch": float(torch.rand(1).item()),
                                "seed": torch.initial_seed(), "cuda_calls": calls}).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        out.append(json.loads(f.read()))
print(json.dumps(out))
"""


def _reseeded_children(setup=""):
    out = subprocess.run([PYTHON, "-c", _RESEED % {"sdk": SDK, "setup": setup}],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_two_reseeded_children_draw_different_numpy_and_torch_numbers():
    pytest.importorskip("torch")
    pytest.importorskip("numpy")
    a, b = _reseeded_children()
    assert a["numpy"] != b["numpy"] and a["torch"] != b["torch"], (a, b)
    assert a["seed"] != b["seed"], (a, b)


def test_a_cpu_build_of_torch_gets_no_cuda_seeding():
    torch = pytest.importorskip("torch")
    if torch.version.cuda or getattr(torch.version, "hip", None):
        pytest.skip("a GPU build of torch")
    # torch.seed() would queue a lazy CUDA seeding (and capture a stack for it) even here.
    for child in _reseeded_children():
        assert child["cuda_calls"] == [], child


def test_a_gpu_build_of_torch_gets_its_cuda_generators_seeded_like_the_cpu_one():
    pytest.importorskip("torch")
    for child in _reseeded_children("torch.version.cuda = '12.1'"):
        assert child["cuda_calls"] == [child["seed"]], child
