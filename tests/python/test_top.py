"""`bulkhead top`: the live view in a real terminal (a detached tmux pane of fixed size), one
plain frame when stdout is not a terminal, and a daemon that does not answer.

Each live test runs `bulkhead top ...` in the pane under a small shell wrapper that records the
terminal's settings before, compares them after, and prints ``TTY=restored`` (or ``changed``)
and ``EXIT=<status>``. Every wait polls what the pane shows (capture-pane); nothing sleeps.
"""

import os
import re
import shlex
import signal
import socket
import subprocess
import uuid

import pytest

from conftest import BIN, pid_cmdline, run_bulkhead, wait_until

WIDTH, HEIGHT = 150, 45
ESC = "\x1b"


class Pane:
    """One detached tmux session on a private server, running one command."""

    def __init__(self, command, width=WIDTH, height=HEIGHT):
        self.server = "bulkhead-top-test-" + uuid.uuid4().hex[:12]
        self.tmux("-f", "/dev/null", "new-session", "-d", "-x", str(width), "-y", str(height),
                  "-s", "top", command)

    def tmux(self, *args):
        p = subprocess.run(["tmux", "-L", self.server, *args], capture_output=True, timeout=10)
        assert p.returncode == 0, (args, p.stderr.decode("utf-8", "replace"))
        return p.stdout.decode("utf-8", "replace")

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", "top")

    def flag(self, name):
        return self.tmux("display-message", "-p", "-t", "top", "#{%s}" % name).strip()

    def keys(self, *keys):
        self.tmux("send-keys", "-t", "top", *keys)

    def wait_for(self, predicate, what, timeout=20):
        """Polls the screen until predicate(screen) is truthy and returns that screen; a
        failure shows the last screen seen."""
        last = [""]

        def check():
            last[0] = self.screen()
            return predicate(last[0])

        try:
            wait_until(check, timeout, what, interval=0.05)
            return last[0]
        except AssertionError as exc:
            raise AssertionError("%s; the pane shows:\n%s" % (exc, last[0])) from None

    def wait_text(self, text, timeout=20):
        return self.wait_for(lambda s: text in s, repr(text), timeout)

    def close(self):
        subprocess.run(["tmux", "-L", self.server, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def pane():
    panes = []

    def start(*top_args, width=WIDTH, height=HEIGHT):
        top = shlex.join([BIN, "top", *top_args])
        # `exec cat` keeps the pane (and what it shows) after top has exited. Ctrl-C goes to the
        # whole foreground group: the wrapper traps it (top, exec'd, gets the default back).
        command = ('trap : INT; before=$(stty -g); %s; rc=$?; '
                   'if [ "$(stty -g)" = "$before" ]; then echo TTY=restored; '
                   'else echo TTY=changed; fi; echo EXIT=$rc; exec cat' % top)
        p = Pane(command, width, height)
        panes.append(p)
        return p

    yield start
    for p in panes:
        p.close()


def assert_left_cleanly(p, status=0):
    """top exited with `status`, the terminal's settings are back, the alternate screen is
    left (the normal screen shows only the wrapper's lines) and the cursor is visible."""
    screen = p.wait_text("EXIT=")
    assert "EXIT=%d" % status in screen, screen
    assert "TTY=restored" in screen, screen
    assert p.flag("alternate_on") == "0", screen
    assert p.flag("cursor_flag") == "1", screen
    assert "LAST FAILURES" not in screen and "WORKER" not in screen, screen


def table(screen, first_title):
    """The rows (lists of words) of the table whose header starts with first_title, as dicts
    keyed by the header's words (enough for the one-word columns before the last)."""
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [first_title])
    header = lines[start].split()
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(dict(zip(header, line.split())))
    return rows


def pool_row(screen, name):
    rows = [r for r in table(screen, "POOL") if r.get("POOL") == name]
    return rows[0] if rows else None


def failures(screen):
    lines = screen.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("LAST FAILURES"))
    out = []
    for line in lines[at + 2:]:
        if not line.strip():
            break
        out.append(line)
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def top_pid(url):
    """The pid of the `bulkhead top` watching url."""
    def find():
        for name in os.listdir("/proc"):
            if name.isdigit() and pid_cmdline(int(name)).startswith("%s top --url %s" % (BIN, url)):
                return int(name)
        return None
    return wait_until(find, 10, "the bulkhead top process")


# -- the live view ------------------------------------------------------------------------------


def test_live_view_shows_workers_ok_counts_and_a_crash_then_q_restores_the_terminal(
        start_daemon, pane):
    d = start_daemon({"crashy": {"handler": "by_payload", "workers": 2}})
    pids = [str(w["pid"]) for w in d.wait_ready("crashy")]
    p = pane("--url", d.url, "--interval", "200ms")
    screen = p.wait_for(lambda s: all(pid in s for pid in pids) and pool_row(s, "crashy"),
                        "the pool and its worker pids")
    assert pool_row(screen, "crashy")["READY"] == "2/2", screen
    assert all(len(line) <= WIDTH for line in screen.splitlines())
    assert p.flag("alternate_on") == "1", screen

    for i in range(3):
        r = d.job("crashy", b"fine %d" % i)
        assert r.status == 200, r
    p.wait_for(lambda s: (pool_row(s, "crashy") or {}).get("OK") == "3", "OK 3 for crashy")

    r = d.job("crashy", b"crash")
    assert r.outcome == "crashed", r
    screen = p.wait_for(lambda s: any("crashy" in f and "crashed" in f for f in failures(s)),
                        "the crash in LAST FAILURES")
    row = pool_row(screen, "crashy")
    assert row["FAILED"] == "1", screen
    assert "crashed 1" in screen, screen

    p.keys("q")
    assert_left_cleanly(p, 0)


