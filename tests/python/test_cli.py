"""`bulkhead call` and `bulkhead status` against a running daemon."""

from conftest import run_bulkhead


def test_call_prints_result(daemon):
    p = run_bulkhead("call", "echo", "hello from the cli", "--url", daemon.url)
    assert p.returncode == 0, p.stderr.decode()
    assert b"hello from the cli" in p.stdout


def test_call_payload_from_file(daemon, tmp_path):
    f = tmp_path / "payload.bin"
    f.write_bytes(b"file payload")
    p = run_bulkhead("call", "echo", "@%s" % f, "--url", daemon.url)
    assert p.returncode == 0, p.stderr.decode()
    assert b"file payload" in p.stdout


def test_call_failure_exits_nonzero_with_evidence(start_daemon):
    d = start_daemon({"segv": {"handler": "segfault"}})
    p = run_bulkhead("call", "segv", "x", "--url", d.url)
    assert p.returncode != 0
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert "crashed" in out and "SIGSEGV" in out, out


def test_call_unknown_pool_exits_nonzero(daemon):
    p = run_bulkhead("call", "nope", "x", "--url", daemon.url)
    assert p.returncode != 0


def test_status_lists_pools(daemon):
    daemon.wait_ready("echo")
    p = run_bulkhead("status", "--url", daemon.url)
    assert p.returncode == 0, p.stderr.decode()
    out = p.stdout.decode()
    assert "echo" in out and "whoami" in out
    for pid in daemon.idle_pids("echo"):
        assert str(pid) in out
