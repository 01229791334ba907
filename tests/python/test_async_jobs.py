"""Journaled async jobs: 202 + Location, long poll, idempotency, cancel, kill -9 recovery."""

import collections
import http.client
import json
import os
import signal

from conftest import Daemon, pid_alive, wait_until


def test_submit_poll_and_get_the_same_answer_as_a_sync_call(start_daemon, tmp_path):
    d = start_daemon({"a": {"handler": "by_payload", "workers": 1, "retries": 0,
                            "poison_after": 0}},
                     server={"listen": "127.0.0.1:0", "journal": str(tmp_path / "j.db")})
    d.wait_ready("a")
    r = d.http("POST", "/v1/pools/a/jobs?wait=0", body=b"hello")
    assert r.status == 202, r
    location = r.headers["location"]
    assert location == "/v1/jobs/" + r.json["job"]
    done = d.http("GET", location + "?wait=10s", timeout=15)
    assert done.status == 200 and done.body == b"hello", done
    assert done.headers["x-bulkhead-outcome"] == "ok"
    # A failure comes back as the same problem+json a sync caller gets.
    r = d.http("POST", "/v1/pools/a/jobs?wait=0", body=b"crash")
    failed = d.http("GET", r.headers["location"] + "?wait=10s", timeout=15)
    assert failed.status == 502 and failed.json["outcome"] == "crashed", failed
    assert failed.json["attempts"][0]["signal"] == "SIGSEGV"
    # Unknown and malformed ids.
    assert d.http("GET", "/v1/jobs/999999").status == 404
    assert d.http("GET", "/v1/jobs/x1").status == 400


def test_long_poll_returns_202_while_running_and_cancel_ends_it(start_daemon, tmp_path):
    d = start_daemon({"slow": {"handler": "slow", "workers": 1}},
                     server={"listen": "127.0.0.1:0", "journal": str(tmp_path / "j.db")})
    d.wait_ready("slow")
    r = d.http("POST", "/v1/pools/slow/jobs?wait=0", body=b"sleep:30")
    job = r.headers["location"]
    pending = d.http("GET", job + "?wait=200ms")
    assert pending.status == 202 and pending.json["state"] in ("queued", "running"), pending
    assert d.http("DELETE", job).status == 202
    ended = d.http("GET", job + "?wait=10s", timeout=15)
    assert ended.json["outcome"] == "cancelled", ended
    assert d.http("DELETE", job).status == 409


def test_idempotency_key_returns_the_same_job(start_daemon, tmp_path):
    d = start_daemon({"a": {"handler": "echo", "workers": 1}},
                     server={"listen": "127.0.0.1:0", "journal": str(tmp_path / "j.db")})
    d.wait_ready("a")
    first = d.http("POST", "/v1/pools/a/jobs?wait=0", body=b"x", headers={"Idempotency-Key": "k"})
    again = d.http("POST", "/v1/pools/a/jobs?wait=0", body=b"x", headers={"Idempotency-Key": "k"})
    assert first.json["job"] == again.json["job"]
    assert again.json["duplicate"] is True
    other = d.http("POST", "/v1/pools/a/jobs?wait=0", body=b"x", headers={"Idempotency-Key": "j"})
    assert other.json["job"] != first.json["job"]


def test_kill_9_with_1000_accepted_jobs_loses_none(tmp_path, start_daemon):
    journal = str(tmp_path / "journal.db")
    runs_file = str(tmp_path / "runs.txt")
    # One slow worker first, so most jobs are still waiting when the supervisor is killed;
    # four fast ones after the restart, to drain the rest quickly.
    pools = {"q": {"handler": "count_runs", "workers": 1,
                   "env": {"BULKHEAD_TEST_RUNS": runs_file, "BULKHEAD_TEST_SLEEP": "0.02"}}}
    restarted_pools = {"q": {"handler": "count_runs", "workers": 4,
                             "env": {"BULKHEAD_TEST_RUNS": runs_file}}}
    server = {"listen": "127.0.0.1:0", "journal": journal}
    workdir = str(tmp_path / "first")
    os.makedirs(workdir)
    first = Daemon(workdir, pools, server=server)
    try:
        first.start()
        first.wait_ready("q")
        host, port = first.url[len("http://"):].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        ids = []
        for i in range(1000):
            conn.request("POST", "/v1/pools/q/jobs?wait=0", body=b"job-%d" % i)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 202, (resp.status, body)
            ids.append(json.loads(body)["job"])
        conn.close()
        workers = [w["pid"] for w in first.workers("q")]
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        wait_until(lambda: not any(pid_alive(p) for p in workers), 10, "workers to die")
    finally:
        first.kill()
        first.close()
    # Not every job ran before the kill (that is the point of the test).
    ran_before = len(open(runs_file, "rb").read().splitlines()) if os.path.exists(runs_file) else 0
    assert ran_before < 1000, "all jobs finished before the kill: make them slower"

    d = start_daemon(restarted_pools, server=server)
    assert "unfinished job(s) run again" in d.log(), d.log()

    def all_finished():
        return all(d.http("GET", "/v1/jobs/%s" % i).status == 200 for i in ids[-50:])

    wait_until(all_finished, 120, "the recovered jobs to finish")
    counts = collections.Counter(open(runs_file, "rb").read().splitlines())
    duplicates = 0
    for i, job in enumerate(ids):
        r = d.http("GET", "/v1/jobs/%s" % job)
        assert r.status == 200 and r.body == b"job-%d" % i, (job, r)
        assert counts[b"job-%d" % i] >= 1, "job-%d never ran" % i
        duplicates += counts[b"job-%d" % i] - 1
    # At-least-once: only the job in flight at the kill may have run twice.
    assert duplicates <= 1, "%d jobs ran twice" % duplicates
    print("kill -9 recovery: %d jobs ran before the kill, %d ran twice" % (ran_before, duplicates))
