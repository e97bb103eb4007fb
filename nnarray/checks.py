"""Checks on user input, run once before any work starts: the one place where a setting's rule is written.

Every error names the argument, what was expected and what was given. The checks on data accept host NumPy
arrays and arrays of any backend (their own namespace is used, so a CuPy array is checked on the GPU
with one synchronisation, once per call, never inside a training loop).

Settings are declared, as scikit-learn declares ``_parameter_constraints``: a constraint object such as
:data:`FRACTION` (a number in [0, 1)) checks a Python value (``FRACTION(0.9, "momentum")``) and parses a
command-line flag (``FRACTION.parse("0.9")``, an ``argparse`` type), so the library, the command and the
scikit-learn estimator refuse the same values with the same words. :data:`PARAMETERS` is the table per class.

>>> FRACTION(0.9, "momentum")
0.9
>>> FRACTION(1.0, "momentum")
Traceback (most recent call last):
...
ValueError: momentum: expected a value in [0, 1), got 1.0
>>> validate({"momentum": 0.5, "nesterov": True}, PARAMETERS["SGD"])
{'momentum': 0.5, 'nesterov': True}
"""

from __future__ import annotations

import math
import numbers
import warnings

import array_api_compat

from .backend import index_dtype

__all__ = ["check_X", "check_t", "check_Xt", "check_reduction", "check_positive_int", "check_lr", "check_seed",
           "as_array", "check_option", "check_bool", "check_dropout", "Interval", "Options", "validate", "PARAMETERS",
           "POSITIVE", "NONNEGATIVE", "FRACTION", "FACTOR", "PROBABILITY", "LEARNING_RATE", "POSITIVE_INT",
           "NONNEGATIVE_INT", "class_count", "warn_absent_classes", "check_optimizer", "LabelWarning"]

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
        raise ValueError(
            f"{name}: expected a 2-D array of shape (N, {n_in if n_in else 'n_in'}), got shape {tuple(X.shape)}"
        )
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
    # array. Only then count the bad entries (the sum may merely overflow).
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
    return POSITIVE_INT(value, name)


def check_lr(lr, name="lr"):
    """A positive finite η; a real number only (float("0.1") would accept the text "0.1", True would be 1.0)."""
    return LEARNING_RATE(lr, name)


def check_seed(seed, name="seed"):
    """A seed for ``numpy.random.default_rng``: None, an integer ≥ 0, or a Generator (passed through)."""
    import numpy as np  # noqa: PLC0415 -- host randomness only

    if seed is None or isinstance(seed, (np.random.Generator, np.random.SeedSequence)):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"{name}: expected an integer ≥ 0, a numpy.random.Generator or None, got {seed!r}")
    return int(seed)


# ------------------------------------------------------------------------------------------- classes
class LabelWarning(UserWarning):
    """Some classes 0..C−1 have no sample among the training labels; the message names them.

    The network still gets an output for each of them (their logits are only ever pushed down), so such a
    class is never predicted unless the data change. ``absent`` holds those classes (a tuple of ints).
    """

    def __init__(self, message, absent=()):
        super().__init__(message)
        self.absent = tuple(int(c) for c in absent)


def _listed(values, most=8):
    """``"3, 7"`` or ``"0, 1, 2, 3, 4, 5, 6, 7, … (12 in all)"``: a short list of whole numbers."""
    values = [int(v) for v in values]
    head = ", ".join(map(str, values[:most]))
    return head if len(values) <= most else f"{head}, … ({len(values)} in all)"


def _index(name, i):
    return f"index {i} of {name}"


