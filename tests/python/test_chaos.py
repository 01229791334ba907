"""Chaos soak (bounded): thousands of jobs, ~10% of them abort, segfault, hang, leak or raise, on
3 workers with the default failure policy (retries 2, poison_after 2). Every job gets exactly one
outcome, typed as injected: every good job `ok` (none `overloaded` behind the crashes), every
crash `crashed` (quarantined, not `poison`), every hang `timed_out`; none is lost, and the
supervisor's own RSS and fd count stay flat. A longer variant: BULKHEAD_CHAOS_JOBS=10000."""

import collections
import os
import random
import threading

import pytest

from conftest import wait_until

OUTCOME_OF = {b"ok": {"ok"}, b"leak": {"ok"}, b"raise": {"handler_error"},
              b"abort": {"crashed"}, b"segv": {"crashed"}, b"hang": {"timed_out"}}


def _status(pid):
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    return int(fields["VmRSS"].split()[0]), len(os.listdir("/proc/%d/fd" % pid))


@pytest.mark.limit(int(os.environ.get("BULKHEAD_CHAOS_LIMIT_S", "300")))
def test_chaos_soak_every_job_one_typed_outcome(start_daemon):
    jobs = int(os.environ.get("BULKHEAD_CHAOS_JOBS", "2000"))
    d = start_daemon({"chaos": {"handler": "chaos", "workers": 3, "retries": 2,
                                "poison_after": 2, "job_timeout": "3s", "kill_grace": "100ms",
                                "max_rss": "200MiB", "queue_limit": 100000}})
    d.wait_ready("chaos")
    rng = random.Random(1234)
    kinds = [b"ok"] * 90 + [b"abort", b"segv", b"hang", b"leak", b"raise"] * 2
    plan = [rng.choice(kinds) + b":%d" % i for i in range(jobs)]
    results = [None] * jobs
    # Warm-up measurement after the first jobs, final after all of them.
    baseline = {}

    def caller(offset, step):
        for i in range(offset, jobs, step):
            # Only the hanging jobs get a short deadline: the others may queue behind them.
            headers = {"X-Bulkhead-Timeout": "300ms"} if plan[i].startswith(b"hang") else None
            r = d.job("chaos", plan[i], headers=headers, timeout=60)
            results[i] = (r.status, r.outcome, r)
            if i == 200:
                baseline["rss_fds"] = _status(d.proc.pid)

    threads = [threading.Thread(target=caller, args=(k, 8)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
        assert not t.is_alive(), "a caller never got its answer"
    tally = collections.Counter()
    for i, (status, outcome, r) in enumerate(results):
        kind = plan[i].split(b":")[0]
        assert outcome in OUTCOME_OF[kind], (plan[i], status, r)
        if kind in (b"abort", b"segv"):
            assert r.json["quarantined"] is True, r
        tally[outcome] += 1
    assert sum(tally.values()) == jobs
    counters = d.pool_status("chaos")["counters"]
    ended = sum(counters[k] for k in ("ok", "handler_error", "crashed", "timed_out", "poison",
                                      "hung", "oom_killed", "resource_exhausted", "overloaded",
                                      "unavailable", "cancelled"))
    assert ended == counters["submitted"] == jobs, counters
    rss0, fds0 = baseline["rss_fds"]
    wait_until(lambda: d.pool_status("chaos")["in_flight"] == 0, 10, "the pool to settle")
    d.wait_ready("chaos")
    rss1, fds1 = _status(d.proc.pid)
    assert fds1 <= fds0 + 4, "supervisor fds grew from %d to %d" % (fds0, fds1)
    if not os.environ.get("BULKHEAD_SANITIZED"):  # ASan keeps freed memory in quarantine
        assert rss1 <= rss0 + 8 * 1024, "supervisor RSS grew from %d kB to %d kB" % (rss0, rss1)
    print("chaos: %d jobs %s; supervisor RSS %d->%d kB, fds %d->%d" % (
        jobs, dict(tally), rss0, rss1, fds0, fds1))
