"""GPU readings through NVML, on a machine without a GPU: the daemon loads the fake NVML library
the build makes (tests/fake_nvml/, build/libfake_nvml.so) through `nvml_library`, exactly as it
loads libnvidia-ml.so.1, and the fake answers from a fixture file the test rewrites while the
daemon runs. And a handler raising PyTorch's own CUDA out-of-memory error (the class exists on a
CPU-only build). What a real GPU adds needs a GPU machine to check.
"""

import os
import subprocess
import threading

from conftest import BIN, wait_until

FAKE_NVML = os.path.join(os.path.dirname(os.path.abspath(BIN)), "libfake_nvml.so")
R = "resource_handlers:"
GIB = 1 << 30


def _gpu_of(d, pool):
    """{worker id: gpu_memory_bytes of its latest sample (None when absent)}."""
    return {w["id"]: w.get("sample", {}).get("gpu_memory_bytes")
            for w in d.get_json("/v1/pools/" + pool)["workers"]}


def test_gpu_memory_is_attributed_to_each_worker_and_what_it_started(start_daemon, tmp_path,
                                                                      monkeypatch):
    assert os.path.exists(FAKE_NVML), "the build makes %s" % FAKE_NVML
    fixture = tmp_path / "nvml.txt"
    fixture.write_text("device 0 85899345920 0 0\n")
    monkeypatch.setenv("FAKE_NVML_FIXTURE", str(fixture))
    d = start_daemon({"gpu": {"handler": R + "start_child", "workers": 2, "gpus": [0],
                              "sample_interval": "100ms"},
                      "cpu": {"handler": "echo", "sample_interval": "100ms"}},
                     server={"nvml_library": FAKE_NVML})
    assert "GPU memory per worker from NVML (%s), driver 0.0.fake, 1 device(s)" % FAKE_NVML \
        in d.log(), d.log()
    d.wait_ready("gpu")
    wait_until(lambda: set(_gpu_of(d, "gpu").values()) == {0}, 30, "a first GPU reading")
    started = d.job("gpu", b"")
    assert started.status == 200, started
    child, holder = started.json["pid"], started.json["worker_pid"]
    [other] = [int(w["pid"]) for w in d.workers("gpu") if int(w["pid"]) != holder]
    # The worker holds 1 GiB, its helper process 256 MiB, the other worker 5 bytes; a process of
    # no worker's 7 bytes.
    fixture.write_text("device 0 85899345920 %d 60\n" % (GIB + (GIB >> 2) + 12)
                       + "process 0 %d %d\n" % (holder, GIB)
                       + "process 0 %d %d\n" % (child, GIB >> 2)
                       + "process 0 %d 5\n" % other
                       + "process 0 %d 7\n" % os.getpid())
    names = {int(w["pid"]): w["id"] for w in d.workers("gpu")}
    want = {names[holder]: GIB + (GIB >> 2), names[other]: 5}
    wait_until(lambda: _gpu_of(d, "gpu") == want, 30,
               "GPU memory per worker %s (seen %s)" % (want, _gpu_of(d, "gpu")))
    # A pool without gpus reads none.
    assert set(_gpu_of(d, "cpu").values()) == {None}
    status = subprocess.run([BIN, "status", "--url", d.url], capture_output=True, text=True,
                            timeout=30)
    assert status.returncode == 0, status
    header = [l for l in status.stdout.splitlines() if l.startswith("WORKER")][0]
    assert header.split() == ["WORKER", "PID", "STATE", "READY", "JOBS", "AGE", "RSS",
                              "THREADS", "MAPS", "FDS", "GPU", "RECYCLE"], header
    row = [l for l in status.stdout.splitlines() if l.startswith(names[holder] + " ")][0]
    assert row.split()[10] == "1280.0MiB", status.stdout
    metrics = d.http("GET", "/metrics").body.decode()
    line = 'bulkhead_worker_gpu_memory_bytes{pool="gpu",worker="%s"} %d' % (names[holder],
                                                                          GIB + (GIB >> 2))
    assert line in metrics, [m for m in metrics.splitlines() if "gpu_memory" in m]
    # The history a dashboard draws carries it too.
    history = [w for w in d.get_json("/v1/pools/gpu")["workers"] if int(w["pid"]) == holder][0]
    assert any(s.get("gpu_memory_bytes") == GIB + (GIB >> 2) for s in history["history"])
    # Every attempt in a GPU pool carries the GPU memory its worker held (here: none yet).
    [first] = [o for o in d.get_json("/v1/outcomes")["outcomes"]
               if o["job"] == started.headers["x-bulkhead-job"]]
    assert first["attempts"][0]["last_sample"]["gpu_memory_bytes"] == 0, first
    # Memory released: the next reading says so.
    fixture.write_text("device 0 85899345920 0 0\n")
    wait_until(lambda: set(_gpu_of(d, "gpu").values()) == {0}, 30, "GPU memory back to 0")


