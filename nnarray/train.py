"""Mini-batch training: :func:`fit` and :func:`evaluate`.

``fit`` prepares the data on the device, makes the training step (:mod:`nnarray.step`) and runs the epochs:
the schedule's η, the step's epoch driver, one read of the epoch's metrics, validation, the
:class:`~nnarray.history.History` record and the callbacks.
"""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np  # host side only: the epoch permutations come from numpy.random.default_rng

from . import functions as F
from .distributed import GradientAllReduce, abort_on_error, get_comm
from .history import History
from .step import make_step
from .checks import check_positive_int, check_reduction, check_Xt

__all__ = ["fit", "evaluate", "TrainingDivergedError", "StopTraining", "CANNOT_TRAIN"]


#: Libraries whose arrays nnarray can predict and evaluate with but not train, and why (:func:`fit` refuses them).
CANNOT_TRAIN = {
    "dask": (
        "Dask arrays are lazy: every training step would add its operations to one task graph that is never "
        "computed, and each epoch's metrics would compute every step since the start again, so the cost grows "
        "with the square of the steps. Train on an eager library (e.g. backend='numpy') and move the trained "
        "network to Dask with net.to('dask') for chunked predict/evaluate on data larger than memory"
    ),
}


class TrainingDivergedError(FloatingPointError):
    """The training loss became NaN or inf; the network keeps the parameters of the last finished epoch."""


class StopTraining(Exception):
    """Raised by a callback of :func:`fit` to end training after the current epoch (early stopping).

    The epoch is complete and recorded; ``fit`` returns the history normally.
    """


def evaluate(net, X, t, batch_size=10000):
    """Mean cross-entropy and accuracy of ``net`` on (X, t), in batches; returns ``(loss, accuracy)``.

    One host synchronisation at the end. ``X`` (N, n_in), ``t`` (N,) may be host or backend arrays. For a
    network on Dask (``net.to("dask")``) with Dask arrays, every batch is a lazy graph over X's chunks and
    the end's read computes them chunk by chunk: data larger than memory can be evaluated.
    """
    X, t = check_Xt(X, t, net.n_in, net.n_classes)
    be = net.backend
    return _evaluate_device(net, be.asarray(X, dtype=net.dtype), be.asarray(t, dtype=be.index_dtype), batch_size)


def _evaluate_device(net, Xd, td, batch_size):
    """Mean cross-entropy and accuracy through the loss head, in batches; one synchronisation."""
    loss_sum, correct = _evaluate_sums(net, Xd, td, batch_size, 0, Xd.shape[0])
    return loss_sum / Xd.shape[0], correct / Xd.shape[0]


