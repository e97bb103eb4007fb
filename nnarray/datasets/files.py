"""A user's own data: an ``.npz`` archive of arrays or a CSV table, checked as the built-in sets are.

``.npz``: arrays ``X_train`` (N, D) (or (N, H, W), flattened to rows) and ``t_train`` (N,), optionally
``X_test`` and ``t_test``. ``uint8`` images are scaled to float32 in [0, 1] (pixel / 255), as the built-in
MNIST and Fashion-MNIST loaders do; floating features are taken as they are (as float32).

CSV: one sample per line, the class label in the first column, the features in the others, comma-separated;
a first line that is not numeric is taken as a header; blank lines are skipped. Feature values are used as
they are (scale them as you want them, e.g. pixel / 255). Errors name the line of the file (1-based, the
header counted), as an editor shows it.

Labels are class indices 0..C−1, C = the largest label + 1 (:func:`nnarray.checks.class_count`): a negative
label, a single class, or a largest label so far beyond the others that more than half of the classes it
implies would have no sample are refused; classes without a training sample get a
:class:`~nnarray.checks.LabelWarning`. Errors are :class:`DatasetError` naming the file, what was expected and
what was found.

:func:`file_record` and :func:`check_file_record` remember a file (absolute path, size, SHA-256) and notice
later that it moved or changed, so a run on own data can be evaluated or resumed from any folder.
"""

from __future__ import annotations

import gzip
import hashlib
import os

import numpy as np

from .._files import NpzError, read_npz
from ..checks import class_count
from .errors import DatasetError

__all__ = ["load_file", "load_npz", "load_csv", "file_record", "check_file_record"]


def load_file(path, test_path=None):
    """Load ``path`` (``.npz`` or ``.csv``) and, if given, a separate test file ``test_path``.

    Returns ``(X_train, t_train), test`` with ``test`` = ``(X_test, t_test)`` or None when there is none:
    X float32 (N, D), t int64 (N,). The labels of both are checked together (see the module docstring).
    """
    train, test, labels = _load_any(path)
    if test_path is not None:
        if test is not None:
            raise DatasetError(
                f"{path}: holds a test set already (X_test, t_test); drop the separate test file {test_path}"
            )
        test, extra, more = _load_any(test_path)
        if extra is not None:
            raise DatasetError(f"{test_path}: expected one set of samples for testing, found X_test/t_test too")
        labels = labels + more
    if test is not None and test[0].shape[1] != train[0].shape[1]:
        raise DatasetError(
            f"{test_path or path}: expected test samples with {train[0].shape[1]} features (as the training samples), "
            f"got {test[0].shape[1]}"
        )
    _check_classes(labels)
    return train, test


def _load_any(path):
    """``(first set, the file's own test set or None, label records)`` of an .npz or .csv file."""
    p = os.fspath(path)
    low = p.lower()
    if low.endswith(".npz"):
        train, test_set, labels = _npz(p)
        return train, test_set, labels
    if low.endswith((".csv", ".csv.gz")):
        X, t, lines = _csv(p)
        return (X, t), None, [(t, f"{p}: label column", lines)]
    raise DatasetError(
        f"{p}: expected an .npz archive (X_train, t_train[, X_test, t_test]) or a .csv file (label, features...), "
        "told apart by the name's ending (.npz, .csv or .csv.gz)"
    )


def _check_classes(labels):
    """:func:`nnarray.checks.class_count` over ``[(t, name, line numbers or None), ...]``, training set first."""
    lines = {name: numbers for _, name, numbers in labels}

    def where(name, i):
        return f"line {lines[name][i]}" if lines.get(name) is not None else f"index {i}"

    try:
        return class_count(labels[0][0], labels[0][1], [(t, name) for t, name, _ in labels[1:]], where)
    except ValueError as exc:
        raise DatasetError(str(exc)) from None


def load_npz(path):
    """``(X_train, t_train), (X_test, t_test) or None`` from an ``.npz`` archive (never unpickles)."""
    train, test, labels = _npz(os.fspath(path))
    _check_classes(labels)
    return train, test


def _npz(path):
    try:
        arrays = read_npz(path)
    except NpzError as exc:
        if exc.kind == "missing":
            raise DatasetError(f"{path}: no such file") from None
        if exc.kind == "npy":
            raise DatasetError(
                f"{path}: a single .npy array, expected an .npz archive with X_train and t_train"
            ) from None
        if exc.kind == "objects":
            raise DatasetError(f"{path}: {exc}") from None
        if exc.kind == "not-npz":
            raise DatasetError(f"{path}: not a readable .npz archive (not a zip file; expected arrays X_train, t_train "
                               "saved with numpy.savez)") from None
        raise DatasetError(f"{path}: not a readable .npz archive ({exc})") from None
    missing = [k for k in ("X_train", "t_train") if k not in arrays]
    if missing:
        raise DatasetError(
            f"{path}: expected arrays X_train and t_train (optionally X_test, t_test), "
            f"missing {', '.join(missing)}; found {', '.join(sorted(arrays)) or 'none'}"
        )
    if ("X_test" in arrays) != ("t_test" in arrays):
        only = "X_test" if "X_test" in arrays else "t_test"
        raise DatasetError(f"{path}: expected X_test and t_test together, found only {only}")
    train = _checked(arrays["X_train"], arrays["t_train"], path, "X_train", "t_train")
    labels = [(train[1], f"{path}: t_train", None)]
    test = None
    if "X_test" in arrays:
        test = _checked(arrays["X_test"], arrays["t_test"], path, "X_test", "t_test")
        labels.append((test[1], f"{path}: t_test", None))
    return train, test, labels