def class_count(t, name="t", others=(), where=None):
    """The number of classes C of labels that are class indices 0..C−1: the largest label + 1.

    The rule (README, "Labels"): labels are whole numbers 0..C−1 with C = the largest label + 1. Refused,
    before anything of size C is made, with a ``ValueError`` naming the value, where it is and the class
    count it would imply:

    * a negative label;
    * a single class (nothing to learn: a one-output softmax is always right);
    * a largest label far beyond the others: more than half of the classes 0..C−1 it implies would have no
      sample at all (labels 0..9 with one stray 1000000 would make a network of 1000001 outputs).

    Classes of 0..C−1 absent from ``t`` (the training labels) get a :class:`LabelWarning` naming them.

    Parameters
    ----------
    t : (N,) integer array (host NumPy or any backend's): the training labels.
    name : str
        How errors and warnings call ``t``.
    others : sequence of ``(labels, name)``
        Further sets (validation, test): their labels count towards C and are checked alike.
    where : callable ``(name, i) -> str``, optional
        Describes position ``i`` of the set called ``name`` (a CSV file gives its line); default
        ``"index i of name"``.

    Examples
    --------
    >>> import numpy as np
    >>> class_count(np.array([0, 2, 1, 2]))
    3
    >>> class_count(np.array([0, 1, 2, 1000000]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: t: label 1000000 at index 3 of t would make 1000001 classes (0..1000000), but only 4 distinct ...
    """
    import numpy as np  # noqa: PLC0415 -- host-side check of the labels, once per call

    from .backend import to_numpy  # noqa: PLC0415

    where = where or _index
    sets = [(np.asarray(to_numpy(check_t(v, None, nm))), nm) for v, nm in [(t, name), *others]]
    for h, nm in sets:
        if h.size and h.min() < 0:
            i = int(np.argmin(h))
            raise ValueError(
                f"{nm}: expected class indices 0..C−1 (whole numbers ≥ 0), got {int(h[i])} at {where(nm, i)}"
            )
    present = np.unique(np.concatenate([h.astype(np.int64) for h, _ in sets]))
    if present.size == 0:
        raise ValueError(f"{name}: expected at least one label, got none")
    if present.size == 1:
        raise ValueError(
            f"{name}: expected labels of at least two classes, got only class {int(present[0])} in all "
            f"{sum(h.size for h, _ in sets)} labels (is the label in the first column?)"
        )
    top = int(present[-1])
    C = top + 1
    if C > 2 * present.size:
        h, nm = next((h, nm) for h, nm in sets if h.size and int(h.max()) == top)
        i = int(np.flatnonzero(h == top)[0])
        raise ValueError(
            f"{nm}: label {top} at {where(nm, i)} would make {C} classes (0..{top}), but only {present.size} distinct "
            f"labels occur ({_listed(present)}); expected class indices 0..C−1 of which at most half have no sample. "
            f"Fix that label, or number the classes 0..C−1 (e.g. with numpy.unique(t, return_inverse=True))."
        )
    absent = np.setdiff1d(np.arange(C), sets[0][0])
    if absent.size:
        warnings.warn(LabelWarning(_absent_message(name, absent, C), absent), stacklevel=2)
    return C


def _absent_message(name, absent, C):
    one = len(absent) == 1
    return (
        f"{name}: class{'' if one else 'es'} {_listed(absent)} of 0..{C - 1} "
        f"ha{'s' if one else 've'} no training sample; "
        f"the network has an output for {'it' if one else 'each'} that training never rewards "
        "(are the labels numbered from 0?)"
    )


def warn_absent_classes(t, n_classes, name="t", stacklevel=3):
    """Warn (:class:`LabelWarning`) naming the classes 0..n_classes−1 that have no label in ``t``.

    ``t`` is already checked (:func:`check_t` with ``n_classes``); one small read of its distinct values.
    """
    from .backend import to_numpy  # noqa: PLC0415

    xp = array_api_compat.array_namespace(t)
    seen = xp.unique_values(t)
    if seen.shape[0] >= n_classes:
        return
    have = {int(v) for v in to_numpy(seen).tolist()}
    absent = [c for c in range(n_classes) if c not in have]
    warnings.warn(LabelWarning(_absent_message(name, absent, n_classes), absent), stacklevel=stacklevel)


