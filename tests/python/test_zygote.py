"""mode = "zygote": workers forked from a preloaded template process, fork-safety refusals,
fallback to spawn, zygote death and restart, limits and environment of forked workers."""

import os
import signal
import threading
import time

import pytest

from conftest import pid_alive, wait_until

Z = "zygote_handlers:"


def _zygote_pool(**keys):
    pool = {"handler": Z + "describe", "preload": Z + "preload_blob", "mode": "zygote",
            "workers": 2}
    pool.update(keys)
    return pool


def _zygote(d, pool):
    return d.pool_status(pool)["zygote"]


def _describe(d, pool, payload=b"x"):
    r = d.job(pool, payload)
    assert r.status == 200, r
    return r.json


def _spares(d, pool):
    """Children of the supervisor that are neither workers nor the zygote: forked spares."""
    known = {int(w["pid"]) for w in d.workers(pool) if w.get("pid")}
    zygote = _zygote(d, pool)["pid"]
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in known or int(entry) == zygote:
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == d.proc.pid and fields[0] != "Z":
            out.append(int(entry))
    return out


def _events(d, pool, kind):
    return [e for e in d.pool_status(pool)["events"] if e["kind"] == kind]


def test_forked_workers_share_the_preloaded_object_and_belong_to_the_supervisor(start_daemon):
    d = start_daemon({"z": _zygote_pool(init=Z + "mark_init")})
    workers = d.wait_ready("z")
    zygote = _zygote(d, "z")
    assert zygote["state"] == "ready" and zygote["forked"] == 2, zygote
    seen = {}
    for _ in range(20):
        info = _describe(d, "z")
        seen[info["pid"]] = info
        if len(seen) == 2:
            break
    # Busy workers are skipped by dispatch, so two quick jobs may land on the same worker.
    assert {int(w["pid"]) for w in workers} >= set(seen), (workers, seen)
    for pid, info in seen.items():
        assert info["zygote_pid"] == zygote["pid"] != pid
        # Reparented to the supervisor (a child subreaper), in its own process group.
        assert info["ppid"] == d.proc.pid, info
        assert info["pgid"] == pid, info
        # init ran in the worker itself, after the fork, with one thread.
        assert info["init"]["pid"] == pid and info["init"]["threads"] == 1, info
        # The 64 MiB preloaded object is shared with the zygote, not copied: PSS counts shared
        # pages by share, so it is well below RSS.
        assert info["rss_kb"] > 64 * 1024, info
        assert info["pss_kb"] < info["rss_kb"] - 16 * 1024, info
    # One spare forked ahead for the next replacement (made right after each hand-out).
    wait_until(lambda: len(_spares(d, "z")) == 1, 10, "exactly one spare")
    ids = {info["blob_id"] for info in seen.values()}
    assert len(ids) == 1, "the preloaded object moved: %r" % ids
    if len(seen) == 2:
        a, b = seen.values()
        assert a["random"] != b["random"], "forked workers share a random stream"


def test_a_crashed_forked_worker_is_reported_and_replaced_by_a_new_fork(start_daemon):
    d = start_daemon({"z": _zygote_pool(workers=1, poison_after=0)})
    [worker] = d.wait_ready("z")
    zygote_pid = _zygote(d, "z")["pid"]
    r = d.job("z", b"abort")
    assert r.status == 502, r
    body = r.json
    assert body["outcome"] == "crashed", body
    attempt = body["attempts"][0]
    assert attempt["signal"] == "SIGABRT" and attempt["pid"] == int(worker["pid"]), attempt
    assert "describe" in attempt["stacks"], attempt["stacks"]   # faulthandler of the forked worker
    [new_pid] = d.wait_replaced("z", [int(worker["pid"])])
    zygote = _zygote(d, "z")
    assert zygote["pid"] == zygote_pid and zygote["forked"] == 2, zygote
    info = _describe(d, "z")
    assert info["pid"] == new_pid and info["ppid"] == d.proc.pid
    ready = [e for e in _events(d, "z", "ready") if e["worker"] == "z-2"]
    assert ready, d.pool_status("z")["events"]


