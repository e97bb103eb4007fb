"""A user's own data: an ``.npz`` archive of arrays or a CSV table, checked as the built-in sets are.

``.npz``: arrays ``X_train`` (N, D) (or (N, H, W), flattened to rows) and ``t_train`` (N,), optionally
``X_test`` and ``t_test``. ``uint8`` images are scaled to float32 in [0, 1] (pixel / 255), as the built-in
MNIST and Fashion-MNIST loaders do; floating features are taken as they are (as float32).

CSV: one sample per line, the class label in the first column, the features in the others, comma-separated;
a first line that is not numeric is taken as a header. Feature values are used as they are (scale them as you
want them, e.g. pixel / 255).

Labels must be whole numbers ≥ 0 (class indices). Errors are :class:`DatasetError` naming the file, what was
expected and what was found.
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from .._files import NpzError, read_npz
from .errors import DatasetError

__all__ = ["load_file", "load_npz", "load_csv"]


def load_file(path, test_path=None):
    """Load ``path`` (``.npz`` or ``.csv``) and, if given, a separate test file ``test_path``.

    Returns ``(X_train, t_train), test`` with ``test`` = ``(X_test, t_test)`` or None when there is none:
    X float32 (N, D), t int64 (N,).
    """
    train, test = _load_any(path)
    if test_path is not None:
        if test is not None:
            raise DatasetError(f"{path}: holds a test set already (X_test, t_test); drop the separate test file {test_path}")
        test, extra = _load_any(test_path)
        if extra is not None:
            raise DatasetError(f"{test_path}: expected one set of samples for testing, found X_test/t_test too")
    if test is not None and test[0].shape[1] != train[0].shape[1]:
        raise DatasetError(
            f"{test_path or path}: expected test samples with {train[0].shape[1]} features (as the training samples), "
            f"got {test[0].shape[1]}"
        )
    return train, test


def _load_any(path):
    p = os.fspath(path)
    low = p.lower()
    if low.endswith(".npz"):
        return load_npz(p)
    if low.endswith((".csv", ".csv.gz")):
        return load_csv(p), None
    raise DatasetError(f"{p}: expected an .npz archive (X_train, t_train[, X_test, t_test]) or a .csv file (label, features...)")


def load_npz(path):
    """``(X_train, t_train), (X_test, t_test) or None`` from an ``.npz`` archive (never unpickles)."""
    path = os.fspath(path)
    try:
        arrays = read_npz(path)
    except NpzError as exc:
        if exc.kind == "missing":
            raise DatasetError(f"{path}: no such file") from None
        if exc.kind == "npy":
            raise DatasetError(f"{path}: a single .npy array, expected an .npz archive with X_train and t_train") from None
        raise DatasetError(f"{path}: not a readable .npz archive ({exc})") from None
    missing = [k for k in ("X_train", "t_train") if k not in arrays]
    if missing:
        raise DatasetError(
            f"{path}: expected arrays X_train and t_train (optionally X_test, t_test), "
            f"missing {', '.join(missing)}; found {', '.join(sorted(arrays)) or 'none'}"
        )
    if ("X_test" in arrays) != ("t_test" in arrays):
        raise DatasetError(f"{path}: expected X_test and t_test together, found only {'X_test' if 'X_test' in arrays else 't_test'}")
    train = _checked(arrays["X_train"], arrays["t_train"], path, "X_train", "t_train")
    test = _checked(arrays["X_test"], arrays["t_test"], path, "X_test", "t_test") if "X_test" in arrays else None
    return train, test


def load_csv(path):
    """``(X, t)`` from a CSV file: label in the first column, features in the others."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: no such file")
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        first = fh.readline()
    try:
        [float(v) for v in first.strip().split(",")]
        skip = 0
    except ValueError:
        skip = 1  # a header line
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64, skiprows=skip, ndmin=2)
    except ValueError as exc:
        raise DatasetError(f"{path}: expected comma-separated numbers (label, features...): {exc}") from None
    if table.shape[0] == 0 or table.shape[1] < 2:
        raise DatasetError(f"{path}: expected rows of a label and at least one feature, got a table of shape {table.shape}")
    labels = table[:, 0]
    return _checked(table[:, 1:], labels, path, "features", "label column")


def _checked(X, t, path, xname, tname):
    """The built-in sets' checks: shapes, counts, integer labels ≥ 0, finite floating features."""
    X, t = np.asarray(X), np.asarray(t)
    if X.ndim < 2:
        raise DatasetError(f"{path}: {xname}: expected one row per sample, shape (N, D), got shape {X.shape}")
    if t.ndim != 1:
        raise DatasetError(f"{path}: {tname}: expected a 1-D array of class labels, got shape {t.shape}")
    if X.shape[0] != t.shape[0]:
        raise DatasetError(
            f"{path}: sample/label count mismatch: {xname} has {X.shape[0]} rows but {tname} has {t.shape[0]} labels; "
            "expected the same number"
        )
    if X.shape[0] == 0:
        raise DatasetError(f"{path}: {xname}: expected at least one sample")
    X = X.reshape(X.shape[0], -1)
    if X.dtype == np.uint8:
        X = X.astype(np.float32) / np.float32(255)  # pixels, as the built-in loaders scale them
    elif X.dtype.kind == "f":
        X = X.astype(np.float32)
    else:
        raise DatasetError(
            f"{path}: {xname}: expected floating-point features (or uint8 pixels), got dtype {X.dtype} "
            "(convert them to floats first, e.g. X / 255 for pixel values)"
        )
    bad = int(np.count_nonzero(~np.isfinite(X)))
    if bad:
        raise DatasetError(f"{path}: {xname}: expected finite values, got {bad} NaN or inf entr{'y' if bad == 1 else 'ies'}")
    if t.dtype.kind == "f":
        whole = np.isfinite(t) & (t == np.round(t))
        if not whole.all():
            i = int(np.flatnonzero(~whole)[0])
            raise DatasetError(f"{path}: {tname}: expected integer class labels, found {float(t[i])!r} at index {i}")
        if tname != "label column":  # a CSV holds only text: whole numbers there are labels as written
            raise DatasetError(
                f"{path}: {tname}: expected integer class labels, got dtype {t.dtype} "
                f"(they are whole numbers: save them with {tname}.astype(int))"
            )
    elif t.dtype.kind not in "iu":
        raise DatasetError(f"{path}: {tname}: expected integer class labels, got dtype {t.dtype}")
    t = t.astype(np.int64)
    if t.min() < 0:
        i = int(np.argmin(t))
        raise DatasetError(f"{path}: {tname}: expected labels ≥ 0 (class indices), found {t[i]} at index {i}")
    return X, t