def check_optimizer(opt, params, name="opt"):
    """The optimizer's state must fit the network's parameters: same keys, same shapes.

    An optimizer keeps per-parameter state (SGD's velocity, Adam's moments) for the network it was used on;
    reused on a network of another shape it would fail deep inside an update. Refused here instead, naming
    the state and the key. The remedy is a new optimizer for the new network.
    """
    state = getattr(opt, "state", None)
    if not isinstance(state, dict):
        return
    for state_name, arrays in state.items():
        arrays = arrays if isinstance(arrays, dict) else {}
        stray = [k for k, v in arrays.items() if v is not None and k not in params]
        if stray:
            raise ValueError(
                f"{name}: its state {state_name!r} holds key {stray[0]!r}, "
                f"but the network has no parameter {stray[0]!r} "
                f"(it has {', '.join(params)}); an optimizer keeps the state of the network it trained: "
                "make a new optimizer for this network"
            )
        for k in params:  # in the network's order, so the first misfit named is the first layer's
            v = arrays.get(k)
            if v is not None and tuple(v.shape) != tuple(params[k].shape):
                raise ValueError(
                    f"{name}: its state {state_name!r}[{k!r}] has shape {tuple(v.shape)}, but the network's parameter "
                    f"{k!r} has shape {tuple(params[k].shape)}; an optimizer keeps the state of the network it "
                    "trained: make a new optimizer for this network"
                )


# ============================================================================================ settings
class Interval:
    """A number in an interval, as scikit-learn's ``Interval(Real, 0, 1, closed="left")``.

    ``kind`` is :class:`numbers.Integral` or :class:`numbers.Real`; ``closed`` is "both", "left", "right" or
    "neither" (which ends belong to it; an infinite end never does); ``text`` is the expectation as the
    messages say it (default: made from the bounds); a value that is not a number is refused as "a number"
    unless ``typed_text`` (then with ``text`` too). Calling it checks a value and returns it as ``int`` or
    ``float``; :meth:`parse` reads a command-line value (an ``argparse`` type).
    """

    def __init__(self, kind, low=None, high=None, closed="both", text=None, typed_text=False):
        self.kind, self.low, self.high, self.closed = kind, low, high, closed
        self.text = text or self._describe()
        self.type_text = self.text if typed_text else "a number"

    def _describe(self):
        integer = self.kind is numbers.Integral
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.high is None and self.low is not None:
            if integer:
                if (self.low, left) in ((1, True), (0, False)):
                    return "a positive integer"
                return f"an integer ≥ {self.low}"
            return f"a number {'≥' if left else '>'} {self.low}"
        lo = "(-inf" if self.low is None else ("[" if left else "(") + f"{self.low}"
        hi = "inf)" if self.high is None else f"{self.high}" + ("]" if right else ")")
        return f"{'an integer' if integer else 'a value'} in {lo}, {hi}"

    def contains(self, value):
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        above = self.low is None or (value >= self.low if left else value > self.low)
        below = self.high is None or (value <= self.high if right else value < self.high)
        return above and below and (self.kind is numbers.Integral or not math.isnan(value))

    def __call__(self, value, name):
        if self.kind is numbers.Integral:  # an integer setting: one ValueError for any wrong value
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not self.contains(value):
                raise ValueError(f"{name}: expected {self.text}, got {value!r}")
            return int(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):  # "0.1" or True hide a mistake
            raise TypeError(f"{name}: expected {self.type_text}, got {value!r}")
        value = float(value)
        if not self.contains(value):
            raise ValueError(f"{name}: expected {self.text}, got {value!r}")
        return value

    def parse(self, text):
        """The value of a command-line flag; argparse adds the flag's name to the error."""
        import argparse  # noqa: PLC0415 -- the command line only

        try:
            value = int(text) if self.kind is numbers.Integral else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {self.text}, got {text!r}") from None
        if not self.contains(value):
            raise argparse.ArgumentTypeError(f"expected {self.text}, got {text}")
        return value

    def __repr__(self):
        return f"Interval({self.kind.__name__}, {self.low}, {self.high}, closed={self.closed!r})"