@pytest.mark.limit(90)
def test_a_thread_pool_in_preload_is_refused_with_what_to_move(start_daemon):
    pytest.importorskip("torch")
    d = start_daemon({"z": {"handler": Z + "torch_job", "preload": Z + "preload_torch_pool",
                            "mode": "zygote", "workers": 1, "startup_timeout": "60s"}})
    # Refused as soon as the zygote is asked for a worker: no hung worker, no startup_timeout.
    zygote = wait_until(lambda: (lambda z: z if z["state"] == "refused" else None)(
        _zygote(d, "z")), 45, "the zygote to refuse")
    assert "thread" in zygote["refusal"] and "`init`" in zygote["refusal"], zygote
    assert zygote["pid"] is None
    r = d.job("z", b"x")
    assert r.status == 503, r
    assert r.json["outcome"] == "unavailable", r.json
    assert "refuses to fork" in r.json["detail"] and "init" in r.json["detail"], r.json
    assert not [w for w in d.workers("z") if w.get("pid")], d.workers("z")


def test_the_next_spare_waits_for_the_new_worker_but_not_for_a_slow_init(start_daemon):
    # The zygote forks the next spare once the worker it handed out has answered its first job,
    # so that the fork does not compete with it for the CPU; an init still running after 0.5 s
    # does not hold it up.
    d = start_daemon({"z": _zygote_pool(workers=1, init=Z + "init_slow",
                                        startup_timeout="30s")})
    wait_until(lambda: [w for w in d.workers("z") if w.get("pid")], 10, "the worker forked")
    early = []
    while True:
        spares = _spares(d, "z")
        [worker] = d.workers("z")           # read after the spares: its age bounds theirs
        if worker["age_s"] >= 0.3:
            break
        early.append(spares)
        time.sleep(0.05)
    assert all(s == [] for s in early), early
    wait_until(lambda: len(_spares(d, "z")) == 1, 4, "a spare while the worker runs init")
    [worker] = d.workers("z")
    assert worker["state"] == "starting", worker
    d.wait_ready("z", timeout=20)
    assert len(_spares(d, "z")) == 1


@pytest.mark.limit(90)
def test_forked_workers_do_not_share_numpy_or_torch_random_streams(start_daemon):
    pytest.importorskip("torch")
    pytest.importorskip("numpy")
    d = start_daemon({"z": {"handler": Z + "random_streams", "preload": Z + "preload_torch_numpy",
                            "mode": "zygote", "workers": 2, "startup_timeout": "60s"}})
    workers = d.wait_ready("z", timeout=60)
    # Busy workers are skipped by dispatch: two jobs at once (each 0.2 s) use both workers.
    seen = {}
    for _ in range(5):
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(d.job("z", b"x")))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in answers:
            assert r.status == 200, r
            seen.setdefault(r.json["pid"], r.json)
        if len(seen) == 2:
            break
    assert set(seen) == {int(w["pid"]) for w in workers}, (workers, seen)
    a, b = seen.values()
    # Without the reseed both would draw the zygote's next numbers.
    for stream in ("random", "numpy", "torch"):
        assert a[stream] != b[stream], "forked workers share the %s stream: %r" % (stream, seen)


@pytest.mark.limit(90)
def test_the_same_thread_setup_in_init_serves(start_daemon):
    pytest.importorskip("torch")
    d = start_daemon({"z": {"handler": Z + "torch_job", "preload": Z + "preload_torch_only",
                            "init": Z + "init_torch_threads", "mode": "zygote", "workers": 2,
                            "startup_timeout": "60s"}})
    d.wait_ready("z", timeout=60)
    r = d.job("z", b"x", timeout=60)
    assert r.status == 200, r
    assert r.json == {"preloaded": "model+init", "threads": 2, "value": 128.0 ** 3}, r.json


@pytest.mark.limit(90)
def test_zygote_fallback_spawn_starts_workers_by_exec_after_a_refusal(start_daemon):
    d = start_daemon({"z": {"handler": Z + "describe", "preload": Z + "preload_background_thread",
                            "mode": "zygote", "zygote_fallback": "spawn", "workers": 1}})
    [worker] = d.wait_ready("z", timeout=30)
    zygote = _zygote(d, "z")
    assert zygote["spawning_instead"] and "1 thread besides" in zygote["refusal"], zygote
    info = _describe(d, "z")
    assert info["zygote_pid"] is None and info["pid"] == int(worker["pid"])
    assert _events(d, "z", "zygote_fallback"), d.pool_status("z")["events"]


