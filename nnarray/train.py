"""Mini-batch training: :func:`fit`, :func:`evaluate` and the :class:`History` they report."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np  # host side only: the epoch permutations come from numpy.random.default_rng

from . import functions as F
from .fast import make_step
from .validation import check_positive_int, check_reduction, check_Xt

__all__ = ["fit", "evaluate", "History", "TrainingDivergedError"]


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or inf; the network keeps the parameters of the last finished epoch."""


@dataclass
class History:
    """Per-epoch record of a training run (one entry per finished epoch, all plain Python numbers).

    ``train_loss`` and ``train_accuracy`` are running values over the epoch's mini-batches, each batch
    measured with the parameters it was trained from (as most training loops report them); a sample
    counts as correct when its class has the largest output (an exact tie counts as correct).
    ``val_loss`` / ``val_accuracy`` are measured after the epoch on the validation set (None without one).
    """

    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    samples: list = field(default_factory=list)

    KEYS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds", "samples")

    def __len__(self):
        return len(self.epoch)

    def __getitem__(self, key):
        if key not in self.KEYS:
            raise KeyError(f"history has no column {key!r}; columns: {', '.join(self.KEYS)}")
        return getattr(self, key)

    def append(self, **record):
        for k in self.KEYS:
            getattr(self, k).append(record.get(k))

    def to_dict(self):
        """Columns as lists (JSON-ready)."""
        return {k: list(getattr(self, k)) for k in self.KEYS}

    @classmethod
    def from_dict(cls, d):
        h = cls()
        n = len(d.get("epoch", []))
        for k in cls.KEYS:
            setattr(h, k, list(d.get(k, [None] * n)))
        return h

    def records(self):
        """One dict per epoch."""
        return [{k: getattr(self, k)[i] for k in self.KEYS} for i in range(len(self))]


def evaluate(net, X, t, batch_size=10000):
    """Mean cross-entropy and accuracy of ``net`` on (X, t), in batches; returns ``(loss, accuracy)``.

    One host synchronisation at the end. ``X`` (N, n_in), ``t`` (N,) may be host or backend arrays.
    """
    X, t = check_Xt(X, t, net.n_in, net.n_classes)
    be = net.backend
    return _evaluate_device(net, be.asarray(X, dtype=net.dtype), be.asarray(t, dtype=be.xp.int64), batch_size)


def _evaluate_device(net, Xd, td, batch_size):
    xp = net.xp
    N = Xd.shape[0]
    loss_sum = None
    correct = None
    for s in range(0, N, batch_size):
        e_ = min(s + batch_size, N)  # the standard leaves out-of-bounds slice stops unspecified
        Xb, tb = Xd[s:e_, ...], td[s:e_]
        A, _ = net.forward(Xb)
        T = F.one_hot(xp, tb, net.n_classes, net.dtype)
        e = F.cross_entropy(xp, A, T, "sum")
        c = F.count_correct(xp, A, tb)
        loss_sum = e if loss_sum is None else loss_sum + e
        correct = c if correct is None else correct + c
    return float(loss_sum) / N, int(correct) / N


def fit(
    net,
    opt,
    X,
    t,
    epochs=5,
    batch_size=100,
    reduction="mean",
    seed=0,
    validation=None,
    shuffle=True,
    history=None,
    callback=None,
    on_batches=None,
    log_every=50,
    fast=None,
):
    """Train ``net`` with ``opt`` on (X, t) by mini-batch back-propagation; return a :class:`History`.

    Per mini-batch of B images: forward, a = Y − T, back-propagation of ΔW, ΔB summed over the batch
    (``reduction="sum"``, the seed) or averaged (``"mean"``, the book), then ``opt.update``.

    Parameters
    ----------
    net : MLP
    opt : SGD (anything with ``update(params, grads)``)
    X : (N, n_in) float array, host NumPy or the backend's. Moved to the device once.
    t : (N,) integer labels in 0..C−1.
    epochs, batch_size : int
        Each epoch visits every sample once; the last batch may be smaller than ``batch_size``.
    seed : int or numpy.random.Generator
        The epoch permutations are drawn on the host from ``numpy.random.default_rng(seed)`` (or from
        the Generator given, which then carries on: pass the same Generator to continue a run).
    validation : (X_val, t_val) or None
        Evaluated after every epoch.
    history : History or None
        An earlier run's history to continue (epochs are numbered on from it).
    callback : callable(epoch_record: dict) -> None, optional
        Called after every epoch (e.g. to write a checkpoint).
    on_batches : callable(batches_done, n_batches, read_loss) -> None, optional
        Called every ``log_every`` batches for progress display. ``read_loss()`` returns the running mean
        loss of the epoch; calling it synchronises with the device, so nothing is read unless asked.
    fast : bool or None
        Use a backend-specific fast path of :mod:`nnarray.fast` (same results as the generic Array API
        path, tested against it): ``None`` picks one when available unless ``$NNARRAY_FAST=0``;
        ``False`` always runs the generic path; ``True`` requires a fast path.

    Raises
    ------
    TrainingDivergedError
        When the epoch's loss is NaN or inf; ``net.params`` then hold the values of the last finished epoch.
    """
    X, t = check_Xt(X, t, net.n_in, net.n_classes)
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    check_reduction(reduction)
    if validation is not None:
        if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
            raise TypeError("validation: expected a pair (X_val, t_val)")
        validation = check_Xt(*validation, net.n_in, net.n_classes, names=("validation X", "validation t"))
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    history = History() if history is None else history

    be, xp = net.backend, net.xp
    # The data goes to the device once; per batch only rows are gathered there.
    Xd = be.asarray(X, dtype=net.dtype)
    td = be.asarray(t, dtype=xp.int64)
    Td = F.one_hot(xp, td, net.n_classes, net.dtype)  # teacher T for every sample, built once
    if validation is not None:
        Xv, tv = be.asarray(validation[0], dtype=net.dtype), be.asarray(validation[1], dtype=xp.int64)
    N = Xd.shape[0]
    n_batches = math.ceil(N / batch_size)
    step = make_step(net, opt, Xd, Td, reduction, fast=fast, batch_size=batch_size)
    first_epoch = (history.epoch[-1] + 1) if len(history) else 1

    for epoch in range(first_epoch, first_epoch + epochs):
        start = time.perf_counter()
        # Updates happen in place: keep copies to fall back to if this epoch diverges (once per epoch).
        params_before = {k: xp.asarray(v, copy=True) for k, v in net.params.items()}
        opt_state_before = {k: xp.asarray(v, copy=True) for k, v in getattr(opt, "velocity", {}).items()}
        order = rng.permutation(N) if shuffle else np.arange(N)
        order_d = be.asarray(order, dtype=xp.int64)
        loss_sum, correct, seen = _train_epoch(step, order_d, batch_size, on_batches, log_every, n_batches)
        # The epoch's only synchronisation: read the accumulated metrics.
        train_loss = float(loss_sum) / seen
        train_acc = int(correct) / seen
        if not math.isfinite(train_loss):
            net.params = params_before
            if hasattr(opt, "velocity"):
                opt.velocity = opt_state_before
            lr = getattr(opt, "lr", None)
            advice = "Try a smaller learning rate" + (f" than lr={lr}" if lr is not None else "")
            if reduction == "sum":
                advice += " (with reduction='sum' the step grows with the batch size; try lr/batch_size)"
            raise TrainingDivergedError(
                f"training diverged in epoch {epoch}: the training loss became {train_loss}. "
                f"The parameters keep their values from the end of epoch {epoch - 1}. {advice}."
            )
        val_loss = val_acc = None
        if validation is not None:
            val_loss, val_acc = _evaluate_device(net, Xv, tv, 10000)
        seconds = time.perf_counter() - start
        record = dict(
            epoch=epoch,
            train_loss=train_loss,
            train_accuracy=train_acc,
            val_loss=val_loss,
            val_accuracy=val_acc,
            seconds=seconds,
            samples=seen,
        )
        history.append(**record)
        if callback is not None:
            callback(record)
    return history


