"""The promise under load and abuse: deadlines with one meaning each, crash backoff only
for crash loops, outcomes that say what happened to the job, readiness that does not lie, an
operator log that says what happened, and a journal whose trouble degrades instead of killing."""

import json
import os
import subprocess
import threading

import pytest

from conftest import wait_until

P = "promise_handlers:"


def _problem(r):
    assert r.headers.get("content-type", "").startswith("application/problem+json"), r
    return r.json


# -- deadlines ------------------------------------------------------------------------------


@pytest.mark.limit(180)
def test_async_jobs_on_a_slow_pool_all_run_none_expire(start_daemon):
    """300 jobs accepted with 202 on one worker, job_timeout 1s, 50 ms each: 15 s of work, far
    past any job_timeout: every one runs and ends ok (they used to expire unrun)."""
    d = start_daemon({"slow": {"handler": P + "nap", "job_timeout": "1s"}})
    d.wait_ready("slow")
    ids = []
    for i in range(300):
        headers = {"Idempotency-Key": "key-7"} if i == 7 else None
        r = d.http("POST", "/v1/pools/slow/jobs?wait=0", body=b"0.05", headers=headers)
        assert r.status == 202, r
        ids.append(r.json["job"])
    outcomes = {}
    for job in ids:
        def done():
            r = d.http("GET", "/v1/jobs/%s?wait=10s" % job, timeout=30)
            return r if r.status != 202 else None
        r = wait_until(done, 120, "job %s to end" % job)
        outcomes[job] = r.outcome
    assert set(outcomes.values()) == {"ok"}, {k: v for k, v in outcomes.items() if v != "ok"}


@pytest.mark.limit(120)
def test_cold_start_first_sync_job_waits_for_the_slow_preload(start_daemon):
    """A 3 s preload and a queue_timeout of 500 ms: the pool still starting counts as 'will have a
    worker', so the first job, sent at once, runs; /readyz says 503 until the worker is READY."""
    d = start_daemon({"cold": {"handler": P + "echo", "preload": P + "slow_preload",
                               "queue_timeout": "500ms", "startup_timeout": "30s"}})
    r = d.http("GET", "/readyz", timeout=5)
    assert r.status == 503, r
    pool = r.json["pools"][0]
    assert pool["pool"] == "cold" and pool["ready"] is False
    assert "no READY worker" in pool["reason"], pool
    assert d.http("GET", "/livez", timeout=5).status == 200
    first = d.job("cold", b"first", timeout=60)
    assert first.status == 200 and first.body == b"first", first
    assert float(first.headers["x-bulkhead-queue-ms"]) > 500, first.headers
    r = d.http("GET", "/readyz", timeout=5)
    assert r.status == 200 and r.json["status"] == "ready", r


def test_callers_deadline_ends_the_job_timed_out_with_its_stage(start_daemon):
    d = start_daemon({"slow": {"handler": P + "nap", "job_timeout": "60s"}})
    d.wait_ready("slow")
    results = {}

    def running():
        results["running"] = d.job("slow", b"30", headers={"X-Bulkhead-Deadline": "1500ms"})

    t = threading.Thread(target=running)
    t.start()
    wait_until(lambda: d.pool_status("slow")["in_flight"] == 1, 10, "the long job to run")
    queued = d.job("slow", b"0", headers={"X-Bulkhead-Deadline": "300ms"})
    t.join(60)
    assert queued.status == 504 and queued.outcome == "timed_out", queued
    assert _problem(queued)["stage"] == "queued"
    assert _problem(queued)["attempts"] == []
    r = results["running"]
    assert r.status == 504 and r.outcome == "timed_out", r
    body = _problem(r)
    assert body["stage"] == "running"
    assert "caller's deadline" in body["detail"], body
    assert "nap" in body["attempts"][-1]["stacks"], "stacks are taken before the kill"
    bad = d.job("slow", b"0", headers={"X-Bulkhead-Deadline": "soon"})
    assert bad.status == 400, bad
    d.wait_ready("slow")


def test_overloaded_reports_the_real_queue_wait(start_daemon):
    d = start_daemon({"slow": {"handler": P + "nap", "queue_timeout": "400ms"}})
    d.wait_ready("slow")
    t = threading.Thread(target=lambda: d.job("slow", b"3"))
    t.start()
    wait_until(lambda: d.pool_status("slow")["in_flight"] == 1, 10, "the long job to run")
    r = d.job("slow", b"0")
    t.join(30)
    assert r.status == 503 and r.outcome == "overloaded", r
    assert _problem(r)["timings"]["queue_ms"] >= 400, r