def test_a_dead_zygote_is_restarted_and_workers_keep_serving(start_daemon):
    d = start_daemon({"z": _zygote_pool(workers=1)})
    [worker] = d.wait_ready("z")
    first = _zygote(d, "z")
    os.kill(first["pid"], signal.SIGKILL)
    again = wait_until(lambda: (lambda z: z if z["state"] == "ready" and z["pid"] != first["pid"]
                                else None)(_zygote(d, "z")), 20, "a new zygote")
    assert again["starts"] == 2 and again["deaths"] == 1, again
    # The dead zygote's spare saw EOF and left; the new zygote made one of its own.
    wait_until(lambda: len(_spares(d, "z")) == 1, 10, "exactly one spare")
    died = _events(d, "z", "zygote_died")
    assert died and "SIGKILL" in died[-1]["detail"], died
    # The worker it forked earlier never noticed.
    assert _describe(d, "z")["pid"] == int(worker["pid"])
    # And the new zygote forks the next replacement.
    os.kill(int(worker["pid"]), signal.SIGKILL)
    d.wait_replaced("z", [int(worker["pid"])])
    assert _describe(d, "z")["zygote_pid"] == again["pid"]


def test_a_failing_preload_makes_the_pool_unavailable_with_its_error(start_daemon):
    d = start_daemon({"z": _zygote_pool(preload=Z + "preload_raises", workers=1)})
    r = wait_until(lambda: (lambda r: r if r.status == 503 else None)(d.job("z", b"x")), 30,
                   "the pool to give up")
    assert r.json["outcome"] == "unavailable", r.json
    assert "weights file missing" in r.json["detail"], r.json
    assert _events(d, "z", "zygote_died"), d.pool_status("z")["events"]


def test_a_hung_preload_is_killed_at_the_startup_timeout(start_daemon):
    d = start_daemon({"z": _zygote_pool(preload=Z + "preload_hangs", workers=1,
                                        startup_timeout="1s")})
    died = wait_until(lambda: _events(d, "z", "zygote_died"), 20, "the hung zygote to be killed")
    assert "startup_timeout" in died[0]["detail"], died
    r = wait_until(lambda: (lambda r: r if r.status == 503 else None)(d.job("z", b"x")), 30,
                   "the pool to give up")
    assert "startup_timeout" in r.json["detail"], r.json


@pytest.mark.limit(60)
def test_forked_workers_get_their_own_cgroup_and_are_oom_killed_alone(start_daemon):
    d = start_daemon({"z": _zygote_pool(workers=1, memory_limit="256MiB"),
                      "echo": {"handler": "echo"}})
    d.wait_ready("z")
    info = _describe(d, "z")
    assert "bulkhead-%d/" % d.proc.pid in info["cgroups"], info["cgroups"]
    r = d.job("z", b"allocate", timeout=30)
    assert r.status == 502 and r.json["outcome"] == "oom_killed", r
    d.assert_serving("echo")
    d.wait_replaced("z", [info["pid"]])
    assert _describe(d, "z")["zygote_pid"] == _zygote(d, "z")["pid"]


def test_each_forked_worker_gets_its_own_slot_environment(start_daemon):
    d = start_daemon({"z": _zygote_pool(gpus=[4, 7], env={"POOL_VAR": "yes"})})
    d.wait_ready("z")
    seen = {}
    for _ in range(30):
        info = _describe(d, "z")
        seen[info["env"]["BULKHEAD_WORKER_ID"]] = info["env"]
        if len(seen) == 2:
            break
    for worker_id, env in seen.items():
        slot = [w["slot"] for w in d.workers("z") if w["id"] == worker_id][0]
        assert env["CUDA_VISIBLE_DEVICES"] == ("4" if slot == 0 else "7"), seen
        assert env["POOL_VAR"] == "yes"


def test_shutdown_stops_the_zygote_and_its_workers(start_daemon):
    d = start_daemon({"z": _zygote_pool()})
    d.wait_ready("z")
    zygote_pid = _zygote(d, "z")["pid"]
    pids = d.idle_pids("z")
    d.stop()
    for pid in pids + [zygote_pid]:
        assert wait_until(lambda: not pid_alive(pid), 10, "pid %d to end" % pid)


