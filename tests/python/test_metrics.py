"""GET /metrics parsed by a real Prometheus text parser (python3-prometheus-client)."""

import pytest

parser = pytest.importorskip("prometheus_client.parser")


def _families(d):
    resp = d.http("GET", "/metrics", timeout=5)
    assert resp.status == 200, resp
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    # The parser raises on any malformed line, duplicate TYPE or interleaved family.
    return {f.name: f for f in parser.text_string_to_metric_families(resp.body.decode())}


def _value(families, family, sample_name, **labels):
    for s in families[family].samples:
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError("no %s%r in %s" % (sample_name, labels, families[family].samples))


def test_metrics_count_outcomes_latency_workers_and_resources(start_daemon):
    d = start_daemon({"m": {"handler": "by_payload", "workers": 2, "retries": 0,
                            "poison_after": 0}})
    d.wait_ready("m")
    for _ in range(3):
        assert d.job("m", b"ok").status == 200
    assert d.job("m", b"crash").outcome == "crashed"
    d.wait_ready("m")
    f = _families(d)
    assert _value(f, "bulkhead_jobs", "bulkhead_jobs_total", pool="m", outcome="ok") == 3
    assert _value(f, "bulkhead_jobs", "bulkhead_jobs_total", pool="m", outcome="crashed") == 1
    assert _value(f, "bulkhead_job_total_seconds", "bulkhead_job_total_seconds_count",
                  pool="m") == 4
    assert _value(f, "bulkhead_job_total_seconds", "bulkhead_job_total_seconds_bucket",
                  pool="m", le="+Inf") == 4
    assert f["bulkhead_job_run_seconds"].type == "histogram"
    assert _value(f, "bulkhead_workers", "bulkhead_workers", pool="m", state="idle") == 2
    assert _value(f, "bulkhead_worker_deaths", "bulkhead_worker_deaths_total", pool="m") == 1
    assert _value(f, "bulkhead_breaker_open", "bulkhead_breaker_open", pool="m") == 0
    # The sampler fills per-worker gauges within a sample interval.
    from conftest import wait_until
    wait_until(lambda: len(_families(d)["bulkhead_worker_rss_bytes"].samples) == 2, 10,
               "both workers to be sampled")
    assert all(s.value > 1_000_000 for s in _families(d)["bulkhead_worker_rss_bytes"].samples)
