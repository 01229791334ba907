"""The web dashboard (GET /, /ui) in a real headless Chromium, and GET /v1/outcomes behind it.

The browser test loads the page from a real daemon, waits for the pool and its workers'
sparklines, makes a worker segfault, and checks the crash reaches the page live (the event list
and the outcome table), that its evidence opens with a click, that the page logged no error and
loaded nothing from anywhere but the daemon. It saves a screenshot for people to look at:
$BULKHEAD_ARTIFACTS/dashboard.png (default build/artifacts/).
"""

import json
import os
import shutil
import time

import pytest

from conftest import REPO
from headless_chromium import CHROMIUM, Browser

ARTIFACTS = os.environ.get("BULKHEAD_ARTIFACTS", os.path.join(REPO, "build", "artifacts"))
# The page refreshes on every event (after 100 ms) and at least every second: a crash is on the
# page well under a second after it happened; 2 s is what a person watching may expect at most.
CRASH_SHOWN_WITHIN_S = 2.0


def _pool(**keys):
    pool = {"handler": "by_payload", "workers": 2, "retries": 0, "poison_after": 0,
            "sample_interval": "100ms"}
    pool.update(keys)
    return pool


def test_the_dashboard_files_come_from_the_binary_with_their_types(start_daemon):
    d = start_daemon({"dash": _pool(workers=1)})
    for path in ("/", "/ui", "/ui/"):
        r = d.http("GET", path)
        assert r.status == 200, (path, r)
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert b'<script src="/ui/dashboard.js"' in r.body
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-cache"
    js = d.http("GET", "/ui/dashboard.js")
    assert js.status == 200 and js.headers["content-type"].startswith("text/javascript")
    assert b"/v1/events" in js.body
    css = d.http("GET", "/ui/dashboard.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    missing = d.http("GET", "/ui/nothing-here.js")
    assert missing.status == 404 and missing.json["error"] == "not_found", missing
    assert d.http("POST", "/", body=b"x").status == 405


def test_outcomes_lists_recent_jobs_with_their_evidence_and_pages_by_seq(start_daemon):
    d = start_daemon({"dash": _pool(workers=1), "other": _pool(workers=1)})
    d.wait_ready("dash")
    assert d.job("dash", b"fine").status == 200
    crash = d.job("dash", b"crash")
    assert crash.outcome == "crashed"
    assert d.job("other", b"elsewhere").status == 200
    every = d.get_json("/v1/outcomes")
    assert [o["outcome"] for o in every["outcomes"]] == ["ok", "crashed", "ok"]
    assert every["last_seq"] == every["outcomes"][-1]["seq"]
    crashed = every["outcomes"][1]
    assert crashed["job"] == crash.headers["x-bulkhead-job"] and crashed["pool"] == "dash"
    assert crashed["attempts"][0]["signal"] == "SIGSEGV", crashed
    assert "result" not in crashed and every["outcomes"][0]["result_bytes"] == 4
    # ?since= returns only what came later; ?pool= only that pool's.
    later = d.get_json("/v1/outcomes?since=%d" % crashed["seq"])
    assert [o["pool"] for o in later["outcomes"]] == ["other"]
    dash = d.get_json("/v1/outcomes?pool=dash&limit=1")
    assert [o["outcome"] for o in dash["outcomes"]] == ["crashed"]
    bad = d.http("GET", "/v1/outcomes?since=-1")
    assert bad.status == 400 and "since" in bad.json["detail"], bad
    assert d.http("GET", "/v1/outcomes?pool=nope").status == 404


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="no chromium (apt-get install chromium)")
@pytest.mark.limit(180)
def test_the_dashboard_shows_a_pool_and_a_crash_live_in_chromium(start_daemon):
    d = start_daemon({"dash": _pool()})
    d.wait_ready("dash")
    assert d.job("dash", b"warm").status == 200
    browser = Browser()
    try:
        browser.open(d.url + "/")
        pool_row = browser.wait_for(
            "(document.querySelector('#pools tr[data-pool=\"dash\"]') || {}).textContent",
            60, "the pool on the page")
        assert "2 / 2" in pool_row, pool_row          # ready / target
        browser.wait_for("document.getElementById('connection').textContent === 'live'", 30,
                         "the event stream connected")
        # A sparkline per series once a worker has two samples (100 ms apart); memory maps are
        # counted less often (a costly read), so RSS, threads and fds for both workers.
        browser.wait_for("document.querySelectorAll('#workers svg polyline').length >= 6", 30,
                         "sparklines of RSS, threads and fds for both workers")
        assert browser.evaluate(
            "getComputedStyle(document.querySelector('#workers th.gpu')).display") == "none", \
            "no GPU column for a pool without gpus"

        crash = d.job("dash", b"crash")
        crashed_at = time.monotonic()
        assert crash.outcome == "crashed"
        job = crash.headers["x-bulkhead-job"]
        outcome_row = "document.querySelector('#outcomes tr[data-job=\"%s\"]')" % job
        browser.wait_for(outcome_row + " && " + outcome_row + ".dataset.outcome === 'crashed'",
                         CRASH_SHOWN_WITHIN_S, "the crashed job in the outcomes")
        browser.wait_for("document.querySelector('#events tr[data-kind=\"crashed\"]') !== null",
                         max(0.1, CRASH_SHOWN_WITHIN_S - (time.monotonic() - crashed_at)),
                         "the crash in the events")
        shown_after = time.monotonic() - crashed_at

        # A click opens the evidence: the signal, and where it was.
        browser.evaluate(outcome_row + ".click()")
        evidence = browser.wait_for(
            "(document.querySelector('#outcomes tr[data-evidence-for=\"%s\"]') || {}).textContent"
            % job, 10, "the crash's evidence after a click")
        assert "SIGSEGV" in evidence and "attempt 1" in evidence, evidence

        os.makedirs(ARTIFACTS, exist_ok=True)
        shot = browser.screenshot(os.path.join(ARTIFACTS, "dashboard.png"))
        with open(shot, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"

        errors = browser.page_errors()
        assert not errors, errors
        foreign = [u for u in browser.requested_urls()
                   if not (u.startswith(d.url + "/") or u.startswith("data:"))]
        assert not foreign, foreign
        print("crash shown %.3f s after its outcome came back" % shown_after)
    finally:
        browser.close()
