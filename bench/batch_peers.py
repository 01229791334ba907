#!/usr/bin/python3
"""Batch benchmark: bulkhead.Executor and the "bulkhead" joblib backend beside
ProcessPoolExecutor and loky, measured in ONE run, interleaved rounds, medians.

    BULKHEAD_BIN=build/bulkhead /usr/bin/python3 bench/batch_peers.py [--rounds 5]

(a) 1,000 tiny tasks, ``list(ex.map(f, range(1000)))`` of a trivial function, 2 workers:
    bulkhead.Executor, concurrent.futures.ProcessPoolExecutor, loky's reusable executor
    (``joblib.externals.loky.get_reusable_executor``).  Two numbers each: the map alone on a
    started executor ("warm"), and executor start + map + shutdown ("cold", loky: a fresh
    reusable executor each round).  bulkhead also with ``chunksize=50``.
(b) A 5-fold ``cross_validate`` of a real sklearn estimator (``RandomForestClassifier`` on
    ``make_classification``) with ``n_jobs=2``: joblib's default backend (loky, workers reused
    across rounds as in a session) and the "bulkhead" backend, one ``parallel_backend`` context
    per round (so bulkhead pays its start every round; loky's workers stay warm: worst case for
    bulkhead), and bulkhead with the context held across rounds ("reused").

Ratios are against the peer named in each table.  Run on a quiet machine if you can; on a shared
2-core machine the absolute numbers move by 10-30% between runs: compare the ratios of one run.
"""

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))

import bulkhead  # noqa: E402


def tiny(x):
    return x + 1


N_TASKS = 1000
WORKERS = 2


def run_map(ex, chunksize=1):
    out = list(ex.map(tiny, range(N_TASKS), chunksize=chunksize))
    assert out[-1] == N_TASKS
    return out


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def cold_bulkhead(chunksize=1):
    with bulkhead.Executor(max_workers=WORKERS) as ex:
        run_map(ex, chunksize)


def cold_ppe():
    with ProcessPoolExecutor(WORKERS) as ex:
        run_map(ex)


def cold_loky():
    from joblib.externals.loky import get_reusable_executor
    ex = get_reusable_executor(max_workers=WORKERS, kill_workers=True, reuse=False)
    run_map(ex)
    ex.shutdown(wait=True)


def cv_data():
    from sklearn.datasets import make_classification
    return make_classification(n_samples=2000, n_features=30, random_state=0)


def cv_run(X, y):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import cross_validate
    return cross_validate(RandomForestClassifier(n_estimators=60, random_state=0), X, y, cv=5,
                          n_jobs=2)["test_score"]


def median_table(title, results, base):
    print("\n" + title)
    print("%-44s %10s %10s %8s" % ("system", "median s", "min s", "ratio"))
    ref = statistics.median(results[base])
    for name, xs in results.items():
        med = statistics.median(xs)
        print("%-44s %10.3f %10.3f %7.2fx" % (name, med, min(xs), med / ref))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--skip-cv", action="store_true")
    args = ap.parse_args()
    import joblib
    from joblib.externals.loky import get_reusable_executor
    import bulkhead.joblib  # noqa: F401

    print("machine: %d CPUs, load average %s" % (os.cpu_count(), os.getloadavg()))
    # (a) tiny tasks
    warm = {"bulkhead.Executor map (warm)": [], "bulkhead.Executor map chunksize=50 (warm)": [],
            "ProcessPoolExecutor map (warm)": [], "loky map (warm)": []}
    cold = {"bulkhead.Executor start+map+stop": [], "ProcessPoolExecutor start+map+stop": [],
            "loky start+map+stop": []}
    bex = bulkhead.Executor(max_workers=WORKERS)
    pex = ProcessPoolExecutor(WORKERS)
    lex = get_reusable_executor(max_workers=WORKERS)
    for ex in (bex, pex, lex):   # warm up: workers started, code paths hot
        run_map(ex)
    for r in range(args.rounds):
        warm["bulkhead.Executor map (warm)"].append(timed(lambda: run_map(bex)))
        warm["ProcessPoolExecutor map (warm)"].append(timed(lambda: run_map(pex)))
        warm["loky map (warm)"].append(timed(lambda: run_map(lex)))
        warm["bulkhead.Executor map chunksize=50 (warm)"].append(timed(lambda: run_map(bex, 50)))
    bex.shutdown()
    pex.shutdown()
    lex.shutdown(wait=True)
    for r in range(args.rounds):
        cold["bulkhead.Executor start+map+stop"].append(timed(cold_bulkhead))
        cold["ProcessPoolExecutor start+map+stop"].append(timed(cold_ppe))
        cold["loky start+map+stop"].append(timed(cold_loky))
    median_table("(a) %d tiny tasks, %d workers, map of an executor already started"
                 % (N_TASKS, WORKERS), warm, "ProcessPoolExecutor map (warm)")
    median_table("(a) %d tiny tasks, %d workers, executor start + map + shutdown"
                 % (N_TASKS, WORKERS), cold, "ProcessPoolExecutor start+map+stop")
    if args.skip_cv:
        return
    # (b) cross_validate
    X, y = cv_data()
    expected = list(cv_run(X, y))          # loky: default backend, workers then reused
    from joblib.externals.loky import get_reusable_executor as reusable

    def loky_cold():
        reusable().shutdown(wait=True, kill_workers=True)   # the next call starts new workers
        cv_run(X, y)

    cv = {"joblib default (loky), n_jobs=2": [],
          "joblib default (loky), fresh workers (cold)": [],
          "bulkhead backend, context per round (cold)": [],
          "bulkhead backend, context held (reused)": []}
    held = bulkhead.joblib.BulkheadBackend()   # made here: its workers outlive each context
    with joblib.parallel_backend(held, n_jobs=2):
        cv_run(X, y)

    def cold_cv():
        with joblib.parallel_backend("bulkhead", n_jobs=2):
            assert list(cv_run(X, y)) == expected

    def held_cv():
        with joblib.parallel_backend(held, n_jobs=2):
            assert list(cv_run(X, y)) == expected

    for r in range(args.rounds):
        cv["joblib default (loky), n_jobs=2"].append(timed(lambda: cv_run(X, y)))
        cv["joblib default (loky), fresh workers (cold)"].append(timed(loky_cold))
        cv_run(X, y)   # loky warm again for the next round's warm measure
        cv["bulkhead backend, context per round (cold)"].append(timed(cold_cv))
        cv["bulkhead backend, context held (reused)"].append(timed(held_cv))
    held.shutdown()
    median_table("(b) 5-fold cross_validate(RandomForestClassifier), n_jobs=2", cv,
                 "joblib default (loky), n_jobs=2")


if __name__ == "__main__":
    main()
