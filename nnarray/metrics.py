"""Evaluation summaries computed from a network's predictions: confusion matrix, per-class accuracy."""

from __future__ import annotations

import numpy as np  # host side: the (C, C) summary is built from labels read back once

from .backend import to_numpy
from .checks import check_Xt

__all__ = ["predict_classes", "confusion_matrix", "per_class_accuracy"]


def predict_classes(net, X, batch_size=10000):
    """Most probable class per row of ``X`` (N, n_in), as a host int64 array of shape (N,)."""
    xp, be = net.xp, net.backend
    Xd = be.asarray(X, dtype=net.dtype)
    N = Xd.shape[0]
    parts = []
    for s in range(0, N, batch_size):
        A, _ = net.forward(Xd[s : min(s + batch_size, N), ...])
        parts.append(xp.argmax(A, axis=1))
    # One transfer per chunk, after all chunks are queued.
    return np.concatenate([np.asarray(to_numpy(p), dtype=np.int64) for p in parts])


def confusion_matrix(net, X, t, batch_size=10000):
    """(C, C) int64 counts: row = true class, column = predicted class."""
    X, t = check_Xt(X, t, net.n_in, net.n_classes)
    C = net.n_classes
    pred = predict_classes(net, X, batch_size)
    true = np.asarray(to_numpy(t), dtype=np.int64)
    return np.bincount(true * C + pred, minlength=C * C).reshape(C, C)


def per_class_accuracy(cm):
    """Fraction of each true class predicted correctly (NaN for a class absent from the data)."""
    cm = np.asarray(cm)
    totals = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(cm) / np.maximum(totals, 1), np.nan)