def load_csv(path):
    """``(X, t)`` from a CSV file: label in the first column, features in the others."""
    X, t, lines = _csv(os.fspath(path))
    _check_classes([(t, f"{path}: label column", lines)])
    return X, t


def _csv(path):
    """``(X, t, line numbers of the rows)`` of a CSV file; the line numbers are 1-based, as an editor shows them."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: no such file")
    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig") as fh:
            rows = [(n, line) for n, line in enumerate(fh.read().splitlines(), start=1) if line.strip()]
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise DatasetError(
            f"{path}: expected a text file of comma-separated numbers, could not read it ({exc})"
        ) from None
    if rows and not _numeric(rows[0][1]):
        rows = rows[1:]  # a header line
    if not rows:
        raise DatasetError(
            f"{path}: expected rows of a label and at least one feature, "
            "found no data rows (empty file or only a header)"
        )
    try:
        table = np.loadtxt([line for _, line in rows], delimiter=",", dtype=np.float64, comments=None, ndmin=2)
    except ValueError:
        raise DatasetError(_csv_problem(path, rows)) from None
    if table.shape[1] < 2:
        raise DatasetError(
            f"{path}: expected rows of a label and at least one feature, got {table.shape[1]} column per row"
        )
    lines = np.asarray([n for n, _ in rows])
    X, t = _checked(table[:, 1:], table[:, 0], path, "features", "label column", lambda i: f"line {lines[i]}")
    return X, t, lines


def _numeric(line):
    try:
        [float(v) for v in line.split(",")]
    except ValueError:
        return False
    return True


def _csv_problem(path, rows):
    """The first line that is not a row of numbers as wide as the first one, in words (read only on an error)."""
    first, width = rows[0][0], len(rows[0][1].split(","))
    for n, line in rows:
        fields = line.split(",")
        if len(fields) != width:
            return f"{path}: line {n}: expected {width} comma-separated values (as on line {first}), got {len(fields)}"
        for j, field in enumerate(fields, start=1):
            try:
                float(field)
            except ValueError:
                return f"{path}: line {n}, column {j}: expected a number, got {field.strip()!r}"
    return f"{path}: expected comma-separated numbers (label, features...)"


def _checked(X, t, path, xname, tname, where=None):
    """The built-in sets' checks: shapes, counts, integer labels ≥ 0, finite floating features.

    ``where(i)`` says where row ``i`` is in the file (default ``"index i"``).
    """
    where = where or (lambda i: f"index {i}")
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
    X = _features(X.reshape(X.shape[0], -1), path, xname, where)
    return X, _labels(t, path, tname, where)


def _features(X, path, xname, where):
    if X.dtype == np.uint8:
        X = X.astype(np.float32) / np.float32(255)  # pixels, as the built-in loaders scale them
    elif X.dtype.kind == "f":
        X = X.astype(np.float32)
    else:
        raise DatasetError(
            f"{path}: {xname}: expected floating-point features (or uint8 pixels), got dtype {X.dtype} "
            "(convert them to floats first, e.g. X / 255 for pixel values)"
        )
    bad = ~np.isfinite(X)
    if bad.any():
        n, i = int(np.count_nonzero(bad)), int(np.flatnonzero(bad.any(axis=1))[0])
        raise DatasetError(
            f"{path}: {xname}: expected finite values, "
            f"got {n} NaN or inf entr{'y' if n == 1 else 'ies'} (the first at {where(i)})"
        )
    return X


def _labels(t, path, tname, where):
    if t.dtype.kind == "f":
        whole = np.isfinite(t) & (t == np.round(t))
        if not whole.all():
            i = int(np.flatnonzero(~whole)[0])
            raise DatasetError(f"{path}: {tname}: expected integer class labels, found {float(t[i])!r} at {where(i)}")
        if tname != "label column":  # a CSV holds only text: whole numbers there are labels as written
            raise DatasetError(
                f"{path}: {tname}: expected integer class labels, got dtype {t.dtype} "
                f"(they are whole numbers: save them with {tname}.astype(int))"
            )
    elif t.dtype.kind not in "iu":
        raise DatasetError(f"{path}: {tname}: expected integer class labels, got dtype {t.dtype}")
    if t.min() < 0:
        i = int(np.argmin(t))
        raise DatasetError(f"{path}: {tname}: expected labels ≥ 0 (class indices), found {int(t[i])} at {where(i)}")
    return t.astype(np.int64)


# -------------------------------------------------------------------------------------------- remembering a file
def file_record(path):
    """What identifies a data file later: ``{"path": absolute path, "bytes": size, "sha256": hex digest}``.

    A run stores it, so that it can find the file again from any working directory and notice a changed one.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: no such file")
    return {"path": path, "bytes": os.path.getsize(path), "sha256": _sha256(path)}


def check_file_record(record, what="data file"):
    """The file a :func:`file_record` describes; raises :class:`DatasetError` if it is gone or changed."""
    path = record["path"]
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: no such file (the {what} recorded with the run; it was moved or deleted)")
    size = os.path.getsize(path)
    if size != record.get("bytes", size) or ("sha256" in record and _sha256(path) != record["sha256"]):
        raise DatasetError(
            f"{path}: the {what} changed since the run recorded it ({record.get('bytes')} bytes, sha256 "
            f"{str(record.get('sha256'))[:12]}…; now {size} bytes): expected the same file"
        )
    return path


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