def test_metrics_count_zygote_starts_deaths_and_forks(start_daemon):
    d = start_daemon({"z": _zygote_pool(workers=2), "echo": {"handler": "echo"}})
    d.wait_ready("z")
    os.kill(_zygote(d, "z")["pid"], signal.SIGKILL)
    wait_until(lambda: (lambda z: z["state"] == "ready" and z["starts"] == 2)(_zygote(d, "z")),
               20, "the zygote to come back")   # one snapshot: state and starts of the same one
    text = d.http("GET", "/metrics").body.decode()
    lines = set(text.splitlines())
    for line in ('bulkhead_zygote_up{pool="z"} 1', 'bulkhead_zygote_starts_total{pool="z"} 2',
                 'bulkhead_zygote_deaths_total{pool="z"} 1',
                 'bulkhead_zygote_forks_total{pool="z"} 2', 'bulkhead_zygote_refused{pool="z"} 0'):
        assert line in lines, (line, [l for l in lines if l.startswith("bulkhead_zygote")])
    assert 'pool="echo"' not in "".join(l for l in lines if l.startswith("bulkhead_zygote"))


_FAKE_ZYGOTE = r'''
import json, os, struct, sys, time
mode = os.environ["FAKE_ZYGOTE"]
sock = __import__("socket").socket(fileno=3)
def send(kind, request, body=b""):
    sock.sendall(struct.pack("<2sBBIQ", b"BK", 1, kind, len(body), request) + body)
send(0x01, 0, b'{"protocol":1,"pid":%d,"role":"zygote"}' % os.getpid())
send(0x02, 0, b"{}")
header = b""
while len(header) < 16:
    header += sock.recv(16 - len(header))
magic, version, kind, length, request = struct.unpack("<2sBBIQ", header)
if mode == "garbage":
    sock.sendall(b"\xff" * 64)
elif mode == "lying_pid":
    send(0x30, request, b'{"pid":%d}' % os.getppid())   # the supervisor itself
time.sleep(60)                                          # "silent": never answers the FORK
'''


@pytest.mark.limit(60)
@pytest.mark.parametrize("mode, words", [("garbage", "broke the protocol"),
                                         ("lying_pid", "not a child of the supervisor"),
                                         ("silent", "a FORK went unanswered")])
def test_a_misbehaving_zygote_is_killed_and_harms_nothing_else(start_daemon, tmp_path, mode,
                                                              words):
    fake = tmp_path / "fakesdk" / "bulkhead"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "zygote.py").write_text(_FAKE_ZYGOTE)
    # queue_timeout 5s: the silent zygote's job waits for it, not for the default 30 s.
    d = start_daemon({"z": {"handler": "echo", "mode": "zygote", "workers": 1,
                            "queue_timeout": "5s",
                            "python_path": [str(fake.parent)], "env": {"FAKE_ZYGOTE": mode}},
                      "echo": {"handler": "echo"}})
    died = wait_until(lambda: [e for e in _events(d, "z", "zygote_died") if words in e["detail"]],
                      30, "the zygote to be killed for: " + words)
    assert died
    assert d.proc.poll() is None, "the supervisor died"
    d.wait_ready("echo")
    d.assert_serving("echo")
    assert not [w for w in d.workers("z") if w.get("pid") == d.proc.pid]
    wait_until(lambda: _zygote(d, "z")["starts"] >= 2, 20, "a restarted zygote")
    # No worker of the pool is left waiting for a fork that will never come: a job ends.
    r = d.job("z", b"x", timeout=40)
    if mode == "silent":    # each zygote takes 10 s to be given up: the queue deadline comes first
        assert r.status == 503 and r.json["outcome"] in ("unavailable", "overloaded"), r
    else:
        assert r.status == 503 and r.json["outcome"] == "unavailable", r
        assert words in r.json["detail"], r.json


@pytest.mark.limit(90)
def test_profiles_and_threads_apply_to_forked_workers(start_daemon, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("SUPERVISOR_ONLY_SECRET", "hunter2")
    d = start_daemon({"z": {"handler": "report_environment", "preload": Z + "preload_torch_only",
                            "mode": "zygote", "profile": ["torch"], "threads": 2,
                            "startup_timeout": "60s"}})
    d.wait_ready("z", timeout=60)
    r = d.job("z", b"torch", timeout=60)
    assert r.status == 200, r
    # torch was imported in the zygote, under the built environment: its thread count holds.
    assert r.json["torch_threads"] == 2, r.json
    env = r.json["env"]
    assert env["OMP_NUM_THREADS"] == "2" and env["MKL_NUM_THREADS"] == "2"
    assert env["BULKHEAD_WORKER_ID"] == "z-1"
    assert "SUPERVISOR_ONLY_SECRET" not in env
