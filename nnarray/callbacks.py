"""The training run as callbacks: what :func:`nnarray.fit` calls around its epochs.

``fit(net, opt, X, t, ..., callbacks=[...])`` trains; everything else a run does — checkpoints, the best model
on a validation metric, early stopping, a progress bar, history files — is a :class:`Callback`, with the names
Keras and Lightning users know:

* :class:`EarlyStopping` ``(monitor, patience, min_delta)``: stop when a metric has stopped improving;
* :class:`ModelCheckpoint` ``(path)``: a resumable training checkpoint after every epoch, or with ``monitor=``
  the model whenever the metric improves (the best model);
* :class:`ProgressBar`: a tqdm bar per epoch (``pip install "nnarray[scripts]"``);
* :class:`HistoryLogger`: the history as JSON and CSV files after every epoch;
* :class:`DivergenceGuard`: stop with :class:`~nnarray.train.TrainingDivergedError` when the training loss is
  NaN, inf or far beyond its start. ``fit`` always has one (the default bound when none is given).

A callback's hooks get the :class:`FitRun` (the network, optimizer, history, the epochs planned, ...):
``preflight(run)`` before any work — a callback that will write a file checks that it can, one that needs an
extra checks that it is installed, so a run that cannot finish is refused before it starts; then
``on_train_begin(run)``, per epoch ``on_epoch_begin(run, epoch)``, ``on_batches(run, done, n, read_loss)`` every
``log_every`` batches, ``on_epoch_end(run, record)`` with the epoch's :class:`~nnarray.history.History` record,
and ``on_train_end(run)`` (also after an error or Ctrl-C; ``run.outcome`` says how training ended). A hook
stops training after the current epoch by setting ``run.stop_training = True`` or raising
:class:`~nnarray.train.StopTraining`. A plain function ``cb(record)`` in ``callbacks`` is called as
``on_epoch_end``. In data-parallel training the hooks run on rank 0 only (``preflight`` on every rank).

>>> import numpy as np, nnarray as nn
>>> from nnarray.callbacks import EarlyStopping
>>> rng = np.random.default_rng(0)
>>> X, t = rng.normal(size=(60, 4)), rng.integers(0, 3, size=60)
>>> net = nn.MLP([4, 8, 3], backend="numpy", seed=0)
>>> stop = EarlyStopping(monitor="train_loss", patience=2, min_delta=10.0)  # nothing improves by 10
>>> hist = nn.fit(net, nn.SGD(0.1), X, t, epochs=20, batch_size=20, callbacks=[stop])
>>> hist.epoch, stop.stopped_epoch
([1, 2, 3], 3)
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
from typing import Any

from . import checks
from ._files import check_writable

__all__ = ["Callback", "FitRun", "EarlyStopping", "ModelCheckpoint", "ProgressBar", "HistoryLogger",
           "DivergenceGuard", "as_callbacks"]

TQDM_INSTALL = 'pip install "nnarray[scripts]"  (or: pip install tqdm)'


class FitRun:
    """What the callbacks of one :func:`nnarray.fit` call see.

    Attributes: ``net``, ``opt``, ``history`` (the :class:`~nnarray.history.History` being filled), ``rng``
    (the generator of the epoch permutations), ``schedule`` (or None), ``first_epoch`` and ``last_epoch``
    (the epoch numbers this call trains, inclusive), ``epoch`` (the current one), ``n_samples``,
    ``batch_size``, ``n_batches`` (per epoch), ``has_validation``, ``start_loss`` (the training loss before
    the first update, set by ``fit`` before the first epoch), ``step`` (the training step ``fit`` chose, with
    its ``name`` and ``description``: a fast path or the generic step; set before the first epoch), ``comm``,
    ``stop_training`` (set it to stop after this epoch) and ``outcome`` (``"done"``, ``"stopped"``,
    ``"interrupted"``, ``"diverged"`` or ``"error"`` once training ended; None before).
    """

    def __init__(self, net, opt, history, rng, schedule, epochs, n_samples, batch_size, has_validation, comm):
        self.net, self.opt, self.history, self.rng, self.schedule, self.comm = net, opt, history, rng, schedule, comm
        self.plan(epochs)
        self.epoch = None
        self.n_samples, self.batch_size = n_samples, batch_size
        self.n_batches = -(-n_samples // batch_size)
        self.has_validation = has_validation
        self.start_loss = None
        self.step = None
        self.stop_training = False
        self.outcome = None

    def plan(self, epochs):
        """Number this call's ``epochs`` on from the history (again after a data-parallel start took rank 0's)."""
        self.first_epoch = (self.history.epoch[-1] + 1) if len(self.history) else 1
        self.last_epoch = self.first_epoch + epochs - 1


class Callback:
    """Base class of the callbacks of :func:`nnarray.fit`; every hook does nothing unless overridden.

    ``log_every``: batches between calls of :meth:`on_batches` (None: never called).
    """

    log_every = None

    def preflight(self, run):
        """Check, before any work, everything this callback will need (raise to refuse the run)."""

    def on_train_begin(self, run):
        """Before the first epoch (after :meth:`preflight` of every callback)."""

    def on_epoch_begin(self, run, epoch):
        """Before epoch ``epoch`` (η of the schedule is already set)."""

    def on_batches(self, run, done, n_batches, read_loss):
        """Every ``log_every`` batches and after the last: ``read_loss()`` synchronises, so read only if shown."""

    def on_epoch_end(self, run, record):
        """After an epoch, with its record (the keys of :class:`~nnarray.history.History`), already recorded."""

    def on_train_end(self, run):
        """After the last epoch, early stopping, an error or an interrupt (``run.outcome`` says which)."""


class _Function(Callback):
    """A plain ``cb(record)``: called after every epoch."""

    def __init__(self, fn):
        self.fn = fn

    def on_epoch_end(self, run, record):
        self.fn(record)

    def __repr__(self):
        return f"{type(self).__name__}({self.fn!r})"


def as_callbacks(callbacks: Any) -> list:
    """``callbacks`` of :func:`nnarray.fit` as a list of :class:`Callback` (plain callables wrapped)."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or callable(callbacks):
        callbacks = [callbacks]
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks: expected a Callback, a callable or a list of them, got {type(callbacks).__name__}")
    out = []
    for cb in callbacks:
        if isinstance(cb, Callback):
            out.append(cb)
        elif callable(cb):
            out.append(_Function(cb))
        else:
            raise TypeError(f"callbacks: expected callables or Callback objects, got {type(cb).__name__}")
    return out