def test_resize_redraws_at_the_new_size_and_ctrl_c_quits(daemon, pane):
    daemon.wait_ready("echo", 2)
    # A refresh every hour: any redraw seen here comes from SIGWINCH, not from a new fetch.
    p = pane("--url", daemon.url, "--interval", "1h")
    screen = p.wait_for(lambda s: pool_row(s, "echo") and pool_row(s, "whoami"), "both pools")
    assert "more workers" not in screen, screen

    p.tmux("resize-window", "-t", "top", "-x", "70", "-y", "13")
    screen = p.wait_text("more workers")
    lines = screen.rstrip("\n").splitlines()
    assert len(lines) <= 13 and all(len(line) <= 70 for line in lines), screen
    assert lines[0].startswith("bulkhead top  " + daemon.url), screen

    p.keys("C-c")
    assert_left_cleanly(p, 0)


def test_sigterm_restores_the_terminal_then_ends_by_the_signal(daemon, pane):
    p = pane("--url", daemon.url, "--interval", "1h")
    p.wait_text("LAST FAILURES")
    os.kill(top_pid(daemon.url), signal.SIGTERM)
    assert_left_cleanly(p, 128 + signal.SIGTERM)


def test_ctrl_z_gives_the_terminal_back_and_fg_brings_the_view_back(daemon, pane):
    # Job control needs an interactive shell: top is typed into one, as a user would.
    p = Pane("env PS1='$ ' bash --norc --noprofile -i")
    try:
        p.wait_for(lambda s: s.strip() == "$", "the shell's prompt")
        p.keys(shlex.join([BIN, "top", "--url", daemon.url]), "Enter")
        p.wait_text("LAST FAILURES")
        p.keys("C-z")
        screen = p.wait_text("Stopped")
        assert p.flag("alternate_on") == "0" and p.flag("cursor_flag") == "1", screen
        assert "LAST FAILURES" not in screen, screen
        p.keys("fg", "Enter")
        screen = p.wait_for(lambda s: "LAST FAILURES" in s, "the view after fg")
        assert p.flag("alternate_on") == "1", screen
        p.keys("q")
        p.wait_for(lambda s: "LAST FAILURES" not in s, "the shell's screen after q")
        p.keys("echo EXIT=$?", "Enter")
        p.wait_text("EXIT=0")
        assert p.flag("alternate_on") == "0"
    finally:
        p.close()


def test_unreachable_daemon_is_shown_and_retried_until_it_answers(start_daemon, pane):
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    p = pane("--url", url, "--interval", "200ms")

    def tries(screen):
        m = re.search(r"DAEMON UNREACHABLE for \S+ \((\d+) tries\)", screen)
        return int(m.group(1)) if m else 0

    screen = p.wait_for(lambda s: tries(s) >= 2, "two failed tries on screen")
    assert "Connection refused" in screen, screen

    d = start_daemon({"echo": {"handler": "echo"}}, server={"listen": "127.0.0.1:%d" % port})
    screen = p.wait_for(lambda s: pool_row(s, "echo") and "UNREACHABLE" not in s,
                        "the daemon's pool once it answers")
    assert d.url == url

    p.keys("q")
    assert_left_cleanly(p, 0)


def test_a_stopped_daemon_does_not_freeze_the_view(daemon, pane):
    # A stopped daemon's kernel still accepts connections; nobody answers them. The fetch must
    # give up (2 s) and say so, and q must still quit.
    p = pane("--url", daemon.url, "--interval", "200ms")
    p.wait_text("LAST FAILURES")
    daemon.proc.send_signal(signal.SIGSTOP)
    try:
        screen = p.wait_text("no answer from %s within 2s" % daemon.url)
        assert "DAEMON UNREACHABLE" in screen, screen
        p.keys("q")
        assert_left_cleanly(p, 0)
    finally:
        daemon.proc.send_signal(signal.SIGCONT)


# -- one plain frame --------------------------------------------------------------------------


def test_not_a_terminal_prints_one_plain_frame(daemon):
    daemon.wait_ready("echo", 2)
    pids = [str(pid) for pid in daemon.idle_pids("echo")]
    for args in (("top", "--url", daemon.url), ("top", "--once", "--url", daemon.url)):
        p = run_bulkhead(*args)
        out = p.stdout.decode()
        assert p.returncode == 0, (args, p.stderr.decode())
        assert ESC not in out, repr(out)
        assert "q: quit" not in out, out
        assert pool_row(out, "echo")["READY"] == "2/2", out
        assert pool_row(out, "whoami"), out
        assert all(pid in out for pid in pids), out
        assert "LAST FAILURES" in out, out


def test_once_against_no_daemon_exits_3(tmp_path):
    url = "http://127.0.0.1:%d" % free_port()
    for args in (("top", "--once", "--url", url), ("top", "--url", url)):
        p = run_bulkhead(*args)
        assert p.returncode == 3, (args, p.returncode, p.stdout, p.stderr)
        assert "cannot talk to bulkhead" in p.stderr.decode(), p.stderr
        assert p.stdout == b"", p.stdout


def test_bad_interval_is_a_usage_error():
    p = run_bulkhead("top", "--once", "--interval", "5ms", "--url", "http://127.0.0.1:1")
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "--interval" in p.stderr.decode(), p.stderr
    p = run_bulkhead("top", "--help")
    assert p.returncode == 0
    assert b"Exit codes" in p.stdout and b"Example" in p.stdout, p.stdout
