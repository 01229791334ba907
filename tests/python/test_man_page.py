"""The man page, bulkhead(1): written by the build (build/bulkhead.1) from the same definition as
`--help`, it renders with man(1), names every command and option, and lists for each command
exactly the options its `--help` lists."""

import os
import re
import shutil
import subprocess

from conftest import BIN, run_bulkhead

COMMANDS = ["serve", "check", "call", "status", "env", "events", "run", "top", "version"]
MAN_PAGE = os.path.join(os.path.dirname(BIN), "bulkhead.1")


def _help_options(command):
    """Option names and positionals of `bulkhead COMMAND --help` (CLI11's Options/Positionals)."""
    out = run_bulkhead(command, "--help").stdout.decode()
    names = set()
    for section in ("Options:", "Positionals:"):
        if section not in out:
            continue
        block = out.split(section + "\n", 1)[1].split("\n\n", 1)[0]
        for line in block.splitlines():
            first = line.split()[0] if line.startswith("  ") and line.split() else ""
            if line.startswith("    ") and not first.startswith("-"):
                continue        # a wrapped description
            names.update(n for n in first.split(",") if n)
    return names


def _roff_sections(roff):
    """{command: roff text of its `.SS "bulkhead COMMAND"` section}."""
    sections = {}
    parts = re.split(r'^\.SS "bulkhead (\S+)"\n', roff, flags=re.M)
    for name, body in zip(parts[1::2], parts[2::2]):
        sections[name] = body.split("\n.SH ", 1)[0]
    return sections


def _roff_options(section):
    """Option names and positionals of one section: the terms after each .TP."""
    names = set()
    for term in re.findall(r"^\.TP\n(.*)$", section, re.M):
        names.update(n.replace("\\-", "-") for n in re.findall(r"\\f[BI](.*?)\\fR", term)
                     if n.replace("\\-", "-") not in ("TEXT", "INT", "UINT", "FLOAT"))
    return names


def _render(path):
    env = dict(os.environ, MANWIDTH="100", MANPAGER="cat", PAGER="cat", LC_ALL="C.UTF-8")
    if shutil.which("man"):
        p = subprocess.run(["man", "-l", path], capture_output=True, env=env, timeout=30)
    else:
        assert shutil.which("groff"), "neither man nor groff: run scripts/deps.sh (man-db)"
        p = subprocess.run(["groff", "-man", "-Tutf8", path], capture_output=True, env=env,
                           timeout=30)
    assert p.returncode == 0, p.stderr
    assert b"warning" not in p.stderr.lower(), p.stderr
    text = p.stdout.decode("utf-8", "replace")
    text = re.sub(r".\x08", "", text)                     # overstrike bold/underline, if any
    return text.replace("\u2010", "-").replace("\u2212", "-")


def test_the_build_writes_the_man_page_from_the_binary():
    assert os.path.isfile(MAN_PAGE), "the build writes %s (CMake target bulkhead_man_page)" % MAN_PAGE
    p = run_bulkhead("man")
    assert p.returncode == 0, p.stderr
    with open(MAN_PAGE, "rb") as f:
        assert f.read() == p.stdout, "build/bulkhead.1 is not what this binary writes: rebuild"


def test_the_man_page_renders_and_names_every_command_and_option():
    text = _render(MAN_PAGE)
    assert re.search(r"^NAME\n\s+bulkhead - ", text, re.M), text[:500]
    for heading in ("SYNOPSIS", "OPTIONS", "COMMANDS", "NOTES"):
        assert re.search(r"^%s$" % heading, text, re.M), (heading, text[:2000])
    for command in COMMANDS:
        assert re.search(r"^\s+bulkhead %s$" % command, text, re.M), command
        for option in _help_options(command):
            assert option in text, (command, option)
    assert "Exit codes" in text and "Examples" in text
    assert not re.search(r"^\s+bulkhead man$", text, re.M)     # hidden


def test_each_command_lists_exactly_the_options_of_its_help():
    with open(MAN_PAGE) as f:
        sections = _roff_sections(f.read())
    assert sorted(sections) == sorted(COMMANDS), sorted(sections)
    for command in COMMANDS:
        in_help = _help_options(command)
        assert "--help" in in_help, (command, in_help)
        assert _roff_options(sections[command]) == in_help, command
