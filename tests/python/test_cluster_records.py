"""[cluster] async jobs are the cluster's, not one node's, through a real redis-server (AOF on)
and real daemons: job ids are unique across nodes (each carries its node's number), any node
answers GET /v1/jobs/{id} for a job another node accepted (waiting for its outcome when asked
to), DELETE on any node cancels the job at the node that accepted it, and an Idempotency-Key
names one job whichever nodes it is submitted to, even at the same moment. With Redis away a
keyed submit is refused (503) rather than risk a second job, and unkeyed ones still run."""

import os
import threading

import pytest

from conftest import Daemon, wait_until
from test_cluster_jobs import _node

pytest.importorskip("redis")

from redis_support import redis_server  # noqa: E402,F401  (a fixture)

ID_BITS = 40


def _async(d, pool, payload, key=None):
    headers = {"Idempotency-Key": key} if key else {}
    resp = d.http("POST", "/v1/pools/%s/jobs?wait=0" % pool, body=payload, headers=headers)
    return resp


def test_any_node_answers_for_a_job_another_node_accepted(start_daemon, redis_server):
    a = _node(start_daemon, redis_server, "node-a", {"alpha": {"handler": "echo"}}, journal=True)
    b = _node(start_daemon, redis_server, "node-b", {"beta": {"handler": "echo"}}, journal=True)

    on_a = _async(a, "alpha", b"from a")
    on_b = _async(b, "beta", b"from b")
    assert on_a.status == 202 and on_b.status == 202, (on_a, on_b)
    id_a, id_b = int(on_a.json["job"]), int(on_b.json["job"])
    numbers = redis_server.client().hgetall("bulkhead:node_numbers")
    assert int(numbers[b"node-a"]) == id_a >> ID_BITS != 0
    assert int(numbers[b"node-b"]) == id_b >> ID_BITS != 0
    assert id_a >> ID_BITS != id_b >> ID_BITS, "each node numbers its jobs in its own range"
    assert a.get_json("/v1/cluster")["node_number"] == id_a >> ID_BITS
    assert max(id_a, id_b) < 2 ** 53, "exact as JSON numbers in JavaScript too"

    # node-b answers for node-a's job, and the other way round, result bytes and all.
    done = b.http("GET", "/v1/jobs/%d?wait=20s" % id_a, timeout=30)
    assert done.status == 200 and done.body == b"from a", done
    assert done.headers["x-bulkhead-node"] == "node-a"
    assert done.headers["x-bulkhead-runs"] == "1"
    back = a.http("GET", "/v1/jobs/%d?wait=20s" % id_b, timeout=30)
    assert back.status == 200 and back.body == b"from b", back
    record = redis_server.client().hgetall("bulkhead:job:%d" % id_a)
    assert record[b"state"] == b"finished" and record[b"node"] == b"node-a", record
    assert redis_server.client().pttl("bulkhead:job:%d" % id_a) > 0, "records expire"

    # A large result is readable on another node too, and held in Redis only for an hour.
    big = os.urandom(2 << 20)
    large = int(_async(a, "alpha", big).json["job"])
    got = b.http("GET", "/v1/jobs/%d?wait=20s" % large, timeout=30)
    assert got.status == 200 and got.body == big, got
    assert 0 < redis_server.client().pttl("bulkhead:job:%d" % large) <= 3600 * 1000
    assert redis_server.client().pttl("bulkhead:job:%d" % id_a) > 3600 * 1000, "small: 7 days"

    # An id in node-a's range that it never gave: unknown on every node.
    never = (id_a >> ID_BITS << ID_BITS) + 999999
    for d in (a, b):
        unknown = d.http("GET", "/v1/jobs/%d" % never)
        assert unknown.status == 404 and unknown.json["error"] == "unknown_job", unknown



def test_delete_on_any_node_cancels_the_job_where_it_was_accepted(start_daemon, redis_server):
    a = _node(start_daemon, redis_server, "node-a", {"slow": {"handler": "slow", "workers": 1}},
              journal=True)
    b = _node(start_daemon, redis_server, "node-b", {"beta": {"handler": "echo"}}, journal=True)
    running = int(_async(a, "slow", b"sleep:60").json["job"])
    wait_until(lambda: a.http("GET", "/v1/jobs/%d" % running).json.get("state") == "running",
               20, "the first job to run")
    queued = int(_async(a, "slow", b"sleep:60").json["job"])

    for job in (queued, running):
        asked = b.http("DELETE", "/v1/jobs/%d" % job)
        assert asked.status == 202 and asked.json["state"] == "cancelling", asked
    for job in (queued, running):
        ended = b.http("GET", "/v1/jobs/%d?wait=30s" % job, timeout=40)
        assert ended.json["outcome"] == "cancelled", ended
        assert a.http("GET", "/v1/jobs/%d" % job).json["outcome"] == "cancelled"

    again = b.http("DELETE", "/v1/jobs/%d" % running)
    assert again.status == 409 and again.json["error"] == "already_finished", again
    assert "cancelled" in again.json["detail"]
    # node-a is unharmed: its worker was replaced and serves the next job.
    assert a.job("slow", b"sleep:0").body == b"slept"


