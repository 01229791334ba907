"""`bulkhead check` and `serve` on malformed configs: exit 2, a message naming file, line, key."""

import os

import pytest

from conftest import REPO, run_bulkhead

GOOD = """\
[server]
listen = "127.0.0.1:0"

[pool.echo]
handler = "fault_handlers:echo"
python = "/usr/bin/python3"
python_path = ["."]
workers = 2
queue_limit = 10
job_timeout = "30s"
startup_timeout = "1m"
retries = 2
env = { A = "b" }
"""


def _with_line(lineno, text, replace=True):
    """GOOD with its line ``lineno`` (1-based) replaced by (or preceded by) ``text``."""
    lines = GOOD.splitlines()
    if replace:
        lines[lineno - 1] = text
    else:
        lines.insert(lineno - 1, text)
    return "\n".join(lines) + "\n"


# (id, config text, line the message must name or None, key the message must name or None,
#  whether the message must say "expected")
CASES = [
    ("toml_syntax", _with_line(10, 'job_timeout = "30s'), 10, None, False),
    ("toml_syntax_table", _with_line(4, "[pool.echo"), 4, None, False),
    ("unknown_key", _with_line(9, "wrokers = 3", replace=False), 9, "wrokers", False),
    ("unknown_server_key", _with_line(2, 'listne = "127.0.0.1:0"'), 2, "listne", False),
    ("wrong_type", _with_line(8, 'workers = "two"'), 8, "workers", True),
    ("wrong_type_list", _with_line(7, 'python_path = "."'), 7, "python_path", True),
    ("bad_duration", _with_line(10, 'job_timeout = "30 parsecs"'), 10, "job_timeout", True),
    ("bad_size", _with_line(9, 'max_payload = "12 furlongs"', replace=False), 9,
     "max_payload", True),
    ("workers_zero", _with_line(8, "workers = 0"), 8, "workers", True),
    ("negative_retries", _with_line(12, "retries = -1"), 12, "retries", True),
    ("handler_without_colon", _with_line(5, 'handler = "fault_handlers.echo"'), 5, "handler",
     True),
    # A missing key has no line of its own: the message names its table's header line.
    ("missing_handler", _with_line(5, "# no handler"), 4, "handler", True),
    ("bad_listen", _with_line(2, 'listen = "127.0.0.1:99999"'), 2, "listen", True),
    ("env_not_string", _with_line(13, "env = { A = 1 }"), 13, "env", False),
]


@pytest.mark.parametrize("text,line,key,expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_check_rejects_malformed_config(tmp_path, text, line, key, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    p = run_bulkhead("check", "-c", str(path))
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 2, (p.returncode, err)
    assert str(path) in err or "bad.toml" in err, err
    if line is not None:
        assert "bad.toml:%d:" % line in err, "message must name line %d: %s" % (line, err)
    else:
        assert "bad.toml:" in err, err
    if key is not None:
        assert key in err, "message must name the key %r: %s" % (key, err)
    if expected:
        assert "expected" in err, err


def test_check_accepts_good_config(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    p = run_bulkhead("check", "-c", str(path))
    assert p.returncode == 0, p.stderr.decode()


def test_check_missing_file(tmp_path):
    p = run_bulkhead("check", "-c", str(tmp_path / "nope.toml"))
    assert p.returncode != 0
    assert "nope.toml" in p.stderr.decode()


def test_check_accepts_example_config():
    p = run_bulkhead("check", "-c", os.path.join(REPO, "examples", "bulkhead.toml"))
    assert p.returncode == 0, p.stderr.decode()


def test_serve_refuses_malformed_config(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(_with_line(8, "workers = 0"))
    p = run_bulkhead("serve", "-c", str(path), timeout=20)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 2, (p.returncode, err)
    assert "bad.toml:8:" in err and "workers" in err
    assert "listening on" not in err

