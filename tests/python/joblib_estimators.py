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