def _monitor_mode(monitor, mode):
    """``"max"`` for accuracies, ``"min"`` for losses (``mode="auto"``), else ``mode`` itself."""
    checks.check_option(mode, ("auto", "min", "max"), "mode")
    if mode != "auto":
        return mode
    return "max" if "acc" in monitor else "min"


def _check_monitor(monitor, run, owner):
    """A record key that the run will fill: a history column, and a val_ one only with validation data."""
    from .history import History  # noqa: PLC0415 -- history imports nothing of ours

    if monitor not in History.KEYS:
        raise ValueError(f"{owner} monitor: expected one of {', '.join(History.KEYS)}, got {monitor!r}")
    if monitor.startswith("val_") and not run.has_validation:
        raise ValueError(
            f"{owner} monitor: {monitor!r} needs validation data (fit's validation=(X_val, t_val)), got none"
        )


class _Best:
    """The best value of a metric so far and its epoch; improvement by more than ``min_delta`` (Keras' rule)."""

    def __init__(self, mode, min_delta=0.0):
        self.sign = 1.0 if mode == "max" else -1.0
        self.min_delta = min_delta
        self.value, self.epoch = None, None

    def better(self, value):
        return value is not None and (self.value is None or self.sign * (value - self.value) > self.min_delta)

    def replay(self, history, monitor):
        """Take the best from an earlier run's history (a resumed run continues its bookkeeping)."""
        for e, v in zip(history.epoch, history[monitor], strict=True):
            if self.better(v):
                self.value, self.epoch = v, e


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved for ``patience`` epochs.

    An epoch improves when its ``monitor`` value beats the best so far by more than ``min_delta`` (larger for
    accuracies, smaller for losses; ``mode`` "min" or "max" overrides "auto"). Training stops after the epoch
    in which ``wait`` (epochs since the last improvement) reaches ``patience``. That is Keras' and Lightning's
    rule; ``rule="sklearn"`` is scikit-learn's ``tol``/``n_iter_no_change``: an epoch improves when it beats
    the best by at least ``min_delta``, the best follows every better value, and ``patience`` is
    ``n_iter_no_change + 1`` (``math.inf``: never stop, only keep the count). ``restore_best_weights``: at the
    end, the network gets the parameters of the best epoch back (a device copy is kept when the best changes;
    hooks run on rank 0 only, so not for data-parallel training).
    A resumed run (``FitOptions(history=...)``) replays the history first, so it stops where an uninterrupted
    one would.

    Attributes: ``best``, ``best_epoch``, ``wait``, ``stopped_epoch`` (None unless it stopped the run).
    """

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto", rule="keras",
                 restore_best_weights=False):
        self.monitor = checks.check_option(monitor, _history_keys(), "monitor")
        self.patience = patience if patience == math.inf else checks.check_positive_int(patience, "patience")
        self.min_delta = checks.NONNEGATIVE(min_delta, "min_delta")
        self.mode = _monitor_mode(monitor, mode)
        self.rule = checks.check_option(rule, ("keras", "sklearn"), "rule")
        self.restore_best_weights = checks.check_bool(restore_best_weights, "restore_best_weights")
        self.best = self.best_epoch = self.stopped_epoch = self.best_weights = None
        self.wait = 0

    def __repr__(self):
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, min_delta={self.min_delta}, "
                f"mode={self.mode!r}" + (", rule='sklearn')" if self.rule == "sklearn" else ")"))

    def preflight(self, run):
        _check_monitor(self.monitor, run, "EarlyStopping")

    def on_train_begin(self, run):
        self.best = self.best_epoch = self.stopped_epoch = self.best_weights = None
        self.wait = 0
        for record in run.history.records():
            self.update(record[self.monitor], record["epoch"])

    def current(self, run, record):
        """The monitored value of this epoch (a subclass may compute its own, e.g. with a penalty term)."""
        return record[self.monitor]

    def update(self, value, epoch):
        """Count ``value`` of ``epoch``; True when the patience is exhausted."""
        if value is None:
            return False
        s = 1.0 if self.mode == "max" else -1.0
        gain = math.inf if self.best is None else s * (value - self.best)
        if self.rule == "keras":
            improved = gain > self.min_delta
            new_best = improved
        else:  # scikit-learn: count unless better by tol; the best follows every better value
            improved, new_best = gain >= self.min_delta, gain > 0
        if new_best:
            self.best, self.best_epoch = value, epoch
        self.wait = 0 if improved else self.wait + 1
        return self.wait >= self.patience

    def on_epoch_end(self, run, record):
        before = self.best_epoch
        exhausted = self.update(self.current(run, record), record["epoch"])
        if self.restore_best_weights and self.best_epoch != before:
            xp = run.net.xp
            self.best_weights = {k: xp.asarray(v, copy=True) for k, v in run.net.params.items()}
        if exhausted:
            self.on_patience_exhausted(run, record)

    def on_patience_exhausted(self, run, record):
        """Stop after this epoch (a subclass may do something else, e.g. lower η and go on)."""
        self.stopped_epoch = record["epoch"]
        run.stop_training = True

    def on_train_end(self, run):
        if self.restore_best_weights and self.best_weights is not None and run.outcome in ("done", "stopped"):
            run.net.params = self.best_weights
        self.best_weights = None


def _history_keys():
    from .history import History  # noqa: PLC0415

    return History.KEYS


class ModelCheckpoint(Callback):
    """Write the model to ``path`` after every epoch, or the best model on a monitored metric.

    Without ``monitor``: a resumable training checkpoint after every epoch (:func:`nnarray.save_checkpoint`:
    parameters, optimizer state, the permutation generator's state, the history and ``config``), so that
    ``load_checkpoint`` continues the run exactly. With ``monitor`` (e.g. ``"val_accuracy"``): the model
    (:func:`nnarray.save`) whenever the metric improves on the best so far (by more than ``min_delta``; the
    first of equal epochs is kept) — Keras' ``save_best_only=True``. Files are written atomically (a crash
    keeps the previous good file). The folder is checked for writing before training starts.

    Attributes: ``best``, ``best_epoch`` (monitored), ``saved`` (whether this epoch wrote the file),
    ``saved_epoch`` (the epoch the file holds, once one was written by this callback).
    """

    def __init__(self, path, monitor=None, mode="auto", min_delta=0.0, config=None):
        self.path = os.fspath(path)
        self.monitor = None if monitor is None else checks.check_option(monitor, _history_keys(), "monitor")
        self.mode = None if monitor is None else _monitor_mode(monitor, mode)
        self.min_delta = checks.NONNEGATIVE(min_delta, "min_delta")
        self.config = config
        self.best = self.best_epoch = self.saved_epoch = None
        self.saved = False

    def __repr__(self):
        return f"ModelCheckpoint({self.path!r}" + (f", monitor={self.monitor!r})" if self.monitor else ")")

    def preflight(self, run):
        check_writable(self.path, "ModelCheckpoint path")
        if self.monitor is not None:
            _check_monitor(self.monitor, run, "ModelCheckpoint")

    def on_train_begin(self, run):
        self.resume_from(run.history)

    def resume_from(self, history):
        """The best so far from an earlier run's ``history`` (a resumed run's best file is next to it)."""
        self.best = self.best_epoch = None
        if self.monitor is not None:
            tracker = self._tracker()
            tracker.replay(history, self.monitor)
            self.best, self.best_epoch = tracker.value, tracker.epoch

    def _tracker(self):
        t = _Best(self.mode, self.min_delta)
        t.value, t.epoch = self.best, self.best_epoch
        return t

    def on_epoch_end(self, run, record):
        from .saving import save, save_checkpoint  # noqa: PLC0415 -- saving imports the model

        self.saved = False
        if self.monitor is None:
            save_checkpoint(self.path, run.net, run.opt, run.rng, run.history, config=self.config)
            self.saved, self.saved_epoch = True, record["epoch"]
            return
        tracker = self._tracker()
        if tracker.better(record[self.monitor]):
            self.best, self.best_epoch = record[self.monitor], record["epoch"]
            save(run.net, self.path)
            self.saved, self.saved_epoch = True, record["epoch"]


class HistoryLogger(Callback):
    """The history as files after every epoch: ``json`` (:func:`nnarray.save_history`, with ``meta``) and/or
    ``csv`` (:func:`nnarray.saving.save_history_csv`, a row per epoch), written atomically.

    ``meta``: a dict, or a function returning one when the file is written (e.g. the run's settings and its
    best epoch so far). :meth:`write` writes both files at any time (e.g. with the final result).
    """

    def __init__(self, json=None, csv=None, meta=None):
        if json is None and csv is None:
            raise ValueError("HistoryLogger: expected a json= or csv= path, got neither")
        self.json = None if json is None else os.fspath(json)
        self.csv = None if csv is None else os.fspath(csv)
        self.meta = meta
        self.history = None

    def preflight(self, run):
        for path in (self.json, self.csv):
            if path is not None:
                check_writable(path, "HistoryLogger path")

    def on_train_begin(self, run):
        self.history = run.history

    def on_epoch_end(self, run, record):
        self.write()

    def write(self, extra=None):
        from .saving import save_history, save_history_csv  # noqa: PLC0415

        meta = self.meta() if callable(self.meta) else dict(self.meta or {})
        if self.json is not None:
            save_history(self.json, self.history, {**meta, **(extra or {})})
        if self.csv is not None:
            save_history_csv(self.csv, self.history)


class ProgressBar(Callback):
    """A tqdm progress bar per epoch with the running training loss (on ``file``, default stderr).

    ``log_every``: batches between updates (default: about 50 updates per epoch); reading the loss for the bar
    synchronises with the device, so this is the only cost. Needs tqdm (the ``scripts`` extra); without it
    the run is refused before training with the install command.
    """

    def __init__(self, log_every=None, file=None):
        self.log_every = None if log_every is None else checks.check_positive_int(log_every, "log_every")
        self._fixed = self.log_every is not None
        self.file = file
        self.bar = None

    def preflight(self, run):
        try:
            import tqdm  # noqa: F401, PLC0415
        except ImportError:
            raise ImportError(
                f"ProgressBar needs tqdm, which is not installed; install it with: {TQDM_INSTALL}"
            ) from None
        if not self._fixed:
            self.log_every = max(1, run.n_batches // 50)

    def on_epoch_begin(self, run, epoch):
        self.close()
        self.bar = _bar_class()(total=run.n_batches, desc=f"epoch {epoch}/{run.last_epoch}", unit="batch",
                                leave=False, dynamic_ncols=True, file=self.file or sys.stderr)

    def on_batches(self, run, done, n_batches, read_loss):
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix(loss=f"{read_loss():.4f}", refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_epoch_end(self, run, record):
        self.close()

    def on_train_end(self, run):
        self.close()


@functools.cache
def _bar_class():
    """tqdm's bar whose ``__del__`` tolerates a half-made bar: Ctrl-C or SIGTERM inside tqdm's constructor leaves
    one without its attributes, and tqdm's own ``__del__`` then prints a traceback when Python exits. Made once,
    on first use (tqdm is the scripts extra; ProgressBar.preflight checks it)."""
    from tqdm.auto import tqdm  # noqa: PLC0415

    class Bar(tqdm):
        def __del__(self):
            with contextlib.suppress(AttributeError):
                super().__del__()

    return Bar


class DivergenceGuard(Callback):
    """Stop training with :class:`~nnarray.train.TrainingDivergedError` when it has diverged.

    Diverged: the epoch's training loss is NaN or inf, or above ``start + factor · log C``, where ``start`` is
    the loss before the first update of this ``fit`` call and log C (C classes) is the loss of a uniform guess
    — the default ``factor=10`` allows a mean cross-entropy ten uniform guesses above the start, far beyond
    anything a converging run shows, far below the 1e15 a too-large η reaches. ``fit`` always checks with one:
    this, if given in ``callbacks``, else ``DivergenceGuard()``; ``factor=None`` stops on NaN and inf only. It is
    consulted on every rank (the loss is all-reduced, so all stop together); the parameters and optimizer state
    of the last finished epoch are kept.
    """

    def __init__(self, factor=10.0):
        self.factor = None if factor is None else checks.POSITIVE(factor, "factor")

    def __repr__(self):
        return f"DivergenceGuard(factor={self.factor})"

    def bound(self, run):
        """The largest training loss accepted: start + factor · log C (inf with ``factor=None``: only NaN and inf
        stop training, as in scikit-learn)."""
        if self.factor is None:
            return math.inf
        start = run.start_loss if run.start_loss is not None and math.isfinite(run.start_loss) else 0.0
        return start + self.factor * math.log(max(run.net.n_classes, 2))

    def check(self, run, epoch, train_loss):
        """None when ``train_loss`` is acceptable, else the reason (for the error message)."""
        if not math.isfinite(train_loss):
            return f"the training loss became {train_loss}"
        limit = self.bound(run)
        if train_loss > limit:
            C = run.net.n_classes
            return (f"the training loss became {train_loss:.4g}, above {limit:.4g} (its start "
                    f"{run.start_loss:.4g} + {self.factor:g}·log {C}, the bound of {self!r})")
        return None



