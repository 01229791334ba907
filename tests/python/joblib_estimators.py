"""Estimators for tests/python/test_joblib_backend.py (importable by bulkhead workers)."""

import os
import signal

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

MARKER = 12345.0


class SegfaultWithoutMarker(ClassifierMixin, BaseEstimator):
    """Predicts the majority class; ``fit`` kills its process with SIGSEGV when the training
    set lacks the marker row (X[0, 0] == MARKER), i.e. on the one fold that holds row 0 out."""

    def fit(self, X, y):
        if not np.any(np.asarray(X)[:, 0] == MARKER):
            os.kill(os.getpid(), signal.SIGSEGV)
        self.classes_, counts = np.unique(y, return_counts=True)
        self.majority_ = self.classes_[np.argmax(counts)]
        return self

    def predict(self, X):
        return np.full(len(X), self.majority_)


class LeakyFold(ClassifierMixin, BaseEstimator):
    """A fold that leaks like the fold-3 case (executor_tasks.leaky_fold: 1,000 maps, 20 live
    threads, 50 MB kept in the process, 10 threads of its own work), then predicts the majority
    class. ``footprint_``: its process and what it holds once fitted."""

    def fit(self, X, y):
        import threading
        import executor_tasks
        executor_tasks.leaky_fold(0)
        with open("/proc/self/maps") as f:
            maps = sum(1 for _ in f)
        self.footprint_ = {"pid": os.getpid(), "maps": maps,
                           "threads": threading.active_count()}
        self.classes_, counts = np.unique(y, return_counts=True)
        self.majority_ = self.classes_[np.argmax(counts)]
        return self

    def predict(self, X):
        return np.full(len(X), self.majority_)


def sequential_cross_validate(X, y, folds):
    """Every fold in this one process, as joblib's default n_jobs=1 would run them."""
    from sklearn.model_selection import cross_validate
    return list(cross_validate(LeakyFold(), X, y, cv=folds, error_score="raise")["test_score"])
