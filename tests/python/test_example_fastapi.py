"""examples/fastapi: a real uvicorn serving the example app against a real daemon running the
example's pool: an upload is classified, an upload that crashes the model answers 502 with the
crash's evidence, and the app goes on serving (one keep-alive connection to the daemon)."""

import os

import pytest

from conftest import PYTHON, REPO
from example_apps import (EXAMPLES, AppServer, connections_to, daemon_port, example_pools,
                          free_port, multipart)

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")


@pytest.fixture
def app(start_daemon, tmp_path):
    d = start_daemon(example_pools("fastapi"))
    d.wait_ready("classifier")
    port = free_port()
    server = AppServer([PYTHON, "-m", "uvicorn", "app:app", "--app-dir",
                        os.path.join(EXAMPLES, "fastapi"), "--host", "127.0.0.1", "--port",
                        str(port), "--log-level", "warning"],
                       cwd=str(tmp_path), port=port, log_path=str(tmp_path / "uvicorn.log"),
                       env={"BULKHEAD_URL": d.url, "PYTHONPATH": os.path.join(REPO, "python")})
    server.start()
    try:
        yield d, server
    finally:
        server.stop()


def classify(server, data):
    body, headers = multipart("file", "upload.bin", data)
    return server.post("/classify", body, headers)


def test_classify_then_a_crash_is_a_502_with_evidence_and_the_app_keeps_serving(app):
    d, server = app
    first = classify(server, b"a picture of a cat" * 50)
    assert first.status == 200, first
    assert first.json["label"] and first.json["bytes"] == 900

    crash = classify(server, b"CRASH: a file the decoder chokes on")
    assert crash.status == 502, crash
    evidence = crash.json
    assert evidence["outcome"] == "crashed" and evidence["signal"] == "SIGABRT"
    assert "double free" in evidence["stderr_tail"]
    assert evidence["attempts"] == 2            # retries = 1: a fresh worker crashed too

    after = classify(server, b"a picture of a dog" * 50)
    assert after.status == 200, after
    assert after.json["label"]
    # One AsyncClient for the app's life: its one keep-alive connection served all three.
    assert connections_to(server.proc.pid, daemon_port(d)) == 1
    assert "Traceback" not in server.log()