def _evaluate_sums(net, Xd, td, batch_size, lo, hi):
    """Summed cross-entropy and number correct over rows lo..hi (host float, int); one synchronisation."""
    xp = net.xp
    loss_sum = correct = None
    for s in range(lo, hi, batch_size):
        e_ = min(s + batch_size, hi)  # the standard leaves out-of-bounds slice stops unspecified
        A, _ = net.forward(Xd[s:e_, ...])
        _, E, c = F.softmax_cross_entropy(xp, A, F.one_hot(xp, td[s:e_], net.n_classes, net.dtype), "sum")
        loss_sum = E if loss_sum is None else loss_sum + E
        correct = c if correct is None else correct + c
    if loss_sum is None:  # no rows (a rank's empty share)
        return 0.0, 0
    return float(loss_sum), int(correct)


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
    callbacks=None,
    on_batches=None,
    log_every=50,
    fast=None,
    schedule=None,
    comm=None,
):
    """Train ``net`` with ``opt`` on (X, t) by mini-batch back-propagation; return a :class:`History`.

    Per mini-batch of B images (:class:`nnarray.step.TrainStep`): forward, a = Y − T, back-propagation of
    ΔW, ΔB summed over the batch (``reduction="sum"``, the seed) or averaged (``"mean"``, the book), then
    ``opt.update``.

    Parameters
    ----------
    net : MLP
    opt : Optimizer (see :mod:`nnarray.optim`)
    X : (N, n_in) float array, host NumPy or the backend's. Moved to the device once.
    t : (N,) integer labels in 0..C−1.
    epochs, batch_size : int
        Each epoch visits every sample once; the last batch may be smaller than ``batch_size``.
    reduction : {"mean", "sum"}
        ΔW, ΔB averaged over the batch (the book; η ≈ 0.1) or summed (the seed; η ≈ 0.001 for B = 100).
    seed : int or numpy.random.Generator
        The epoch permutations are drawn on the host from ``numpy.random.default_rng(seed)`` (or from
        the Generator given, which then carries on: pass the same Generator to continue a run). For a net
        with dropout each epoch's masks come from a generator seeded by a draw from it after the
        permutation, on the host: the same masks on every backend, and a resumed run equals an
        uninterrupted one.
    validation : (X_val, t_val) or None
        Evaluated after every epoch (``val_loss``, ``val_accuracy`` in the history).
    shuffle : bool
        False visits the samples in their given order every epoch.
    history : History or None
        An earlier run's history to continue (epochs are numbered on from it).
    callbacks : callable or list of callables ``cb(record: dict)``, optional
        Called after every epoch with that epoch's record (e.g. to write a checkpoint). A callback may raise
        :class:`StopTraining` to end training after this epoch (early stopping); ``fit`` then returns normally.
    on_batches : callable(batches_done, n_batches, read_loss) -> None, optional
        Called every ``log_every`` batches for progress display. ``read_loss()`` returns the running mean
        loss of the epoch; calling it synchronises with the device, so nothing is read unless asked.
    log_every : int
        Batches between calls of ``on_batches``.
    fast : bool or None
        Use a backend-specific fast path of :mod:`nnarray.fast` (same results as the generic Array API
        step, tested against it): ``None`` picks one when available unless ``$NNARRAY_FAST=0``;
        ``False`` always runs the generic step; ``True`` requires a fast path.
    schedule : Schedule or callable(epoch) -> lr, optional
        Sets ``opt.lr`` before every epoch (:mod:`nnarray.schedules`); without one ``opt.lr`` is left alone.
    comm : communicator, optional
        Data-parallel training (:mod:`nnarray.distributed`), e.g. ``MPIComm()`` under ``mpiexec -n P``;
        default: one process. ``batch_size`` is then the *global* batch: every rank draws the same
        permutation (rank 0's seed and RNG state are broadcast), takes its contiguous share of each
        global batch, and one all-reduce of the packed gradients per step gives every rank the
        single-process gradient (``"mean"`` divides by the global batch size). Parameters and optimizer
        state are broadcast from rank 0 at the start (so a resumed run continues from rank 0's
        checkpoint), the epoch's metrics and validation are all-reduced (every rank gets the same
        History and all stop together on divergence), and the callbacks run on rank 0 only (the one
        that writes checkpoints and outputs) before all ranks go on together; a
        :class:`StopTraining` there stops every rank. An exception on one rank aborts the whole job.

    Raises
    ------
    TypeError
        For a network on a library listed in ``CANNOT_TRAIN`` (Dask: lazy arrays, see there), before any work.
    TrainingDivergedError
        When the epoch's loss is NaN or inf; ``net.params`` and the optimizer's state then hold the values
        of the last finished epoch.
    """
    reason = CANNOT_TRAIN.get(getattr(getattr(net, "backend", None), "name", None))
    if reason is not None:
        raise TypeError(f"net: a network on {net.backend.name!r} cannot be trained: {reason}")
    X, t = check_Xt(X, t, net.n_in, net.n_classes)
    check_positive_int(epochs, "epochs")
    check_positive_int(batch_size, "batch_size")
    check_positive_int(log_every, "log_every")
    check_reduction(reduction)
    if validation is not None:
        if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
            raise TypeError("validation: expected a pair (X_val, t_val)")
        validation = check_Xt(*validation, net.n_in, net.n_classes, names=("validation X", "validation t"))
    if callbacks is None:
        callbacks = []
    elif callable(callbacks):
        callbacks = [callbacks]
    else:
        callbacks = list(callbacks)
        for cb in callbacks:
            if not callable(cb):
                raise TypeError(f"callbacks: expected callables, got {type(cb).__name__}")
    if schedule is not None and not callable(schedule):
        raise TypeError(f"schedule: expected a schedule (callable epoch -> lr), got {type(schedule).__name__}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    history = History() if history is None else history
    comm = get_comm(comm)
    if comm.size == 1:
        return _fit(net, opt, X, t, epochs, batch_size, reduction, rng, validation, shuffle, history,
                    callbacks, on_batches, log_every, fast, schedule, comm)  # fmt: skip
    # A failure on one rank (a bug, a full disk in a rank-0 callback) would leave the others blocked in
    # their next collective: end the job instead. Divergence is decided from all-reduced metrics, so
    # every rank raises it at the same point and it propagates normally.
    # Data-parallel training sums every rank's gradients before the update: one all-reduce per step, the
    # optimizer's first gradient hook for the duration of this call.
    with abort_on_error(comm, collective=(TrainingDivergedError,)), _first_hook(opt, GradientAllReduce(comm, net.xp)):
        _sync_start(net, opt, rng, history, comm, X.shape[0])
        return _fit(net, opt, X, t, epochs, batch_size, reduction, rng, validation, shuffle, history,
                    callbacks, on_batches, log_every, fast, schedule, comm)  # fmt: skip


@contextlib.contextmanager
def _first_hook(opt, hook):
    """``hook`` runs first among ``opt``'s gradient hooks inside the block, and is removed after it."""
    if not callable(getattr(opt, "add_hook", None)):
        raise TypeError(f"opt: data-parallel training needs an optimizer with gradient hooks (add_hook), "
                        f"such as those of nnarray.optim; got {type(opt).__name__}")
    opt.add_hook(hook, first=True)
    try:
        yield
    finally:
        opt.remove_hook(hook)


def _sync_start(net, opt, rng, history, comm, N):
    """Every rank takes rank 0's parameters, optimizer state, RNG state and history (also on resume)."""
    N0 = comm.bcast_object(N, root=0)
    if N != N0:  # the shares are computed from the global row numbers: every rank needs the same data
        raise ValueError(f"X: every rank must pass the same training set; rank {comm.rank} has {N} rows, rank 0 {N0}")
    for k in list(net.params):
        net.params[k] = comm.bcast_array(net.params[k], root=0)  # in place on NumPy/CuPy
    if hasattr(opt, "state_dict"):
        sd = comm.bcast_object(opt.state_dict() if comm.rank == 0 else None, root=0)
        if comm.rank != 0:
            opt.load_state_dict(sd, backend=net.backend, dtype=net.dtype)
    rng.bit_generator.state = comm.bcast_object(rng.bit_generator.state if comm.rank == 0 else None, root=0)
    hd = comm.bcast_object(history.to_dict() if comm.rank == 0 else None, root=0)
    if comm.rank != 0:
        for k, v in History.from_dict(hd).to_dict().items():
            setattr(history, k, v)


def _fit(net, opt, X, t, epochs, batch_size, reduction, rng, validation, shuffle, history, callbacks,
         on_batches, log_every, fast, schedule, comm):  # fmt: skip
    """The epochs of :func:`fit` (arguments checked there; ``comm`` already synchronised)."""
    be, xp = net.backend, net.xp
    # The data go to the device once; per batch only rows are gathered there.
    Xd = be.asarray(X, dtype=net.dtype)
    Td = F.one_hot(xp, be.asarray(t, dtype=be.index_dtype), net.n_classes, net.dtype)  # teacher T, built once
    if validation is not None:
        Xv, tv = be.asarray(validation[0], dtype=net.dtype), be.asarray(validation[1], dtype=be.index_dtype)
    N = Xd.shape[0]
    step = make_step(net, opt, Xd, Td, reduction, fast=fast, batch_size=batch_size)
    first_epoch = (history.epoch[-1] + 1) if len(history) else 1

    for epoch in range(first_epoch, first_epoch + epochs):
        start = time.perf_counter()
        if schedule is not None:
            opt.lr = schedule(epoch)
        # Updates may happen in place: keep device copies to fall back to if this epoch diverges.
        params_before = {k: xp.asarray(v, copy=True) for k, v in net.params.items()}
        opt_before = opt.snapshot() if hasattr(opt, "snapshot") else None
        order = rng.permutation(N) if shuffle else np.arange(N)
        if getattr(net, "uses_dropout", False):
            # The epoch's dropout masks come from a child of the permutation generator: drawn from its
            # stream (so a checkpoint's saved state resumes them exactly) and only when dropout is on (so
            # runs without dropout see the permutations they always did).
            step.mask_rng = np.random.default_rng(rng.integers(0, 2**32, size=4))
        step.reset()
        # NumPy warns on inf − inf etc. once a run diverges; divergence is detected (and reported with
        # advice) after the epoch instead, so the warnings are only noise here.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            step.epoch(be.asarray(order, dtype=be.index_dtype), batch_size, comm, on_batches, log_every)
        # The epoch's only synchronisation: read the accumulated metrics (sums over this rank's rows,
        # summed over the ranks by one tiny all-reduce, so every rank decides alike).
        loss_sum, correct = comm.allreduce_sum(np.asarray([float(step.loss_sum), float(int(step.correct))]))
        train_loss, train_acc = float(loss_sum) / N, int(correct) / N
        if not math.isfinite(train_loss):
            net.params = params_before
            if opt_before is not None:
                opt.restore(opt_before)
            raise TrainingDivergedError(_divergence_message(epoch, train_loss, opt, reduction))
        val_loss = val_acc = None
        if validation is not None:
            val_loss, val_acc = _validate(net, Xv, tv, comm)
        # Every rank records the same epoch time: the mean over the ranks.
        seconds = float(comm.allreduce_sum(np.asarray([time.perf_counter() - start]))[0]) / comm.size
        record = dict(
            epoch=epoch,
            train_loss=train_loss,
            train_accuracy=train_acc,
            val_loss=val_loss,
            val_accuracy=val_acc,
            lr=getattr(opt, "lr", None),
            seconds=seconds,
            samples=N,
        )
        history.append(**record)
        stop = False
        if comm.rank == 0:  # rank 0 alone writes checkpoints and outputs
            for cb in callbacks:  # every callback sees the epoch (a checkpoint writer too), then training stops
                try:
                    cb(record)
                except StopTraining:
                    stop = True
        # The other ranks wait for rank 0's callbacks (a barrier) and learn whether to stop.
        if comm.bcast_object(stop, root=0):
            break
    return history


def _validate(net, Xv, tv, comm):
    """Mean loss and accuracy on the validation set: each rank evaluates a contiguous share (one rank: all of
    it) and one all-reduce sums the shares, so every rank gets the same figures."""
    Nv = Xv.shape[0]
    lo, hi = Nv * comm.rank // comm.size, Nv * (comm.rank + 1) // comm.size
    loss_sum, correct = comm.allreduce_sum(np.asarray(_evaluate_sums(net, Xv, tv, 10000, lo, hi), dtype=float))
    return float(loss_sum) / Nv, int(correct) / Nv


def _divergence_message(epoch, train_loss, opt, reduction):
    lr = getattr(opt, "lr", None)
    advice = "Try a smaller learning rate" + (f" than lr={lr}" if lr is not None else "")
    if reduction == "sum":
        advice += " (with reduction='sum' the step grows with the batch size; try lr/batch_size)"
    return (
        f"training diverged in epoch {epoch}: the training loss became {train_loss}. "
        f"The parameters keep their values from the end of epoch {epoch - 1}. {advice}."
    )
