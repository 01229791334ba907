"""[cluster]: daemons meet in a real redis-server (started here on a free loopback port) and
GET /v1/cluster lists the nodes alive with their pools. A node killed with SIGKILL drops out after
three missed heartbeats; one stopped cleanly leaves at once; Redis going away shows as
`connected: false` with the reason while the daemons keep serving, and they come back by
themselves when it returns."""

import os
import signal

import pytest

from conftest import Daemon, run_bulkhead, wait_until
from example_apps import free_port

redis = pytest.importorskip("redis")

from redis_support import REDIS_SERVER, RedisServer, redis_server  # noqa: E402,F401


def _cluster_keys(server, name, heartbeat="100ms", **more):
    keys = {"redis": "redis://127.0.0.1:%d/0" % server.port, "node": name,
            "heartbeat": heartbeat}
    keys.update(more)
    return keys


def _node(start_daemon, server, name, pool, heartbeat="100ms", **cluster):
    d = start_daemon({pool: {"handler": "echo"}}, server={"listen": "127.0.0.1:0", "journal": ""},
                     extra_sections={"cluster": _cluster_keys(server, name, heartbeat, **cluster)})
    d.wait_ready(pool)
    return d


def _names(d):
    return sorted(n["node"] for n in d.get_json("/v1/cluster")["nodes"])


def test_nodes_see_each_other_and_their_pools(start_daemon, redis_server):
    a = _node(start_daemon, redis_server, "node-a", "alpha")
    b = _node(start_daemon, redis_server, "node-b", "beta")
    wait_until(lambda: _names(a) == ["node-a", "node-b"] and _names(b) == ["node-a", "node-b"],
               20, "both nodes in both views")
    view = a.get_json("/v1/cluster")
    assert view["enabled"] is True and view["node"] == "node-a"
    assert view["redis"]["connected"] is True and "error" not in view["redis"]
    nodes = {n["node"]: n for n in view["nodes"]}
    assert nodes["node-b"]["address"] == b.url
    assert nodes["node-b"]["pid"] == b.proc.pid
    wait_until(lambda: {n["node"]: n for n in a.get_json("/v1/cluster")["nodes"]}["node-b"]
               ["pools"][0]["ready_workers"] == 1, 20, "node-b's pool ready in node-a's view")
    beta = {n["node"]: n for n in a.get_json("/v1/cluster")["nodes"]}["node-b"]["pools"][0]
    assert beta["name"] == "beta" and beta["workers_target"] == 1


def test_a_killed_node_drops_out_and_a_stopped_one_leaves_at_once(start_daemon, redis_server,
                                                                  tmp_path):
    a = _node(start_daemon, redis_server, "node-a", "alpha")
    c = _node(start_daemon, redis_server, "node-c", "gamma", heartbeat="10s")
    # node-b is killed below: not one of the fixture's daemons, which must all exit 0.
    os.makedirs(str(tmp_path / "b"))
    b = Daemon(str(tmp_path / "b"), {"beta": {"handler": "echo"}},
               server={"listen": "127.0.0.1:0", "journal": ""},
               extra_sections={"cluster": _cluster_keys(redis_server, "node-b")})
    try:
        b.start()
        wait_until(lambda: _names(a) == ["node-a", "node-b", "node-c"], 20, "three nodes")
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(10)
        wait_until(lambda: _names(a) == ["node-a", "node-c"], 20,
                   "node-b gone after its key expired")
    finally:
        b.kill()
        b.close()
    # node-c's key lives 30 s: only its own goodbye can make it leave within the wait below.
    assert c.stop() == 0
    wait_until(lambda: _names(a) == ["node-a"], 5, "node-c gone as it stopped")
    assert a.job("alpha", b"still serving").body == b"still serving"


