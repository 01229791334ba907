"""The "bulkhead" joblib backend: cross_validate through bulkhead workers.

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


def test_leaky_folds_fail_in_one_process_and_finish_one_per_worker(tag):
    """The fold-3 case through cross_validate: folds that leak maps, threads and memory under a
    pids limit. All in one process, the third fold cannot start its threads (typed
    ResourceExhausted); through the backend with one fold per worker, every fold finishes, each
    in its own process, and reports what it held."""
    import bulkhead
    import bulkhead.joblib  # noqa: F401
    from sklearn.model_selection import cross_validate
    import joblib_estimators as E
    X, y = _data()
    with bulkhead.Executor(max_workers=1, pids_limit=64, retries=0,
                           env={"BULKHEAD_TEST_TAG": tag}) as ex:
        with pytest.raises(bulkhead.ResourceExhausted) as info:
            ex.submit(E.sequential_cross_validate, X, y, 4).result(120)
    assert "pids limit 64 reached" in info.value.last_attempt.get("cause", ""), info.value
    with joblib.parallel_backend("bulkhead", n_jobs=2, pids_limit=64, max_jobs_per_worker=1,
                                 retries=0, env={"BULKHEAD_TEST_TAG": tag}):
        out = cross_validate(E.LeakyFold(), X, y, cv=4, n_jobs=2, return_estimator=True,
                             error_score="raise")
    prints = [est.footprint_ for est in out["estimator"]]
    assert len({p["pid"] for p in prints}) == 4, prints     # a fresh worker per fold
    for p in prints:
        assert p["maps"] >= 1000 and 20 <= p["threads"] < 30, p
