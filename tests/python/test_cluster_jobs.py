"""[cluster] jobs across nodes, through a real redis-server (AOF on) and real daemons on their own
loopback ports: a job for a pool only another node has runs there and its outcome, crashes and
their evidence included, comes back to the node holding the caller's connection; Redis away
answers 503 cluster_unavailable at once while local pools keep serving; a node killed with
SIGKILL loses no accepted job: its unacknowledged jobs are taken over after claim_after and run
again (X-Bulkhead-Runs says so), and every job ends with exactly one outcome."""

import collections
import json
import os
import signal
import threading
import time

import pytest

from conftest import Daemon, wait_until
from test_events import _read_events

pytest.importorskip("redis")

from redis_support import redis_server  # noqa: E402,F401  (a fixture)


def _cluster(server, name, **more):
    keys = {"redis": "redis://127.0.0.1:%d/0" % server.port, "node": name, "heartbeat": "100ms"}
    keys.update(more)
    return keys


def _node(start_daemon, server, name, pools, journal=False, **cluster):
    d = start_daemon(pools, server={"listen": "127.0.0.1:0",
                                    "journal": "jobs.db" if journal else ""},
                     extra_sections={"cluster": _cluster(server, name, **cluster)})
    for pool in pools:
        d.wait_ready(pool)
    return d


def _sees_pool(d, node, pool, ready=1):
    """Whether d's last heartbeat read `node` with `pool` ready, and d sends jobs to it."""
    view = d.get_json("/v1/cluster")
    if node != view["node"] and pool not in view["remote_pools"]:
        return False
    for n in view["nodes"]:
        if n["node"] == node:
            return any(p["name"] == pool and p["ready_workers"] >= ready for p in n["pools"])
    return False


def test_a_pool_only_another_node_has_runs_there_and_answers_here(start_daemon, redis_server):
    a = _node(start_daemon, redis_server, "node-a", {"alpha": {"handler": "echo"}}, journal=True)
    b = _node(start_daemon, redis_server, "node-b", {"faces": {"handler": "by_payload"}})
    wait_until(lambda: _sees_pool(a, "node-b", "faces"), 20, "node-a to see node-b's pool")

    ok = a.job("faces", b"hello")
    assert ok.status == 200, ok
    assert ok.body == b"hello"
    assert ok.headers["x-bulkhead-node"] == "node-b"
    assert ok.headers["x-bulkhead-runs"] == "1"
    assert ok.headers["x-bulkhead-worker"].startswith("faces-")

    crashed = a.job("faces", b"crash")
    problem = crashed.json
    assert problem["outcome"] == "crashed", crashed
    assert problem["node"] == "node-b"
    attempt = problem["attempts"][0]  # the evidence, as node-b saw it
    assert attempt["signal"] == "SIGSEGV" and attempt["signal_number"] == 11, problem
    assert "Segmentation fault" in attempt["stacks"] or "Fatal Python error" in attempt["stacks"]
    assert crashed.headers["x-bulkhead-node"] == "node-b"

    # The same pool through node-b itself, and node-a's own pool, are unharmed.
    assert b.job("faces", b"direct").body == b"direct"
    local = a.job("alpha", b"mine")
    assert local.body == b"mine" and local.headers["x-bulkhead-node"] == "node-a"

    # A payload too large for the stream's entry travels in a key of its own, deleted after.
    big = os.urandom(3 << 20)
    echoed = a.job("faces", b"\x01" + big)
    assert echoed.status == 200 and echoed.body == b"\x01" + big
    assert redis_server.client().keys("bulkhead:payload:*") == []

    # Async through node-a: journaled there, run on node-b, read back from node-a.
    accepted = a.http("POST", "/v1/pools/faces/jobs?wait=0", body=b"later")
    assert accepted.status == 202, accepted
    job = accepted.json["job"]
    done = a.http("GET", "/v1/jobs/%s?wait=20s" % job, timeout=30)
    assert done.status == 200 and done.body == b"later", done
    assert done.headers["x-bulkhead-node"] == "node-b"

    assert a.job("nowhere", b"x").json["error"] == "unknown_pool"

    # What node-a and node-b say of it: counters, GET /v1/cluster, /metrics, events.
    jobs_a = a.get_json("/v1/cluster")["jobs"]
    assert jobs_a["sent"] == 4 and jobs_a["taken"] == 0 and jobs_a["waiting"] == 0, jobs_a
    assert b.get_json("/v1/cluster")["jobs"]["taken"] == 4
    wait_until(lambda: a.get_json("/v1/cluster")["in_stream"]["faces"] == 0, 20,
               "faces' stream read empty at a heartbeat after the last job")
    metrics = a.http("GET", "/metrics").body.decode()
    assert 'bulkhead_cluster_jobs_total{node="node-a",what="sent"} 4' in metrics, metrics
    events = [e for _, _, e in _read_events(b, 0, 5)]
    assert all(e["node"] == "node-b" for e in events), events
    assert any(e["kind"] == "crashed" for e in events), events


