"""The Executor's in-worker check for "GPU memory full" or "thread or map creation failed" (a
task's exception that must fail as resource_exhausted and be retried, not re-raised as the task's
own error) uses the same text signatures as the supervisor's core rule
(src/core/resource_rules.cc). Two lists in two languages drift: this test reads the C++ tables and
compares."""

import ast
import os
import re

from bulkhead import _executor_task

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cpp_signatures():
    """The GPU memory table, then the thread-or-map one, in their order."""
    with open(os.path.join(REPO, "src", "core", "resource_rules.cc")) as f:
        source = f.read()
    found = ()
    for name in ("kGpuMemorySignatures", "kThreadOrMapSignatures"):
        table = re.search(name + r"\s*=\s*\{(.*?)\};", source, re.S)
        assert table, "%s table not found in src/core/resource_rules.cc" % name
        strings = re.findall(r'"(?:[^"\\]|\\.)*"', table.group(1))
        found += tuple(ast.literal_eval(t) for t in strings)
    return found


def test_the_executor_and_the_supervisor_recognise_the_same_exhaustion_errors():
    assert _executor_task._EXHAUSTION_SIGNATURES == _cpp_signatures()


def test_each_signature_is_recognised_in_a_real_message():
    exc = RuntimeError("can't start new thread")
    assert _executor_task._exhausted(exc, "RuntimeError: can't start new thread")
    assert not _executor_task._exhausted(ValueError("bad"), "ValueError: bad input")
    oom = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert _executor_task._exhausted(oom, "RuntimeError: CUDA out of memory. Tried to allocate")
