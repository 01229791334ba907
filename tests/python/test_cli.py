"""`bulkhead call`, `status` against a running daemon, `check` (also `--import`), and the command
line itself: `--version`, unknown commands, help with examples and exit codes."""

import os
import re
import subprocess

from conftest import BIN, HERE, PYTHON, REPO, render_config, run_bulkhead, wait_until


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


# -- call: a payload over the daemon's max_request_body ----------------------------------------


def test_call_oversized_payload_prints_the_413(daemon, tmp_path):
    # The daemon refuses it from the headers and closes, which breaks the CLI's send: it must
    # still print the daemon's answer, not "Broken pipe".
    f = tmp_path / "big.bin"
    with open(f, "wb") as out:
        out.truncate(100 << 20)           # 100 MB against the default 64 MiB
    p = run_bulkhead("call", "echo", "@%s" % f, "--url", daemon.url, timeout=120)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 1, (p.returncode, err)
    assert "payload_too_large" in err and "413" in err, err
    assert "broken pipe" not in err.lower() and "cannot talk" not in err, err
    daemon.assert_serving()


# -- status: ready against target, and why a pool is not ready ---------------------------------


def _pool_row(out, name):
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == [name]]
    assert rows, out
    return rows[0]


def test_status_shows_ready_against_target(daemon):
    daemon.wait_ready("echo", 2)
    p = run_bulkhead("status", "--url", daemon.url)
    out = p.stdout.decode()
    assert p.returncode == 0, p.stderr.decode()
    assert out.split()[:2] == ["POOL", "READY"], out
    assert _pool_row(out, "echo")[1] == "2/2", out
    assert _pool_row(out, "whoami")[1] in ("0/1", "1/1"), out
    for pid in daemon.idle_pids("echo"):
        row = [line.split() for line in out.splitlines() if str(pid) in line.split()]
        assert row and row[0][2:4] == ["idle", "yes"], out


def test_status_shows_a_pool_that_cannot_start(start_daemon):
    # Needs the daemon's ready_workers and last_start_failure (pool JSON, GET /v1/pools).
    d = start_daemon({"echo": {"handler": "echo"},
                      "broken": {"handler": "no_such_module_here:handle"}})
    wait_until(lambda: d.pool_status("broken").get("last_start_failure"), 30,
               "a start failure of pool broken")
    p = run_bulkhead("status", "--url", d.url)
    out = p.stdout.decode()
    assert p.returncode == 0, p.stderr.decode()
    assert _pool_row(out, "broken")[1] == "0/1", out
    assert "pool broken: last start failure" in out, out
    assert "no_such_module_here" in out, out
    for line in out.splitlines():
        words = line.split()
        if words[:1] and words[0].startswith("broken-"):
            assert words[3] == "no", out          # spawning/starting: not ready


# -- check: the interpreter and, with --import, the entry points -------------------------------


def _config(tmp_path, pools, name="bulkhead.toml"):
    path = tmp_path / name
    path.write_text(render_config({"listen": "127.0.0.1:0"}, pools))
    return str(path)


def _pool(**keys):
    pool = {"handler": "fault_handlers:echo", "python": PYTHON, "python_path": [HERE]}
    pool.update(keys)
    return pool


def test_check_import_accepts_a_good_config(tmp_path):
    path = _config(tmp_path, {"echo": _pool(preload="fault_handlers:preload_value"),
                              "env": _pool(handler="fault_handlers:env_dump")})
    p = run_bulkhead("check", "--import", "-c", path)
    assert p.returncode == 0, p.stderr.decode()
    assert "ok" in p.stdout.decode()


def test_check_import_names_a_missing_module(tmp_path):
    path = _config(tmp_path, {"echo": _pool(), "broken": _pool(handler="nope:handle")})
    plain = run_bulkhead("check", "-c", path)
    assert plain.returncode == 0, plain.stderr.decode()     # without --import nothing is run
    p = run_bulkhead("check", "--import", "-c", path)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 2, (p.returncode, err)
    assert "ModuleNotFoundError: No module named 'nope'" in err, err
    assert "pool.broken.handler" in err and path in err, err
    assert "pool.echo" not in err, err


def test_check_import_names_a_missing_preload_function(tmp_path):
    path = _config(tmp_path, {"p": _pool(preload="fault_handlers:no_such_preload")})
    p = run_bulkhead("check", "--import", "-c", path)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 2, (p.returncode, err)
    assert "pool.p.preload" in err and "AttributeError" in err, err
    assert "no_such_preload" in err, err