class GenericStep:
    """One mini-batch of training, written against the Array API standard: the reference path.

    ``Xd`` (N, n_in) and ``Td`` (N, C) are the whole training set on the device; ``step(idx)`` gathers
    the rows ``idx``, runs forward and back-propagation, applies ``opt.update`` and adds the batch's
    summed cross-entropy and number of correct samples to ``loss_sum`` / ``correct`` (0-d device arrays,
    never read here, so nothing synchronises). Backend-specific fast paths (:mod:`nnarray.fast`) have
    the same interface and are tested against this class.
    """

    name = "generic"

    def __init__(self, net, opt, Xd, Td, reduction):
        self.net, self.opt, self.Xd, self.Td, self.reduction = net, opt, Xd, Td, reduction
        self.reset()

    def reset(self):
        """Zero the metric accumulators (start of an epoch)."""
        xp, dev = self.net.xp, self.net.backend.device
        self.loss_sum = xp.zeros((), dtype=self.net.dtype, device=dev)
        self.correct = xp.zeros((), dtype=xp.int64, device=dev)

    def __call__(self, idx):
        net, xp = self.net, self.net.xp
        Xb = xp.take(self.Xd, idx, axis=0)
        Tb = xp.take(self.Td, idx, axis=0)
        A, Hs = net.forward(Xb)
        # Softmax, cross-entropy and the accuracy share the shifted logits S = A − max A:
        # Y = exp S / Z with Z = Σ_k exp S_k, and E_n = log Z_n − S_n,t (S at the correct class t).
        S = A - xp.max(A, axis=1, keepdims=True)
        ES = xp.exp(S)
        Z = xp.sum(ES, axis=1, keepdims=True)
        S_t = xp.sum(Tb * S, axis=1)
        self.loss_sum += xp.sum(xp.log(Z)) - xp.sum(S_t)
        # S_t = 0 exactly when the correct class has the largest output (cheaper than an argmax).
        self.correct += xp.sum(xp.astype(S_t == 0.0, xp.int64))
        grads = net.backward(F.softmax_cross_entropy_backward(xp, ES / Z, Tb, self.reduction), Hs)
        self.opt.update(net.params, grads)


def _train_epoch(step, order_d, batch_size, on_batches, log_every, n_batches):
    """One pass over the data in the order ``order_d``. Returns device scalars (loss sum, correct) and N."""
    N = order_d.shape[0]
    step.reset()
    if hasattr(step, "run_epoch"):  # a fast path that drives the whole epoch itself (CUDA graph replay)
        step.run_epoch(order_d, batch_size, on_batches, log_every, n_batches)
        return step.loss_sum, step.correct, N
    # NumPy warns on inf − inf etc. once a run diverges; divergence is detected (and reported
    # with advice) after the epoch instead, so the warnings are only noise here.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for b, s in enumerate(range(0, N, batch_size), start=1):
            step(order_d[s : min(s + batch_size, N)])  # out-of-bounds slice stops are unspecified
            if on_batches is not None and (b % log_every == 0 or b == n_batches):
                seen = min(s + batch_size, N)
                on_batches(b, n_batches, lambda ls=step.loss_sum, n=seen: float(ls) / n)
    return step.loss_sum, step.correct, N
