"""Mini-batch training: :func:`fit` and :func:`evaluate`.

``fit`` checks everything it can (the data, the settings, the schedule over the epochs, each callback's
preflight), prepares the data on the device, makes the training step (:mod:`nnarray.step`) and runs the
epochs: the schedule's η, the step's epoch driver, one read of the epoch's metrics, the divergence guard,
validation, the :class:`~nnarray.history.History` record and the callbacks (:mod:`nnarray.callbacks`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np  # host side only: the epoch permutations come from numpy.random.default_rng

from . import functions as F
from .callbacks import DivergenceGuard, FitRun, as_callbacks
from .checks import (
    check_bool,
    check_optimizer,
    check_option,
    check_positive_int,
    check_reduction,
    check_seed,
    check_Xt,
    warn_absent_classes,
)
from .distributed import GradientAllReduce, abort_on_error, check_device, get_comm
from .history import History
from .step import make_step
from .words import arg, number

if TYPE_CHECKING:
    from .backend import Array
    from .callbacks import Callback
    from .model import MLP
    from .optim import Optimizer
    from .schedules import Schedule

__all__ = ["fit", "evaluate", "FitOptions", "TrainingDivergedError", "StopTraining", "CANNOT_TRAIN"]


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
    """The training loss became NaN or inf or grew far beyond its start (:class:`~nnarray.callbacks.DivergenceGuard`);
    the network and the optimizer keep the values of the last finished epoch."""


class StopTraining(Exception):
    """Raised by a callback of :func:`fit` to end training after the current epoch (early stopping).

    The epoch is complete and recorded; ``fit`` returns the history normally.
    """


@dataclass
class FitOptions:
    """The less common settings of :func:`fit`'s loop, grouped so ``fit`` keeps a short signature.

    shuffle : bool
        False visits the samples in their given order every epoch.
    history : History or None
        An earlier run's history to continue (epochs are numbered on from it; pass the same Generator as
        ``seed`` to continue the permutations too).
    fast : bool or None
        Use a backend-specific fast path of :mod:`nnarray.fast` (same results as the generic Array API
        step, tested against it): ``None`` picks one when available unless ``$NNARRAY_FAST=0``;
        ``False`` always runs the generic step; ``True`` requires a fast path.
    comm : communicator or None
        Data-parallel training (:mod:`nnarray.distributed`), e.g. ``MPIComm()`` under ``mpiexec -n P``;
        default: one process (see :func:`fit`).
    """

    shuffle: bool = True
    history: History | None = None
    fast: bool | None = None
    comm: Any = None


def evaluate(net: MLP, X: Array, t: Array, batch_size: int = 10000) -> tuple[float, float]:
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


def fit(net: MLP, opt: Optimizer, X: Array, t: Array, epochs: int = 5, batch_size: int = 100,
        reduction: str = "mean", seed: int | np.random.Generator | None = 0,
        validation: tuple[Array, Array] | None = None, schedule: Schedule | None = None,
        callbacks: Callback | Sequence[Callback] | None = None, options: FitOptions | None = None) -> History:
    """Train ``net`` with ``opt`` on (X, t) by mini-batch back-propagation; return a :class:`History`.

    Per mini-batch of B images (:class:`nnarray.step.TrainStep`): forward, a = Y − T, back-propagation of
    ΔW, ΔB summed over the batch (``reduction="sum"``, the seed) or averaged (``"mean"``, the book), then
    ``opt.update``. Everything is checked before the first update: the data, the settings, the schedule over
    every epoch and each callback's ``preflight`` (e.g. that a checkpoint's folder can be written).

    Parameters
    ----------
    net : MLP
    opt : Optimizer (see :mod:`nnarray.optim`)
    X : (N, n_in) float array, host NumPy or the backend's. Moved to the device once.
    t : (N,) integer labels in 0..C−1.
        Classes of 0..C−1 without a label in ``t`` get a :class:`~nnarray.checks.LabelWarning` naming them.
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
    schedule : Schedule or callable(epoch) -> lr, optional
        Sets ``opt.lr`` before every epoch (:mod:`nnarray.schedules`); without one ``opt.lr`` is left alone.
        Evaluated for every epoch before training, so a schedule that does not cover them is refused first.
    callbacks : Callback, callable or list of them, optional
        :mod:`nnarray.callbacks` (``EarlyStopping``, ``ModelCheckpoint``, ``ProgressBar``, ``HistoryLogger``,
        ``DivergenceGuard``) or plain functions ``cb(record: dict)`` called after every epoch with its record.
        A callback may raise :class:`StopTraining` (or set its :class:`~nnarray.callbacks.FitRun`'s
        ``stop_training``) to end training after this
        epoch; ``fit`` then returns normally. Every callback sees the epoch before training stops.
    options : FitOptions, optional
        ``shuffle``, ``history`` (continue a run), ``fast`` (backend fast paths), ``comm`` (data-parallel).
        With a communicator of P processes ``batch_size`` is the *global* batch: every rank draws the same
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
    ValueError, TypeError
        Before any work, for arguments that cannot work: ``X``, ``t`` (labels outside 0..C−1), ``opt`` (its state
        belongs to a network of another shape), ``epochs``, ...; the message names the argument.
    TypeError
        For a network on a library listed in ``CANNOT_TRAIN`` (Dask: lazy arrays, see there), before any work.
    TrainingDivergedError
        When the epoch's loss is NaN, inf or far beyond its start (:class:`~nnarray.callbacks.DivergenceGuard`,
        always on); ``net.params`` and the optimizer's state then hold the values of the last finished epoch.
    """
    reason = CANNOT_TRAIN.get(getattr(getattr(net, "backend", None), "name", ""))
    if reason is not None:
        raise TypeError(f"net: a network on {net.backend.name!r} cannot be trained: {reason}")
    X, t = check_Xt(X, t, net.n_in, net.n_classes)
    check_optimizer(opt, net.params)
    epochs, batch_size = check_positive_int(epochs, "epochs"), check_positive_int(batch_size, "batch_size")
    check_reduction(reduction)
    validation = _check_validation(validation, net)
    options = _check_options(options)
    if schedule is not None and not callable(schedule):
        raise TypeError(f"schedule: expected a schedule (callable epoch -> lr), got {type(schedule).__name__}")
    cbs = as_callbacks(callbacks)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(check_seed(seed))
    history = History() if options.history is None else options.history
    comm = get_comm(options.comm)
    check_device(comm, net.backend)  # the GPU the communicator reduces on is the net's
    run = FitRun(net, opt, history, rng, schedule, epochs, X.shape[0], batch_size, validation is not None, comm)
    lrs = _preflight(run, cbs)
    warn_absent_classes(t, net.n_classes)  # after every refusal: a warning only for a run that starts
    if comm.size == 1:
        return _fit(run, cbs, X, t, validation, reduction, lrs, options)
    # A failure on one rank (a bug, a full disk in a rank-0 callback) would leave the others blocked in
    # their next collective: end the job instead. Divergence is decided from all-reduced metrics, so
    # every rank raises it at the same point and it propagates normally.
    # Data-parallel training sums every rank's gradients before the update: one all-reduce per step, the
    # optimizer's first gradient hook for the duration of this call.
    with abort_on_error(comm, collective=(TrainingDivergedError,)), _first_hook(opt, GradientAllReduce(comm, net.xp)):
        _sync_start(net, opt, rng, history, comm, X.shape[0])
        run.plan(epochs)  # numbered on from rank 0's history
        return _fit(run, cbs, X, t, validation, reduction, _learning_rates(run), options)


def _check_validation(validation, net):
    if validation is None:
        return None
    if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
        raise TypeError(f"validation: expected a pair (X_val, t_val), got {type(validation).__name__}")
    return check_Xt(*validation, net.n_in, net.n_classes, names=("validation X", "validation t"))


def _check_options(options):
    if options is None:
        return FitOptions()
    if not isinstance(options, FitOptions):
        raise TypeError(f"options: expected nnarray.FitOptions(shuffle=..., history=..., fast=..., comm=...), "
                        f"got {type(options).__name__}")
    if options.history is not None and not isinstance(options.history, History):
        raise TypeError(f"options.history: expected a History, got {type(options.history).__name__}")
    check_bool(options.shuffle, "options.shuffle")
    check_option(options.fast, (None, True, False), "options.fast")
    return options


def _preflight(run, cbs):
    """Before any work: η of every epoch (a schedule that cannot give one is refused now), then each
    callback's preflight. Returns the epochs' η (None without a schedule)."""
    lrs = _learning_rates(run)
    for cb in cbs:
        cb.preflight(run)
    return lrs


def _learning_rates(run):
    """``{epoch: η}`` of the schedule for the epochs planned (None without a schedule)."""
    if run.schedule is None:
        return None
    last = getattr(run.schedule, "last_epoch", None)
    if last is not None and run.last_epoch > last:
        span = f"epoch {run.last_epoch}" if run.first_epoch == run.last_epoch else \
            f"epochs {run.first_epoch}..{run.last_epoch}"
        raise ValueError(f"schedule: {run.schedule!r} covers epochs 1..{last}, but this fit would train {span}; "
                         f"make the schedule for the run's {run.last_epoch} epochs")
    return {e: run.schedule(e) for e in range(run.first_epoch, run.last_epoch + 1)}


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


def _fit(run, cbs, X, t, validation, reduction, lrs, options):
    """The epochs of :func:`fit` (everything checked there; ``comm`` already synchronised)."""
    net, opt, comm = run.net, run.opt, run.comm
    be, xp = net.backend, net.xp
    # The data go to the device once; per batch only rows are gathered there.
    Xd = be.asarray(X, dtype=net.dtype)
    td = be.asarray(t, dtype=be.index_dtype)
    Td = F.one_hot(xp, td, net.n_classes, net.dtype)  # teacher T, built once
    Xv = tv = None
    if validation is not None:
        Xv, tv = be.asarray(validation[0], dtype=net.dtype), be.asarray(validation[1], dtype=be.index_dtype)
    step = run.step = make_step(net, opt, Xd, Td, reduction, fast=options.fast, batch_size=run.batch_size)
    guard = next((cb for cb in cbs if isinstance(cb, DivergenceGuard)), None) or DivergenceGuard()
    hooks = _Hooks(run, cbs if comm.rank == 0 else [])  # rank 0 alone writes checkpoints and outputs
    run.start_loss = _start_loss(net, Xd, td, comm)
    try:
        hooks.call("on_train_begin")
        for epoch in range(run.first_epoch, run.last_epoch + 1):
            record = _epoch(run, step, hooks, guard, epoch, lrs, options.shuffle, reduction, (Xv, tv))
            hooks.epoch_end(record)
            # The other ranks wait for rank 0's callbacks (a barrier) and learn whether to stop.
            if comm.bcast_object(run.stop_training, root=0):
                run.outcome = "stopped"
                break
        run.outcome = run.outcome or "done"
    except TrainingDivergedError:
        run.outcome = "diverged"
        raise
    except KeyboardInterrupt:
        run.outcome = "interrupted"
        raise
    except BaseException:
        run.outcome = "error"
        raise
    finally:
        hooks.call("on_train_end")
    return run.history


def _epoch(run, step, hooks, guard, epoch, lrs, shuffle, reduction, val):
    """One epoch: η, the batches, the epoch's metrics (one read), the guard, validation; returns its record."""
    net, opt, comm, rng = run.net, run.opt, run.comm, run.rng
    xp, N = net.xp, run.n_samples
    start = time.perf_counter()
    run.epoch = epoch
    if lrs is not None:
        opt.lr = lrs[epoch]
    hooks.call("on_epoch_begin", epoch)
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
        order_d = net.backend.asarray(order, dtype=net.backend.index_dtype)  # the permutation on the device
        step.epoch(order_d, run.batch_size, comm, hooks.on_batches, hooks.log_every)
    # The epoch's only synchronisation: read the accumulated metrics (sums over this rank's rows,
    # summed over the ranks by one tiny all-reduce, so every rank decides alike).
    loss_sum, correct = comm.allreduce_sum(np.asarray([float(step.loss_sum), float(int(step.correct))]))
    train_loss, train_acc = float(loss_sum) / N, int(correct) / N
    reason = guard.check(run, epoch, train_loss)
    if reason is not None:
        net.params = params_before
        if opt_before is not None:
            opt.restore(opt_before)
        raise TrainingDivergedError(_divergence_message(epoch, reason, opt, reduction))
    val_loss = val_acc = None
    if val[0] is not None:
        val_loss, val_acc = _validate(net, val[0], val[1], comm)
    # Every rank records the same epoch time: the mean over the ranks.
    seconds = float(comm.allreduce_sum(np.asarray([time.perf_counter() - start]))[0]) / comm.size
    record = dict(epoch=epoch, train_loss=train_loss, train_accuracy=train_acc, val_loss=val_loss,
                  val_accuracy=val_acc, lr=getattr(opt, "lr", None), seconds=seconds, samples=N)
    run.history.append(**record)
    return record


