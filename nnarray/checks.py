"""Checks on user input, run once before any work starts.

Every error names the argument, what was expected and what was given. The checks accept host NumPy
arrays and arrays of any backend (their own namespace is used, so a CuPy array is checked on the GPU
with one synchronisation, once per call, never inside a training loop).
"""

from __future__ import annotations

import numbers

import array_api_compat

from .backend import index_dtype

__all__ = ["check_X", "check_t", "check_Xt", "check_reduction", "check_positive_int", "check_lr", "check_seed", "as_array"]

REDUCTIONS = ("mean", "sum")


def as_array(x, name):
    """``x`` itself when it is an array of a known namespace; lists/tuples become host NumPy arrays."""
    try:
        array_api_compat.array_namespace(x)
        return x
    except TypeError:
        pass
    if isinstance(x, (list, tuple)):
        import numpy as np  # noqa: PLC0415 -- host conversion of Python sequences

        try:
            return np.asarray(x)
        except ValueError as exc:  # ragged nested lists
            raise ValueError(f"{name}: could not make an array of the given sequence ({exc})") from None
    raise TypeError(f"{name}: expected an array (NumPy or the backend's), got {type(x).__name__}")


def check_X(X, n_in=None, name="X"):
    """X must be a 2-D floating array of width ``n_in`` with at least one row and only finite values."""
    X = as_array(X, name)
    xp = array_api_compat.array_namespace(X)
    if X.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array of shape (N, {n_in if n_in else 'n_in'}), got shape {tuple(X.shape)}")
    if n_in is not None and X.shape[1] != n_in:
        raise ValueError(
            f"{name}: expected {n_in} columns (the network's input width), got shape {tuple(X.shape)}"
        )
    if X.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one row, got shape {tuple(X.shape)}")
    if not xp.isdtype(X.dtype, "real floating"):
        raise TypeError(
            f"{name}: expected a floating-point array, got dtype {X.dtype}"
            " (convert pixel values to floats in [0, 1] first, e.g. X / 255)"
        )
    # A NaN or inf anywhere makes the sum non-finite: one cheap reduction instead of a full boolean
    # array (7× faster on 60000×784). Only then count the bad entries (the sum may merely overflow).
    if not bool(xp.isfinite(xp.sum(X))):
        bad = int(xp.sum(xp.astype(~xp.isfinite(X), index_dtype(xp, array_api_compat.device(X)))))
        if bad:
            raise ValueError(f"{name}: expected finite values, got {bad} NaN or inf entr{'y' if bad == 1 else 'ies'}")
    return X


def check_t(t, n_classes=None, name="t"):
    """t must be a 1-D integer array of class labels in 0..n_classes−1."""
    t = as_array(t, name)
    xp = array_api_compat.array_namespace(t)
    if t.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of class labels, got shape {tuple(t.shape)}")
    if not xp.isdtype(t.dtype, "integral"):
        hint = ""
        if xp.isdtype(t.dtype, "real floating"):
            hint = f" (if they are whole numbers, convert them with {name}.astype(int))"
        raise TypeError(f"{name}: expected integer class labels, got dtype {t.dtype}{hint}")
    if n_classes is not None and t.shape[0] > 0:
        lo, hi = int(xp.min(t)), int(xp.max(t))
        if lo < 0 or hi >= n_classes:
            raise ValueError(
                f"{name}: expected labels in 0..{n_classes - 1} (the network has {n_classes} outputs), "
                f"got labels from {lo} to {hi}"
            )
    return t


def check_Xt(X, t, n_in=None, n_classes=None, names=("X", "t")):
    """:func:`check_X` and :func:`check_t`, and the two must have the same number of rows."""
    X = check_X(X, n_in, names[0])
    t = check_t(t, n_classes, names[1])
    if X.shape[0] != t.shape[0]:
        raise ValueError(
            f"{names[0]}, {names[1]}: expected the same number of samples, got {X.shape[0]} rows in {names[0]} "
            f"and {t.shape[0]} labels in {names[1]}"
        )
    return X, t


def check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
    return reduction


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def check_lr(lr, name="lr"):
    # A real number only: float("0.1") would accept the string "0.1" (and True would be 1.0).
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {lr!r}")
    lr = float(lr)
    if not (lr > 0 and lr < float("inf")):
        raise ValueError(f"{name}: expected a positive finite learning rate, got {lr!r}")
    return lr


def check_seed(seed, name="seed"):
    """A seed for ``numpy.random.default_rng``: None, an integer ≥ 0, or a Generator (passed through)."""
    import numpy as np  # noqa: PLC0415 -- host randomness only

    if seed is None or isinstance(seed, (np.random.Generator, np.random.SeedSequence)):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"{name}: expected an integer ≥ 0, a numpy.random.Generator or None, got {seed!r}")
    return int(seed)