def test_without_nvml_gpu_readings_are_off_and_said_once(start_daemon, tmp_path):
    d = start_daemon({"gpu": {"handler": "echo", "gpus": [0], "sample_interval": "100ms"}},
                     server={"nvml_library": str(tmp_path / "libnvidia-ml.so.1")})
    d.wait_ready("gpu")
    assert d.job("gpu", b"still works").body == b"still works"
    lines = [l for l in d.log().splitlines() if "GPU readings are off" in l]
    assert len(lines) == 1 and "cannot be loaded" in lines[0] and "nvml_library" in lines[0], \
        d.log()
    wait_until(lambda: all(w.get("sample") for w in d.workers("gpu")), 30, "a sample")
    assert set(_gpu_of(d, "gpu").values()) == {None}


def _fake_nvml(tmp_path, monkeypatch):
    fixture = tmp_path / "nvml.txt"
    fixture.write_text("device 0 85899345920 0 0\n")
    monkeypatch.setenv("FAKE_NVML_FIXTURE", str(fixture))
    return fixture


def _holding(fixture, pid, nbytes):
    fixture.write_text("device 0 85899345920 %d 90\nprocess 0 %d %d\n" % (nbytes, pid, nbytes))


def test_a_worker_over_max_gpu_memory_is_recycled_between_jobs(start_daemon, tmp_path,
                                                               monkeypatch):
    fixture = _fake_nvml(tmp_path, monkeypatch)
    d = start_daemon({"gpu": {"handler": "echo", "gpus": [0], "max_gpu_memory": "1GiB",
                              "sample_interval": "100ms"}},
                     server={"nvml_library": FAKE_NVML})
    [worker] = d.wait_ready("gpu")
    pid = int(worker["pid"])
    _holding(fixture, pid, 2 * GIB)
    d.wait_replaced("gpu", pid, timeout=30)
    pool = d.get_json("/v1/pools/gpu")
    assert pool["recycles_by_cause"] == {"gpu_memory": 1}, pool["recycles_by_cause"]
    assert any(e["kind"] == "recycled" and "gpu_memory" in e["detail"] for e in pool["events"]), \
        pool["events"]
    assert d.job("gpu", b"after").body == b"after"


def test_a_busy_worker_over_gpu_memory_limit_ends_its_job_resource_exhausted(start_daemon,
                                                                            tmp_path,
                                                                            monkeypatch):
    fixture = _fake_nvml(tmp_path, monkeypatch)
    d = start_daemon({"gpu": {"handler": "slow", "gpus": [0], "gpu_memory_limit": "1GiB",
                              "retries": 0, "job_timeout": "60s", "sample_interval": "100ms"}},
                     server={"nvml_library": FAKE_NVML})
    [worker] = d.wait_ready("gpu")
    pid = int(worker["pid"])
    answer = {}
    caller = threading.Thread(target=lambda: answer.update(r=d.job("gpu", b"sleep:30", timeout=60)))
    caller.start()
    wait_until(lambda: any(w["state"] == "busy" for w in d.workers("gpu")), 30, "the job running")
    _holding(fixture, pid, 2 * GIB)
    caller.join(60)
    r = answer["r"]
    assert r.status == 502 and r.outcome == "resource_exhausted", r
    [attempt] = r.json["attempts"]
    assert attempt["limit"] == "gpu_memory" and attempt["limit_value"] == GIB, attempt
    assert "over gpu_memory_limit (1024 MiB)" in attempt["cause"], attempt
    assert attempt["last_sample"]["gpu_memory_bytes"] == 2 * GIB, attempt
    assert attempt["pid"] == pid
    d.wait_replaced("gpu", pid, timeout=30)


def test_cuda_out_of_memory_is_resource_exhausted_and_retried_on_a_fresh_worker(start_daemon):
    d = start_daemon({"echo": {"handler": "echo"}, "gpu": {
        "handler": R + "cuda_out_of_memory", "retries": 1, "startup_timeout": "60s"}})
    [worker] = d.wait_ready("gpu", 1)
    r = d.job("gpu", b"x", timeout=120)
    assert r.status == 502 and r.outcome == "resource_exhausted", r
    body = r.json
    assert len(body["attempts"]) == 2, body["attempts"]    # retried: it is not the job's bug
    pids = [a["pid"] for a in body["attempts"]]
    assert pids[0] == int(worker["pid"]) and pids[1] != pids[0], pids
    for a in body["attempts"]:
        assert a["outcome"] == "resource_exhausted", a
        assert a["limit"] == "gpu_memory", a
        assert a["cause"].startswith("GPU memory exhausted: "), a
        assert "CUDA out of memory" in a["cause"], a
        assert a["error"]["type"] == "torch.cuda.OutOfMemoryError", a["error"]
    # Each worker that hit it is replaced (its allocator's cache goes with it).
    d.wait_replaced("gpu", pids[1])
    d.assert_serving("echo")