class _Hooks:
    """Calls the callbacks' hooks in order (on rank 0; the others get an empty list)."""

    def __init__(self, run, cbs):
        self.run, self.cbs = run, cbs
        self.batch_cbs = [cb for cb in cbs if cb.log_every]
        self.log_every = min((cb.log_every for cb in self.batch_cbs), default=1)
        self.on_batches = self._on_batches if self.batch_cbs else None

    def call(self, hook, *args):
        for cb in self.cbs:
            getattr(cb, hook)(self.run, *args)

    def _on_batches(self, done, n_batches, read_loss):
        for cb in self.batch_cbs:
            if done % cb.log_every == 0 or done == n_batches:
                cb.on_batches(self.run, done, n_batches, read_loss)

    def epoch_end(self, record):
        """Every callback sees the epoch (a checkpoint writer too); a StopTraining anywhere stops after it."""
        for cb in self.cbs:
            try:
                cb.on_epoch_end(self.run, record)
            except StopTraining:
                self.run.stop_training = True


def _start_loss(net, Xd, td, comm, rows=10000):
    """The mean training loss before the first update, on the first ``rows`` samples (one synchronisation):
    the divergence guard's reference. All-reduced over the ranks' shares, so every rank has the same."""
    n = min(rows, Xd.shape[0])
    lo, hi = n * comm.rank // comm.size, n * (comm.rank + 1) // comm.size
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        loss_sum, _ = _evaluate_sums(net, Xd, td, 10000, lo, hi)
    return float(comm.allreduce_sum(np.asarray([loss_sum], dtype=float))[0]) / n


def _validate(net, Xv, tv, comm):
    """Mean loss and accuracy on the validation set: each rank evaluates a contiguous share (one rank: all of
    it) and one all-reduce sums the shares, so every rank gets the same figures."""
    Nv = Xv.shape[0]
    lo, hi = Nv * comm.rank // comm.size, Nv * (comm.rank + 1) // comm.size
    loss_sum, correct = comm.allreduce_sum(np.asarray(_evaluate_sums(net, Xv, tv, 10000, lo, hi), dtype=float))
    return float(loss_sum) / Nv, int(correct) / Nv


def _divergence_message(epoch, reason, opt, reduction):
    lr = getattr(opt, "lr", None)
    advice = "Try a smaller learning rate" + (f" than {arg('lr', number(lr))}" if lr is not None else "")
    if reduction == "sum":
        advice += (f" (with {arg('reduction', repr('sum'))} the step grows with the batch size; try the learning rate "
                   "divided by the batch size)")
    return (
        f"training diverged in epoch {epoch}: {reason}. "
        f"The parameters keep their values from the end of epoch {epoch - 1}. {advice}."
    )