class Options:
    """One of a fixed set of values (``Options(("mean", "sum"))``)."""

    def __init__(self, values):
        self.values = tuple(values)

    def __call__(self, value, name):
        return check_option(value, self.values, name)


class _Bool:
    def __call__(self, value, name):
        return check_bool(value, name)


POSITIVE = Interval(numbers.Real, 0, math.inf, closed="neither", text="a positive number")
NONNEGATIVE = Interval(numbers.Real, 0, math.inf, closed="left", text="a finite value ≥ 0")
FRACTION = Interval(numbers.Real, 0, 1, closed="left", text="a value in [0, 1)")
PROBABILITY = Interval(numbers.Real, 0, 1, closed="left", text="a probability in [0, 1)", typed_text=True)
FACTOR = Interval(numbers.Real, 0, 1, closed="right", text="a factor in (0, 1]")
LEARNING_RATE = Interval(numbers.Real, 0, math.inf, closed="neither", text="a positive finite learning rate")
POSITIVE_INT = Interval(numbers.Integral, 1, None, text="a positive integer")
NONNEGATIVE_INT = Interval(numbers.Integral, 0, None, text="an integer ≥ 0")
BOOL = _Bool()

#: The settings of each class that takes settings, by argument name (the optimizers besides ``lr``, which
#: :func:`check_lr` checks; the schedules; the scikit-learn estimator). The classes check with :func:`validate`
#: (the optimizers with helpers of the same rules and words, tested against this table); the command's flags
#: parse with the same constraints.
PARAMETERS = {
    "SGD": {"momentum": FRACTION, "nesterov": BOOL, "weight_decay": NONNEGATIVE},
    "Adam": {"eps": NONNEGATIVE, "weight_decay": NONNEGATIVE},
    "RMSprop": {"alpha": FRACTION, "eps": NONNEGATIVE, "momentum": FRACTION, "weight_decay": NONNEGATIVE},
    "AdaGrad": {"eps": NONNEGATIVE, "weight_decay": NONNEGATIVE, "lr_decay": NONNEGATIVE,
                "initial_accumulator_value": NONNEGATIVE},
    "Exponential": {"gamma": FACTOR},
    "Step": {"step_size": POSITIVE_INT, "gamma": FACTOR},
    "Cosine": {"epochs": POSITIVE_INT},
    "Warmup": {"epochs": POSITIVE_INT},
    "MLPClassifier": {
        "alpha": NONNEGATIVE, "learning_rate_init": POSITIVE, "power_t": Interval(numbers.Real, 0, math.inf, "left"),
        "tol": Interval(numbers.Real, 0, math.inf, "left"), "momentum": Interval(numbers.Real, 0, 1),
        "validation_fraction": FRACTION, "beta_1": FRACTION, "beta_2": FRACTION, "epsilon": POSITIVE,
        "max_iter": POSITIVE_INT, "learning_rate": Options(("constant", "invscaling", "adaptive")),
    },
}


def validate(values, constraints):
    """``{name: value}`` checked against ``{name: constraint}`` (names without a constraint pass as they are)."""
    return {k: constraints[k](v, k) if k in constraints else v for k, v in values.items()}


def check_option(value, options, name):
    """``value`` must be one of ``options`` (compared with ==, so text values stay text)."""
    if not any(value == o and type(value) is type(o) for o in options):
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def check_bool(value, name):
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


def check_dropout(dropout, n_hidden):
    """Dropout rates per hidden layer as a list of floats in [0, 1), with errors naming ``dropout``."""
    if isinstance(dropout, (list, tuple)):
        if len(dropout) != n_hidden:
            raise ValueError(
                f"dropout: expected one rate per hidden layer ({n_hidden}), got {len(dropout)}: {list(dropout)!r}"
            )
        return [PROBABILITY(p, f"dropout[{i}]") for i, p in enumerate(dropout)]
    p = PROBABILITY(dropout, "dropout")
    if p > 0.0 and n_hidden == 0:
        raise ValueError(f"dropout: the network has no hidden layer to drop units of, got dropout={p!r}")
    return [p] * n_hidden
