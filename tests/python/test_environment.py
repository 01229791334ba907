"""The worker environment is built, not inherited: profiles, threads, GPU slots, whitelist."""

import os

import pytest

from conftest import wait_until


def test_worker_sees_the_built_environment_and_not_the_supervisors(start_daemon, monkeypatch):
    monkeypatch.setenv("SUPERVISOR_ONLY_SECRET", "hunter2")
    monkeypatch.setenv("OMP_NUM_THREADS", "64")
    d = start_daemon({"env": {"handler": "report_environment", "workers": 1,
                              "profile": ["torch"], "threads": 2,
                              "env": {"POOL_VAR": "yes"}}})
    d.wait_ready("env")
    r = d.job("env", b"")
    assert r.status == 200, r
    env = r.json["env"]
    assert env["OMP_NUM_THREADS"] == "2" and env["MKL_NUM_THREADS"] == "2"
    assert env["POOL_VAR"] == "yes"
    assert "SUPERVISOR_ONLY_SECRET" not in env
    assert env["PATH"] == os.environ["PATH"]


def test_torch_uses_the_configured_thread_count(start_daemon):
    pytest.importorskip("torch")
    d = start_daemon({"t": {"handler": "report_environment", "workers": 1, "profile": "torch",
                            "threads": 2, "startup_timeout": "60s"}})
    d.wait_ready("t")
    r = d.job("t", b"torch", timeout=60)
    assert r.status == 200, r
    assert r.json["torch_threads"] == 2


def _devices_by_pid(d, pool):
    out = {}
    for w in d.workers(pool):
        with open("/proc/%d/environ" % w["pid"], "rb") as f:
            env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        out[w["pid"]] = (w["slot"], env[b"CUDA_VISIBLE_DEVICES"].decode())
    return out


def test_gpu_slot_is_kept_across_replacements(start_daemon):
    d = start_daemon({"g": {"handler": "echo", "workers": 2, "gpus": [4, 7]}})
    d.wait_ready("g")
    before = _devices_by_pid(d, "g")
    assert sorted(before.values()) == [(0, "4"), (1, "7")], before
    victim = next(pid for pid, (slot, _) in before.items() if slot == 1)
    os.kill(victim, 9)
    d.wait_replaced("g", [victim])
    d.wait_ready("g")
    after = _devices_by_pid(d, "g")
    assert victim not in after
    assert sorted(after.values()) == [(0, "4"), (1, "7")], "slot 1 must keep GPU 7: %r" % after


def test_bulkhead_env_prints_each_variable_with_its_source(tmp_path):
    import subprocess
    cfg = tmp_path / "b.toml"
    cfg.write_text('[pool.p]\nhandler = "m:f"\nprofile = "tensorflow"\nthreads = 3\n'
                   'gpus = [0, 1]\n')
    binary = os.environ.get("BULKHEAD_BIN") or os.path.join(
        os.path.dirname(__file__), "..", "..", "build", "bulkhead")
    out = subprocess.run([binary, "env", "p", "-c", str(cfg), "--slot", "1"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    lines = dict(l.split("=", 1) for l in out.stdout.splitlines() if not l.startswith("#"))
    assert lines["TF_NUM_INTRAOP_THREADS"] == "3\t# threads"
    assert lines["CUDA_VISIBLE_DEVICES"] == "1\t# gpu slot 1"
    assert lines["TF_FORCE_GPU_ALLOW_GROWTH"] == "true\t# profile tensorflow"