def test_check_import_runs_with_the_workers_environment(tmp_path):
    # The module imports only with the pool's env and python_path, as a worker gets them; a module
    # in the current directory is not importable (a worker does not run from there).
    handlers = tmp_path / "handlers"
    handlers.mkdir()
    (handlers / "needs_env.py").write_text(
        "import os\n"
        "if os.environ.get('NEEDS_ENV') != 'yes':\n"
        "    raise RuntimeError('NEEDS_ENV is %r' % os.environ.get('NEEDS_ENV'))\n"
        "def handle(payload, ctx):\n"
        "    return payload\n")
    (tmp_path / "only_in_cwd.py").write_text("def handle(payload, ctx):\n    return payload\n")
    good = _config(tmp_path, {"e": _pool(handler="needs_env:handle", python_path=["handlers"],
                                         env={"NEEDS_ENV": "yes"})}, "good.toml")
    bad = _config(tmp_path, {"e": _pool(handler="needs_env:handle", python_path=["handlers"])},
                  "bad.toml")
    cwd = _config(tmp_path, {"c": _pool(handler="only_in_cwd:handle", python_path=[])},
                  "cwd.toml")
    env = dict(os.environ, NEEDS_ENV="yes")   # not inherited: a worker's env is built
    run = lambda path: subprocess.run([BIN, "check", "--import", "-c", path], cwd=str(tmp_path),
                                      env=env, capture_output=True, timeout=60)
    p = run(good)
    assert p.returncode == 0, p.stderr.decode()
    p = run(bad)
    assert p.returncode == 2 and b"RuntimeError: NEEDS_ENV is None" in p.stderr, p.stderr
    p = run(cwd)
    assert p.returncode == 2, p.stderr
    assert b"No module named 'only_in_cwd'" in p.stderr, p.stderr


def test_check_refuses_a_missing_python(tmp_path):
    path = _config(tmp_path, {"echo": _pool(), "gone": _pool(python="/nonexistent/python3")})
    for args in (("check", "-c", path), ("check", "--import", "-c", path)):
        p = run_bulkhead(*args)
        err = p.stderr.decode("utf-8", "replace")
        assert p.returncode == 2, (args, p.returncode, err)
        assert path in err and "pool.gone.python" in err and "/nonexistent/python3" in err, err


def test_check_refuses_a_python_that_is_not_executable(tmp_path):
    fake = tmp_path / "python3"
    fake.write_text("not a program\n")
    path = _config(tmp_path, {"echo": _pool(python=str(fake))})
    p = run_bulkhead("check", "-c", path)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 2, (p.returncode, err)
    assert "pool.echo.python" in err and "not an executable file" in err, err


# -- version, unknown commands, help with examples and exit codes ------------------------------

COMMANDS = ["serve", "check", "call", "status", "env", "events", "run", "top", "version"]


def _project_version():
    with open(os.path.join(REPO, "CMakeLists.txt")) as f:
        return re.search(r"project\(bulkhead VERSION ([0-9.]+)", f.read()).group(1)


def test_version_names_the_project_version_and_commit():
    p = run_bulkhead("--version")
    out = p.stdout.decode()
    assert p.returncode == 0, p.stderr
    match = re.fullmatch(r"bulkhead ([0-9.]+)(?: \(commit ([0-9a-f]{7,40})\))?\n", out)
    assert match, out
    assert match.group(1) == _project_version(), out
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True)
    if head.returncode == 0:
        # Built from this checkout (every build rewrites the commit): HEAD's.
        assert match.group(2) and head.stdout.decode().startswith(match.group(2)), \
            (out, head.stdout, "rebuild after committing")
    same = run_bulkhead("version")
    assert same.returncode == 0 and same.stdout.decode() == out, same


def test_an_unknown_command_is_named_with_the_valid_ones():
    p = run_bulkhead("frobnicate", "-c", "x.toml")
    err = p.stderr.decode()
    assert p.returncode == 2, (p.returncode, err)
    assert "unknown command 'frobnicate'" in err, err
    listed = re.search(r"commands: (.*)", err).group(1).split(", ")
    assert listed == COMMANDS, err
    assert p.stdout == b""


def test_no_command_is_a_usage_error():
    p = run_bulkhead()
    assert p.returncode == 2, p
    assert b"no command given" in p.stderr and b"serve" in p.stderr, p.stderr


def test_an_unknown_option_is_a_usage_error():
    p = run_bulkhead("status", "--no-such-option")
    assert p.returncode == 2, p
    assert b"--no-such-option" in p.stderr, p.stderr


def test_every_command_has_examples_and_exit_codes_in_its_help():
    for command in COMMANDS:
        p = run_bulkhead(command, "--help")
        out = p.stdout.decode()
        assert p.returncode == 0, (command, p.stderr)
        examples = out.split("Examples:\n", 1)[1].split("\n\n", 1)[0] if "Examples:\n" in out \
            else ""
        lines = [line.strip() for line in examples.splitlines() if line.strip()]
        assert lines, (command, out)
        for line in lines:       # each example runs this very command
            assert re.match(r"(.*\| )?bulkhead %s\b" % command, line), (command, line)
        codes = out.split("Exit codes:\n", 1)[1] if "Exit codes:\n" in out else ""
        assert re.search(r"^\s+0\s+\S", codes, re.M), (command, out)


def test_top_level_help_lists_every_command_and_the_exit_codes():
    p = run_bulkhead("--help")
    out = p.stdout.decode()
    assert p.returncode == 0, p.stderr
    for command in COMMANDS:
        assert re.search(r"^\s+%s\s" % command, out, re.M), (command, out)
    assert not re.search(r"^\s+man\s", out, re.M), out      # hidden: the build's man page writer
    assert "Exit codes" in out and "3  the daemon cannot be reached" in out, out
