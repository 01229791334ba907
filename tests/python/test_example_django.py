"""examples/django: Django's own server (``manage.py runserver --noreload``) serving the example
site against a real daemon running the example's pool: texts are embedded by one warm worker
(the model loaded once), a text that crashes the model answers 502 with the crash's evidence,
and the site goes on serving over the one keep-alive connection of its one client."""

import os

import pytest

from conftest import PYTHON, REPO
from example_apps import EXAMPLES, AppServer, connections_to, daemon_port, example_pools, free_port

pytest.importorskip("django")


@pytest.fixture
def site(start_daemon, tmp_path):
    d = start_daemon(example_pools("django"))
    d.wait_ready("embed")
    port = free_port()
    server = AppServer([PYTHON, "manage.py", "runserver", "127.0.0.1:%d" % port, "--noreload"],
                       cwd=os.path.join(EXAMPLES, "django"), port=port,
                       log_path=str(tmp_path / "runserver.log"),
                       env={"BULKHEAD_URL": d.url, "PYTHONPATH": os.path.join(REPO, "python"),
                            "PYTHONDONTWRITEBYTECODE": "1"})
    server.start()
    try:
        yield d, server
    finally:
        server.stop()


def test_warm_embeddings_then_a_crash_is_a_502_with_evidence_and_the_site_keeps_serving(site):
    d, server = site
    first = server.post("/embed", b"a quiet lake at dawn")
    second = server.post("/embed", b"a quiet lake at dusk")
    assert first.status == 200 and second.status == 200, (first, second)
    assert len(first.json["embedding"]) == first.json["dim"] == 64
    assert first.json["embedding"] != second.json["embedding"]
    # The same warm worker served both, with the model it loaded once.
    assert first.json["worker_pid"] == second.json["worker_pid"]
    assert first.json["model_loads"] == second.json["model_loads"] == 1
    assert first.json["model_loaded_at"] == second.json["model_loaded_at"]

    crash = server.post("/embed", b"segfault in the tokenizer, please")
    assert crash.status == 502, crash
    evidence = crash.json
    assert evidence["outcome"] == "crashed" and evidence["signal"] == "SIGSEGV"
    assert "read past the end of its vocabulary table" in evidence["stderr_tail"]
    assert evidence["attempts"] == 2            # retries = 1: a fresh worker crashed too

    after = server.post("/embed", b"a quiet lake at dawn")
    assert after.status == 200, after
    assert after.json["embedding"] == first.json["embedding"]   # same model, same answer
    assert after.json["worker_pid"] != first.json["worker_pid"]
    assert after.json["model_loads"] == 1
    assert connections_to(server.proc.pid, daemon_port(d)) == 1
    assert "Traceback" not in server.log()
