"""The project's documents stand alone: no reference to anything outside the repository, and
every relative link in README.md and docs/ points at a file that exists.

Runs on the source tree alone (no build, no daemon).
"""

import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
THIS_FILE = os.path.abspath(__file__)

# Where text is read: documents, examples, benchmarks, scripts, sources and their comments, tests.
SCANNED = ["README.md", "BENCHMARKS.md", "CMakeLists.txt", "docs", "examples", "bench", "scripts",
           "src", "python", "tests", "packaging", "cmake", ".ci"]
TEXT_SUFFIXES = (".md", ".py", ".cc", ".h", ".sh", ".toml", ".txt", ".cmake", ".service", ".html",
                 ".js", ".css", ".json", ".cfg", ".ini", "")

# References that point outside the repository: notes the code was written from, a tracker's
# numbers, the machine it was written on. Each pattern is written so that this file does not
# match it.
OUTSIDE = [
    (re.compile(r"\.\./" + "shared"), "a path outside the repository"),
    (re.compile(r"\b(DESIGN|FAULTS|PEERS)" + r"\.md\b"), "a document that is not in the repository"),
    (re.compile(r"\bincident" + r"s?\b", re.IGNORECASE), "an incident report outside the repository"),
    (re.compile(r"\bissues? ?#?" + r"\d+\b", re.IGNORECASE), "an issue tracker's number"),
    (re.compile("/" + "work/"), "a path of the machine the text was written on"),
]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _scanned_files():
    for entry in SCANNED:
        path = os.path.join(REPO, entry)
        if os.path.isfile(path):
            yield path
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", "build", "node_modules")
                       and not d.startswith(".pytest")]
            for name in files:
                if os.path.splitext(name)[1] in TEXT_SUFFIXES:
                    yield os.path.join(root, name)


def _markdown_files():
    yield os.path.join(REPO, "README.md")
    docs = os.path.join(REPO, "docs")
    for name in sorted(os.listdir(docs)):
        if name.endswith(".md"):
            yield os.path.join(docs, name)


def _read(path):
    with open(path, "rb") as f:
        data = f.read()
    if b"\0" in data:
        return None     # binary
    return data.decode("utf-8", "replace")


def test_no_reference_outside_the_repository():
    found = []
    scanned = 0
    for path in _scanned_files():
        if os.path.abspath(path) == THIS_FILE:
            continue
        text = _read(path)
        if text is None:
            continue
        scanned += 1
        for number, line in enumerate(text.splitlines(), 1):
            for pattern, what in OUTSIDE:
                match = pattern.search(line)
                if match:
                    found.append("%s:%d: %r is %s: describe the case instead"
                                 % (os.path.relpath(path, REPO), number, match.group(0), what))
    assert scanned > 100, "only %d files scanned: is REPO (%s) the source tree?" % (scanned, REPO)
    assert not found, "\n".join(found)


def test_the_reference_patterns_catch_what_they_are_for():
    # The guard above is only as good as its patterns: each catches its case.
    samples = ["see ../" + "shared/notes", "as " + "FAULTS.md says", "Incident" + " 03",
               "issue" + " 12", "/" + "work/main/x"]
    for sample, (pattern, _) in zip(samples, OUTSIDE):
        assert pattern.search(sample), (pattern.pattern, sample)
    assert not any(p.search("an issue with the design.md section") for p, _ in OUTSIDE)


def _links(path):
    text = _read(path)
    in_code = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            yield number, target


def test_every_relative_link_points_at_a_file_that_exists():
    broken = []
    checked = 0
    for path in _markdown_files():
        for number, target in _links(path):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue    # http:, https:, mailto:, or an anchor in the same page
            relative = target.split("#", 1)[0]
            resolved = os.path.normpath(os.path.join(os.path.dirname(path), relative))
            checked += 1
            if os.path.exists(resolved):
                continue
            broken.append("%s:%d: %s (no %s)" % (os.path.relpath(path, REPO), number, target,
                                                 os.path.relpath(resolved, REPO)))
    assert checked > 10, "no links found: is REPO (%s) the source tree?" % REPO
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("line,expected", [
    ("see [the API](docs/api.md) and [x](https://example.com)", ["docs/api.md",
                                                                "https://example.com"]),
    ("[run](run.md#exit-codes)", ["run.md#exit-codes"]),
    ("`[not a link](nowhere.md)` in code", []),
])
def test_link_pattern(line, expected, tmp_path):
    page = tmp_path / "page.md"
    page.write_text(line + "\n")
    assert [target for _, target in _links(str(page))] == expected