# -- outcome types --------------------------------------------------------------------------


def test_repeating_crash_is_crashed_quarantined_and_only_a_resubmission_is_poison(start_daemon):
    import bulkhead
    d = start_daemon({"p": {"handler": "by_payload", "workers": 2, "retries": 2,
                            "poison_after": 2}})
    d.wait_ready("p")
    r = d.job("p", b"crash")
    assert r.status == 502 and r.outcome == "crashed", r
    body = _problem(r)
    assert body["quarantined"] is True, body
    assert len(body["attempts"]) == 2
    assert all(a["signal"] == "SIGSEGV" for a in body["attempts"]), body
    again = d.job("p", b"crash")
    assert again.status == 422 and again.outcome == "poison", again
    assert len(_problem(again)["attempts"]) == 2, "the original evidence"
    with pytest.raises(bulkhead.WorkerCrashed) as ei:
        d.client.call("p", b"crash", allow_poison=True) if _takes_allow_poison(d.client) else \
            d.client.call("p", b"crash")
    if hasattr(ei.value, "quarantined"):
        assert ei.value.quarantined is True
    d.wait_ready("p")
    assert d.job("p", b"fine").status == 200


def _takes_allow_poison(client):
    import inspect
    try:
        return "allow_poison" in inspect.signature(client.call).parameters
    except (TypeError, ValueError):
        return False


@pytest.mark.limit(90)
def test_hang_after_a_refused_thread_is_resource_exhausted_with_pids_evidence(start_daemon):
    d = start_daemon({"pids": {"handler": P + "threads_until_refused_then_hang",
                               "pids_limit": 24, "job_timeout": "3s", "kill_grace": "200ms",
                               "sample_interval": "100ms"}})
    d.wait_ready("pids")
    r = d.job("pids", b"", timeout=60)
    assert r.status == 502 and r.outcome == "resource_exhausted", r
    a = _problem(r)["attempts"][-1]
    assert a["limit"] == "pids", a
    assert a["pids_max_events"] >= 1, a
    assert "pids_limit of 24" in a["cause"], a


def test_job_id_beyond_64_bits_is_a_400_not_clamped(daemon):
    r = daemon.http("GET", "/v1/jobs/99999999999999999999999")
    assert r.status == 400, r
    assert daemon.http("GET", "/v1/jobs/18446744073709551615").status in (404,)


def test_worker_sys_path_does_not_start_with_the_supervisors_cwd(start_daemon):
    d = start_daemon({"p": {"handler": P + "sys_path"}})
    # A json.py in the daemon's working directory must not shadow the worker's imports.
    with open(os.path.join(d.workdir, "json.py"), "w") as f:
        f.write("raise ImportError('the cwd shadowed json')\n")
    d.wait_ready("p")
    first = d.workers("p")[0]["pid"]
    os.kill(int(first), 9)
    d.wait_replaced("p", int(first))
    r = d.job("p", b"")
    assert r.status == 200, r
    info = r.json
    assert info["cwd"] == d.workdir
    assert d.workdir not in info["sys_path"] and "" not in info["sys_path"], info
    assert not info["json_file"].startswith(d.workdir), info


# -- operator log and status ----------------------------------------------------------------


@pytest.mark.limit(120)
def test_operator_log_has_a_line_per_event_that_matters(start_daemon):
    d = start_daemon({
        "crash": {"handler": "segfault"},
        "slow": {"handler": P + "nap", "job_timeout": "500ms", "kill_grace": "100ms"},
        "broken": {"handler": "no_such_module_here:handle", "workers": 1},
        "recycle": {"handler": "echo", "max_jobs": 1},
        "brk": {"handler": "segfault", "poison_after": 0,
                "breaker": {"failures": 2, "window": "60s", "cooldown": "60s"}},
    })
    d.wait_ready("crash")
    d.wait_ready("slow")
    d.wait_ready("recycle")
    assert d.job("crash", b"x").outcome == "crashed"
    assert d.job("slow", b"5").outcome == "timed_out"
    assert d.job("recycle", b"x").status == 200
    for _ in range(2):
        d.wait_ready("brk")
        d.job("brk", b"x")

    def logged(*needles):
        log = d.log()
        return all(n in log for n in needles)

    wait_until(lambda: logged("warning: pool crash: crashed crash-", "job 1", "SIGSEGV"), 10,
               "the crash line")
    wait_until(lambda: logged("warning: pool slow: timed_out slow-", "timeout of 500 ms"), 10,
               "the timeout line")
    wait_until(lambda: logged("warning: pool broken: start_failed broken-",
                              "No module named 'no_such_module_here'"), 20,
               "the start failure line")
    wait_until(lambda: logged("pool recycle: recycled recycle-", ": jobs"), 10,
               "the recycle line")
    wait_until(lambda: logged("warning: pool brk: breaker_opened"), 10, "the breaker line")
    for line in d.log().splitlines():
        if "pool crash: crashed" in line:
            assert "(pid " in line, line