def test_redis_away_refuses_remote_jobs_at_once_and_local_pools_keep_serving(start_daemon,
                                                                             redis_server):
    a = _node(start_daemon, redis_server, "node-a", {"alpha": {"handler": "echo"}})
    _node(start_daemon, redis_server, "node-b", {"faces": {"handler": "echo"}})
    wait_until(lambda: _sees_pool(a, "node-b", "faces"), 20, "node-a to see node-b's pool")
    assert a.job("faces", b"before").body == b"before"

    redis_server.stop()
    # A job sent as Redis went away ends `unavailable`; once node-a knows, it refuses at once.
    wait_until(lambda: a.job("faces", b"x").json.get("error") == "cluster_unavailable", 20,
               "node-a to notice Redis is gone")
    started = time.monotonic()
    refused = a.job("faces", b"while away")
    assert time.monotonic() - started < 5
    assert refused.status == 503 and refused.json["error"] == "cluster_unavailable", refused
    assert refused.headers["retry-after"] == "1"
    assert a.job("alpha", b"local").body == b"local"

    redis_server.start()  # the same AOF directory: it comes back with its streams
    wait_until(lambda: a.job("faces", b"again", timeout=10).status == 200, 30,
               "remote jobs to work again")


def _runs(path):
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        return [line for line in f.read().split(b"\n") if line]