def test_an_idempotency_key_is_one_job_whichever_nodes_get_it(start_daemon, redis_server,
                                                              tmp_path):
    runs_file = str(tmp_path / "runs")
    work = {"handler": "count_runs", "env": {"BULKHEAD_TEST_RUNS": runs_file}}
    a = _node(start_daemon, redis_server, "node-a", {"tasks": work}, journal=True)
    b = _node(start_daemon, redis_server, "node-b", {"tasks": work}, journal=True)

    first = _async(a, "tasks", b"order-1", key="order-1")
    assert first.status == 202 and first.json["duplicate"] is False, first
    second = _async(b, "tasks", b"order-1", key="order-1")
    assert second.status == 202, second
    assert second.json["duplicate"] is True and second.json["job"] == first.json["job"]

    # The same key at the same moment on both nodes, twenty times over: one job each.
    answers = {}

    def submit(d, key, slot):
        answers[slot] = _async(d, "tasks", key.encode(), key=key)

    for i in range(20):
        key = "race-%d" % i
        threads = [threading.Thread(target=submit, args=(d, key, (i, n)))
                   for n, d in enumerate((a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        pair = [answers[(i, 0)], answers[(i, 1)]]
        assert all(r.status == 202 for r in pair), pair
        assert pair[0].json["job"] == pair[1].json["job"], pair
        assert sorted(r.json["duplicate"] for r in pair) == [False, True], pair

    def ran():
        with open(runs_file, "rb") as f:
            return [line for line in f.read().split(b"\n") if line]

    wait_until(lambda: os.path.exists(runs_file) and len(ran()) >= 21, 30, "every job to run")
    for d in (a, b):
        job = d.http("GET", "/v1/jobs/%s?wait=20s" % first.json["job"], timeout=30)
        assert job.status == 200 and job.body == b"order-1", job
    lines = ran()
    assert sorted(lines) == sorted([b"order-1"] + [b"race-%d" % i for i in range(20)]), lines

    # Redis away: a keyed submit cannot be checked and is refused; an unkeyed one still runs.
    redis_server.stop()
    wait_until(lambda: _async(a, "tasks", b"k", key="while-away").status == 503, 20,
               "node-a to notice Redis is gone")
    refused = _async(a, "tasks", b"k", key="while-away")
    assert refused.json["error"] == "cluster_unavailable", refused
    assert "Idempotency-Key" in refused.json["detail"]
    plain = _async(a, "tasks", b"plain")
    assert plain.status == 202, plain
    job = a.http("GET", "/v1/jobs/%s?wait=20s" % plain.json["job"], timeout=30)
    assert job.status == 200 and job.body == b"plain"
    # Another node's job cannot be looked up without Redis: said so, not "unknown".
    away = a.http("GET", "/v1/jobs/%s" % second.json["job"])
    if int(second.json["job"]) >> ID_BITS != int(plain.json["job"]) >> ID_BITS:
        assert away.status == 503 and away.json["error"] == "cluster_unavailable", away

    wait_until(lambda: a.get_json("/v1/cluster")["records_unwritten"] >= 2, 20,
               "the records of the job run while Redis is away to wait for it")

    # Back: the record of the job run while Redis was away reaches the other node.
    redis_server.start()
    wait_until(lambda: b.http("GET", "/v1/jobs/%s" % plain.json["job"]).status == 200, 30,
               "node-a's record of its job to reach Redis once it is back")
    wait_until(lambda: a.get_json("/v1/cluster")["records_unwritten"] == 0, 30,
               "node-a to write every kept record")


def test_a_cancel_delivered_before_a_restart_is_taken_back_at_once(start_daemon, redis_server,
                                                                   tmp_path):
    # node-a's outcome stream carries outcomes and cancel requests. An entry delivered to node-a
    # whose XREADGROUP reply was lost (the connection broke, Redis was killed after writing its
    # AOF, node-a restarted) is pending for node-a and for nobody else: node-a must read it again
    # when it connects. Simulated by hand: node-a killed with a job running, a cancel request
    # delivered to consumer node-a while it is down, node-a restarted on the same journal.
    journal = str(tmp_path / "a.db")
    pools = {"slow": {"handler": "slow", "workers": 1}}
    cluster = {"redis": "redis://127.0.0.1:%d/0" % redis_server.port, "node": "node-a",
               "heartbeat": "100ms"}
    server = {"listen": "127.0.0.1:0", "journal": journal}
    workdir = str(tmp_path / "first")
    os.makedirs(workdir)
    a = Daemon(workdir, pools, server=server, extra_sections={"cluster": cluster})
    try:
        a.start()
        a.wait_ready("slow")
        job = int(_async(a, "slow", b"sleep:120").json["job"])
        wait_until(lambda: a.http("GET", "/v1/jobs/%d" % job).json.get("state") == "running",
                   20, "the job to run")
    finally:
        a.kill()
        a.close()

    r = redis_server.client()
    stream = "bulkhead:outcomes:node-a"
    r.xadd(stream, {"v": "1", "cancel": str(job), "from": "node-b"})
    assert r.xreadgroup("bulkhead", "node-a", {stream: ">"}, count=1)  # delivered, reply "lost"
    assert r.xpending(stream, "bulkhead")["pending"] == 1

    again = start_daemon(pools, server=server, extra_sections={"cluster": cluster})
    again.wait_ready("slow")
    ended = again.http("GET", "/v1/jobs/%d?wait=30s" % job, timeout=40)
    assert ended.json.get("outcome") == "cancelled", ended  # not after the 120 s sleep
    wait_until(lambda: r.xpending(stream, "bulkhead")["pending"] == 0, 20,
               "the cancel request to be acknowledged")
    assert "taking back an outcome delivered here" in again.log()