def test_redis_down_is_reported_and_the_nodes_come_back_by_themselves(start_daemon,
                                                                      redis_server):
    a = _node(start_daemon, redis_server, "node-a", "alpha")
    b = _node(start_daemon, redis_server, "node-b", "beta")
    wait_until(lambda: _names(a) == ["node-a", "node-b"], 20, "both nodes")
    redis_server.stop()
    wait_until(lambda: a.get_json("/v1/cluster")["redis"]["connected"] is False, 20,
               "node-a to notice that Redis is gone")
    assert a.get_json("/v1/cluster")["redis"]["error"]
    assert a.job("alpha", b"alone").body == b"alone"   # a node without Redis still serves
    redis_server.start()                              # empty: the nodes must announce again
    wait_until(lambda: _names(a) == ["node-a", "node-b"] and _names(b) == ["node-a", "node-b"]
               and a.get_json("/v1/cluster")["redis"]["connected"], 30, "both nodes back")


def test_a_password_comes_from_the_environment(start_daemon, tmp_path):
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip("redis-server not installed")
    server = RedisServer(tmp_path, free_port(), password="s3cret-pw")
    server.start()
    try:
        os.environ["BULKHEAD_TEST_REDIS_PW"] = "s3cret-pw"
        a = _node(start_daemon, server, "node-a", "alpha", password_env="BULKHEAD_TEST_REDIS_PW")
        wait_until(lambda: _names(a) == ["node-a"], 20, "node-a announced with AUTH")
        assert "s3cret-pw" not in open(a.config_path).read()
    finally:
        os.environ.pop("BULKHEAD_TEST_REDIS_PW", None)
        server.stop()


def test_status_and_metrics_show_the_cluster(start_daemon, redis_server):
    a = _node(start_daemon, redis_server, "node-a", "alpha")
    b = _node(start_daemon, redis_server, "node-b", "beta")
    wait_until(lambda: [p["ready_workers"] for n in a.get_json("/v1/cluster")["nodes"]
                        for p in n["pools"]] == [1, 1], 20, "both nodes, their pools ready")
    wait_until(lambda: "beta" in a.get_json("/v1/cluster")["remote_pools"], 20,
               "node-a to send jobs to beta")
    assert a.job("beta", b"through the cluster").status == 200
    # The job is done: the next heartbeats read beta's stream empty again.
    wait_until(lambda: a.get_json("/v1/cluster")["in_stream"].get("beta") == 0, 20,
               "node-a to read beta's stream empty")
    out = run_bulkhead("status", "--cluster", "--url", a.url)
    assert out.returncode == 0, out
    text = out.stdout.decode()
    assert "node node-a; redis redis://127.0.0.1:%d/0: connected" % redis_server.port in text
    table, _, tail = text.partition("\n\nin streams: ")
    rows = {line.split()[0]: line for line in table.splitlines()[3:] if line.strip()}
    assert set(rows) == {"node-a", "node-b"}, text
    assert b.url in rows["node-b"] and "beta 1/1" in rows["node-b"], text
    assert "beta 0" in tail.splitlines()[0], text
    assert "this node: sent 1, taken 0 (0 taken over, 0 poisoned), waiting 0" in tail, text
    number = a.get_json("/v1/cluster")["node_number"]
    assert number >= 1
    assert "job ids: node number %d; async job records unwritten 0" % number in tail, text
    metrics = a.http("GET", "/metrics").body.decode()
    assert 'bulkhead_cluster_redis_connected{node="node-a"} 1' in metrics
    assert 'bulkhead_cluster_nodes{node="node-a"} 2' in metrics


def test_without_a_cluster_section_the_view_says_so(daemon):
    assert daemon.get_json("/v1/cluster") == {"enabled": False}
    out = run_bulkhead("status", "--cluster", "--url", daemon.url)
    assert out.returncode == 0 and b"not part of a cluster" in out.stdout, out
    assert b"bulkhead_cluster" not in daemon.http("GET", "/metrics").body


def test_an_unset_password_variable_stops_the_daemon_at_start(tmp_path):
    path = tmp_path / "bulkhead.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:0"\njournal = ""\n\n[cluster]\n'
                    'redis = "redis://127.0.0.1:1/0"\npassword_env = "BULKHEAD_TEST_UNSET_PW"\n\n'
                    '[pool.a]\nhandler = "fault_handlers:echo"\n')
    os.environ.pop("BULKHEAD_TEST_UNSET_PW", None)
    p = run_bulkhead("serve", "-c", str(path), timeout=30)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 2, (p.returncode, err)
    assert "BULKHEAD_TEST_UNSET_PW" in err and "not set" in err, err