def test_json_log_lines_carry_the_fields_for_a_shipper(start_daemon):
    d = start_daemon({"crash": {"handler": "segfault"}},
                     args=["--log-format", "json", "--log-level", "debug"])
    d.wait_ready("crash")
    assert d.job("crash", b"x").outcome == "crashed"

    def crash_line():
        for line in d.log().splitlines():
            entry = json.loads(line)  # every line is one JSON object
            if entry.get("event") == "crashed":
                return entry
        return None

    entry = wait_until(crash_line, 10, "the crash as a JSON line")
    assert entry["level"] == "warning" and entry["pool"] == "crash", entry
    assert entry["worker"].startswith("crash-") and entry["pid"] > 0 and entry["job"], entry
    assert "SIGSEGV" in entry["detail"] and entry["time"].endswith("Z"), entry
    events = [json.loads(l).get("event") for l in d.log().splitlines()]
    assert "started" in events and "ready" in events, "debug level shows starts"
    bad = subprocess.run([os.environ.get("BULKHEAD_BIN", "build/bulkhead"), "serve", "-c",
                          d.config_path, "--log-format", "xml"], capture_output=True, timeout=20)
    assert bad.returncode == 2 and b"--log-format" in bad.stderr, bad


def test_status_shows_ready_over_target_and_the_last_start_failure(start_daemon):
    d = start_daemon({"broken": {"handler": "no_such_module_here:handle", "workers": 2}})
    p = wait_until(lambda: (lambda p: p if p["last_start_failure"] else None)(
        d.pool_status("broken")), 20, "a start failure")
    assert p["ready_workers"] == 0 and p["workers_target"] == 2, p
    assert "No module named" in p["last_start_failure"], p
    r = d.http("GET", "/readyz")
    assert r.status == 503 and "No module named" in r.json["pools"][0]["reason"], r


# -- the journal on a full disk -------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    rc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                        capture_output=True)
    if rc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % rc.stderr.decode().strip())
    yield str(mount)
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.limit(90)
def test_journal_on_a_full_filesystem_degrades_instead_of_dying(start_daemon, tiny_fs):
    d = start_daemon({"echo": {"handler": "echo"}},
                     server={"journal": os.path.join(tiny_fs, "journal.db")})
    d.wait_ready("echo")
    ok = d.http("POST", "/v1/pools/echo/jobs?wait=0", body=b"before")
    assert ok.status == 202, ok
    # Fill the filesystem to the last byte.
    with open(os.path.join(tiny_fs, "filler"), "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    refused = None
    for i in range(50):
        r = d.http("POST", "/v1/pools/echo/jobs?wait=0", body=os.urandom(32 * 1024))
        if r.status == 503:
            refused = r
            break
        assert r.status == 202, r
    assert refused is not None, "the journal never ran out of space"
    assert _problem(refused)["error"] == "journal_unavailable", refused
    assert d.proc.poll() is None, "the daemon died: " + d.log()[-2000:]
    sync = d.job("echo", b"sync still works")
    assert sync.status == 200 and sync.body == b"sync still works", sync
    metrics = d.http("GET", "/metrics").body.decode()
    line = [l for l in metrics.splitlines() if l.startswith("bulkhead_journal_errors_total")]
    assert line and float(line[0].split()[-1]) >= 1, line
    assert "journal trouble" in d.log(), d.log()[-2000:]
    os.unlink(os.path.join(tiny_fs, "filler"))
    assert d.http("POST", "/v1/pools/echo/jobs?wait=0", body=b"after").status == 202
