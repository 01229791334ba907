"""The "bulkhead" joblib backend (issue 13): cross_validate through bulkhead workers.

Real processes: each ``parallel_backend("bulkhead", ...)`` starts a private supervisor
($BULKHEAD_BIN); workers carry BULKHEAD_TEST_TAG (pool ``env``) and the daemon inherits it from
os.environ, so the tests check through /proc that nothing survives.
"""

import os
import sys
import uuid

import pytest

from conftest import BIN, PYTHON, tagged_pids, wait_until

pytestmark = pytest.mark.skipif(os.path.realpath(sys.executable) != os.path.realpath(PYTHON)
                                and not os.environ.get("BULKHEAD_ANY_PYTHON"),
                                reason="the integration suite runs under /usr/bin/python3")

joblib = pytest.importorskip("joblib")
pytest.importorskip("sklearn")


@pytest.fixture
def tag(monkeypatch):
    value = uuid.uuid4().hex
    monkeypatch.setenv("BULKHEAD_TEST_TAG", value)   # the daemon inherits it
    monkeypatch.setenv("BULKHEAD_BIN", BIN)
    yield value
    wait_until(lambda: not tagged_pids(value), 20, "every process tagged %s to exit" % value)


def _data():
    from sklearn.datasets import make_classification
    return make_classification(n_samples=240, n_features=12, random_state=0)


def test_backend_is_registered():
    import bulkhead.joblib  # noqa: F401
    from joblib.parallel import BACKENDS
    assert "bulkhead" in BACKENDS


def test_cross_validate_scores_match_the_default_backend(tag):
    import bulkhead.joblib  # noqa: F401
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_validate
    X, y = _data()
    expected = cross_validate(LogisticRegression(), X, y, cv=3)["test_score"]
    backend_pids = set()
    with joblib.parallel_backend("bulkhead", n_jobs=2, memory_limit="1GiB",
                                 max_jobs_per_worker=1, env={"BULKHEAD_TEST_TAG": tag}):
        got = cross_validate(LogisticRegression(), X, y, cv=3, n_jobs=2)["test_score"]
        backend_pids.update(tagged_pids(tag))
    assert list(got) == list(expected)
    assert len(backend_pids) >= 3    # the daemon and its 2 workers ran it


def test_a_segfaulting_fold_is_retried_then_typed_and_named(tag):
    import bulkhead
    import bulkhead.joblib  # noqa: F401
    from sklearn.model_selection import cross_validate
    import joblib_estimators as E
    X, y = _data()
    X[0, 0] = E.MARKER    # only the fold that holds row 0 out crashes
    with joblib.parallel_backend("bulkhead", n_jobs=2, retries=1,
                                 env={"BULKHEAD_TEST_TAG": tag}):
        with pytest.raises(bulkhead.WorkerCrashed) as info:
            cross_validate(E.SegfaultWithoutMarker(), X, y, cv=3, n_jobs=2)
    err = info.value
    assert len(err.attempts) == 2          # retried once on a fresh worker
    assert {a["signal"] for a in err.attempts} == {"SIGSEGV"}
    assert len({a["pid"] for a in err.attempts}) == 2
    assert "_fit_and_score(SegfaultWithoutMarker()" in str(err)
    assert "BatchedCalls[" in err.task