@pytest.mark.limit(120)
def test_a_killed_node_loses_no_accepted_job(start_daemon, redis_server, tmp_path):
    runs_file = str(tmp_path / "runs")
    # 200 ms jobs: 6 workers run 30 a second, far slower than the submits even from a sanitized
    # daemon on a loaded machine, so a backlog builds up and node-b's workers are both busy when
    # it is killed. (With 50 ms jobs a slow machine's workers kept up with the submits, and the
    # backlog could be gone before node-b was seen running two jobs.)
    work = {"handler": "count_runs", "workers": 2,
            "env": {"BULKHEAD_TEST_RUNS": runs_file, "BULKHEAD_TEST_SLEEP": "0.2"}}
    a = _node(start_daemon, redis_server, "node-a", {"tasks": work}, journal=True,
              claim_after="2s")
    c = _node(start_daemon, redis_server, "node-c", {"tasks": work}, claim_after="2s")
    # node-b is killed below: not one of the fixture's daemons, which must all exit 0.
    os.makedirs(str(tmp_path / "b"))
    b = Daemon(str(tmp_path / "b"), {"tasks": work},
               server={"listen": "127.0.0.1:0", "journal": ""},
               extra_sections={"cluster": _cluster(redis_server, "node-b", claim_after="2s")})
    total = 400
    ids = {}
    try:
        b.start()
        b.wait_ready("tasks", 2)
        wait_until(lambda: _sees_pool(a, "node-b", "tasks", 2) and _sees_pool(a, "node-c", "tasks", 2),
                   20, "node-a to see both other nodes' pools")
        # From 8 threads, so that submitting outpaces the 6 workers even on a slow build (each
        # 202 waits for the job's record in Redis): a backlog builds up in the stream.
        refused = []

        def submit(numbers):
            for i in numbers:
                r = a.http("POST", "/v1/pools/tasks/jobs?wait=0", body=b"job-%d" % i)
                if r.status != 202:
                    refused.append(r)
                    return
                ids[r.json["job"]] = b"job-%d" % i
        submitters = [threading.Thread(target=submit, args=(range(n, total, 8),))
                      for n in range(8)]
        for t in submitters:
            t.start()
        for t in submitters:
            t.join()
        assert not refused and len(ids) == total, refused[:1]
        # Kill node-b while both its workers run jobs from the backlog.
        wait_until(lambda: len(_runs(runs_file)) >= total // 3, 60, "a third of the jobs to run")
        wait_until(lambda: b.get_json("/v1/pools/tasks")["in_flight"] == 2, 30,
                   "node-b to run two jobs at once")
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(10)
        killed_at = time.monotonic()
    finally:
        b.kill()
        b.close()

    outcomes = {}

    def collect(jobs):
        for job in jobs:
            for _ in range(30):
                r = a.http("GET", "/v1/jobs/%s?wait=10s" % job, timeout=30)
                if r.status != 202:
                    outcomes[job] = r
                    break
    job_ids = list(ids)
    threads = [threading.Thread(target=collect, args=(job_ids[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == total
    for job, r in outcomes.items():
        assert r.status == 200 and r.body == ids[job], (job, r)
    # Within claim_after + the work (generously, on a loaded machine).
    assert time.monotonic() - killed_at < 120

    executed = _runs(runs_file)
    assert set(executed) == set(ids.values())  # every job ran
    twice = {p for p in executed if executed.count(p) > 1}
    # Only what node-b held at the kill ran twice: its 2 workers' jobs and one being handed over.
    assert len(twice) <= 3, twice
    # node-b was running jobs when it died (the backlog kept both its workers busy): those were
    # taken over after claim_after and ran again, as their second run.
    rerun = [r for r in outcomes.values() if r.headers.get("x-bulkhead-runs") == "2"]
    assert rerun, "no job was taken over from node-b"
    assert all(r.headers["x-bulkhead-node"] in ("node-a", "node-c") for r in rerun)
    assert {r.body for r in rerun} >= twice
    nodes = collections.Counter(r.headers["x-bulkhead-node"] for r in outcomes.values())
    assert set(nodes) == {"node-a", "node-b", "node-c"}, nodes
    taken_over = (a.get_json("/v1/cluster")["jobs"]["taken_over"] +
                  c.get_json("/v1/cluster")["jobs"]["taken_over"])
    assert taken_over == len(rerun)
    assert a.get_json("/v1/cluster")["jobs"]["waiting"] == 0


def _start_manual(tmp_path, name, pools, redis_server, **cluster):
    """A node the test may kill: not one of the fixture's daemons, which must all exit 0."""
    os.makedirs(str(tmp_path / name))
    d = Daemon(str(tmp_path / name), pools, server={"listen": "127.0.0.1:0", "journal": ""},
               extra_sections={"cluster": _cluster(redis_server, name, **cluster)})
    d.start()
    for pool in pools:
        d.wait_ready(pool)
    return d


def test_a_job_that_kills_the_nodes_it_reaches_ends_poison(start_daemon, redis_server,
                                                          tmp_path):
    a = _node(start_daemon, redis_server, "node-a", {"alpha": {"handler": "echo"}},
              claim_after="1s")
    deadly = {"deadly": {"handler": "kill_supervisor", "poison_after": 1}}
    names = ("node-b", "node-c")
    nodes = [_start_manual(tmp_path, name, deadly, redis_server, claim_after="1s")
             for name in names]
    try:
        wait_until(lambda: _sees_pool(a, "node-b", "deadly") and _sees_pool(a, "node-c", "deadly"),
                   20, "node-a to see both nodes' pools")
        assert a.job("deadly", b"echo:fine").body == b"echo:fine"
        started = time.monotonic()
        r = a.job("deadly", b"take the node down", timeout=60)
        problem = r.json
        assert r.status == 422 and problem["outcome"] == "poison", r
        assert "handed this job to a node 1 time and each node running it died" in \
            problem["detail"], problem
        assert problem["runs"] == 2 and r.headers["x-bulkhead-runs"] == "2"
        assert time.monotonic() - started < 60
        # One node died running it; the other took it over and ended it without running it.
        dead = [d for d in nodes if d.proc.poll() is not None]
        alive = [d for d in nodes if d.proc.poll() is None]
        assert len(dead) == 1 and dead[0].proc.returncode == -signal.SIGKILL, dead
        assert len(alive) == 1 and problem["node"] == names[nodes.index(alive[0])]
        assert alive[0].get_json("/v1/cluster")["jobs"]["poisoned"] == 1
        assert a.job("alpha", b"unharmed").body == b"unharmed"
        assert alive[0].job("deadly", b"echo:still serving").status == 200
    finally:
        for d in nodes:
            d.kill()
            d.close()


def _pad_the_aof(server, keys):
    """Writes `keys` small keys, so that a restarted server spends a while loading its AOF, and
    answers the nodes reconnecting meanwhile `-LOADING` (even EXEC: EXECABORT)."""
    client = server.client()
    for start in range(0, keys, 10000):
        pipe = client.pipeline(transaction=False)
        for k in range(start, min(keys, start + 10000)):
            pipe.set("padding:%d" % k, "x" * 32)
        pipe.execute()
    client.close()


# The padded case: a node whose kept outcome went into a Redis still loading its AOF once took
# the EXECABORT for stored, dropped the outcome and ran the job again when it took its own
# pending entries back.
@pytest.mark.parametrize("aof_padding", [0, 300000], ids=["small-aof", "aof-loading"])
def test_redis_restarting_mid_run_loses_no_job(start_daemon, redis_server, tmp_path,
                                               aof_padding):
    if aof_padding:
        _pad_the_aof(redis_server, aof_padding)
    runs_file = str(tmp_path / "runs")
    work = {"handler": "count_runs", "workers": 2,
            "env": {"BULKHEAD_TEST_RUNS": runs_file, "BULKHEAD_TEST_SLEEP": "0.05"}}
    a = _node(start_daemon, redis_server, "node-a", {"alpha": {"handler": "echo"}}, journal=True)
    b = _node(start_daemon, redis_server, "node-b", {"tasks": work})
    wait_until(lambda: _sees_pool(a, "node-b", "tasks", 2), 20, "node-a to see node-b's pool")
    total = 200
    ids = {}
    for i in range(total):
        r = a.http("POST", "/v1/pools/tasks/jobs?wait=0", body=b"job-%d" % i)
        assert r.status == 202, r
        ids[r.json["job"]] = b"job-%d" % i
    wait_until(lambda: len(_runs(runs_file)) >= total // 4, 60, "a quarter of the jobs to run")
    redis_server.stop()  # SIGKILL: what the AOF holds is all there is
    wait_until(lambda: not a.get_json("/v1/cluster")["redis"]["connected"], 20,
               "node-a to notice Redis is gone")
    redis_server.start()
    for job, payload in ids.items():
        r = a.http("GET", "/v1/jobs/%s?wait=30s" % job, timeout=60)
        assert r.status == 200 and r.body == payload, (job, r)
    executed = _runs(runs_file)
    assert sorted(set(executed)) == sorted(ids.values())
    assert len(executed) == total, "a job ran twice"
    assert b.get_json("/v1/cluster")["jobs"]["outcomes_unwritten"] == 0
    if aof_padding:  # the case it stands for happened: a node met the server loading
        assert "LOADING" in a.log() + b.log()


def test_a_delivery_whose_reply_was_lost_is_taken_back_at_once(start_daemon, redis_server):
    # An entry delivered to consumer node-b before node-b (re)connected, as when the reply to its
    # XREADGROUP is lost with the connection: written here by hand, in the documented format.
    r = redis_server.client()
    stream = "bulkhead:pool:faces:jobs"
    r.xgroup_create(stream, "bulkhead", id="0", mkstream=True)
    r.xadd(stream, {"v": "1", "origin": "ghost", "job": "7", "pool": "faces",
                    "allow_poison": "0", "payload": b"hello"})
    assert r.xreadgroup("bulkhead", "node-b", {stream: ">"}, count=1)
    started = time.monotonic()
    _node(start_daemon, redis_server, "node-b", {"faces": {"handler": "echo"}})  # claim_after 30s
    wait_until(lambda: r.xlen("bulkhead:outcomes:ghost") == 1, 20, "the outcome for ghost")
    assert time.monotonic() - started < 20  # not after claim_after
    [(_, fields)] = r.xrange("bulkhead:outcomes:ghost")
    assert fields[b"node"] == b"node-b" and fields[b"job"] == b"7"
    assert fields[b"runs"] == b"2"  # handed out twice: once before, once now
    assert fields[b"result"] == b"hello"
    assert json.loads(fields[b"report"])["outcome"] == "ok"
    assert r.xlen(stream) == 0 and r.xpending(stream, "bulkhead")["pending"] == 0


def test_a_payload_quarantined_on_one_node_is_refused_on_every_node(start_daemon, redis_server):
    a = _node(start_daemon, redis_server, "node-a", {"alpha": {"handler": "echo"}})
    fragile = {"fragile": {"handler": "by_payload", "retries": 1, "poison_after": 2}}
    b = _node(start_daemon, redis_server, "node-b", fragile)
    wait_until(lambda: _sees_pool(a, "node-b", "fragile"), 20, "node-a to see node-b's pool")
    first = a.job("fragile", b"crash")  # runs on node-b: two workers crash, it is quarantined
    assert first.json["outcome"] == "crashed" and first.json["quarantined"] is True, first
    assert first.json["node"] == "node-b"
    # node-c joins later: it never ran the payload, yet refuses it.
    c = _node(start_daemon, redis_server, "node-c", fragile)
    for d in (a, c):
        wait_until(lambda: d.get_json("/v1/cluster")["quarantine"].get("fragile") == 1, 20,
                   "the quarantine to reach every node")
    sent_before = a.get_json("/v1/cluster")["jobs"]["sent"]
    for d in (a, c):
        r = d.job("fragile", b"crash")
        problem = r.json
        assert r.status == 422 and problem["outcome"] == "poison", r
        assert "payload quarantined on node 'node-b'" in problem["detail"], problem
        assert len(problem["attempts"]) == 2  # node-b's evidence
        assert problem["attempts"][0]["signal"] == "SIGSEGV"
    assert a.get_json("/v1/cluster")["jobs"]["sent"] == sent_before  # refused before sending
    assert c.pool_status("fragile")["counters"]["crashed"] == 0  # no worker of node-c touched it
    allowed = c.job("fragile", b"fine", headers={"X-Bulkhead-Allow-Poison": "1"})
    assert allowed.status == 200


def test_a_job_longer_than_claim_after_is_not_taken_from_a_live_node(start_daemon, redis_server,
                                                                     tmp_path):
    runs_file = str(tmp_path / "runs")
    slow = {"slow": {"handler": "count_runs", "job_timeout": "30s",
                     "env": {"BULKHEAD_TEST_RUNS": runs_file, "BULKHEAD_TEST_SLEEP": "3"}}}
    a = _node(start_daemon, redis_server, "node-a", {"alpha": {"handler": "echo"}},
              claim_after="1s")
    b = _node(start_daemon, redis_server, "node-b", slow, claim_after="1s")
    c = _node(start_daemon, redis_server, "node-c", slow, claim_after="1s")
    wait_until(lambda: _sees_pool(a, "node-b", "slow") and _sees_pool(a, "node-c", "slow"), 20,
               "node-a to see both nodes' pools")
    r = a.job("slow", b"three seconds", timeout=60)  # three times claim_after
    assert r.status == 200 and r.headers["x-bulkhead-runs"] == "1", r
    assert _runs(runs_file) == [b"three seconds"]  # the other node did not take it over
    taken_over = sum(d.get_json("/v1/cluster")["jobs"]["taken_over"] for d in (b, c))
    assert taken_over == 0


def test_a_node_knows_the_others_pools_from_its_first_request(start_daemon, redis_server):
    b = _node(start_daemon, redis_server, "node-b", {"faces": {"handler": "echo"}})
    wait_until(lambda: _sees_pool(b, "node-b", "faces"), 20, "node-b's announcement in Redis")
    # node-a reads the others every 10 s: its first request must not wait for the second read.
    a = _node(start_daemon, redis_server, "node-a", {"alpha": {"handler": "echo"}},
              heartbeat="10s")
    r = a.job("faces", b"at once")
    assert r.status == 200 and r.headers["x-bulkhead-node"] == "node-b", r
