"""The training step: one mini-batch of back-propagation and an optimizer update, and the epoch that drives it.

The step protocol
-----------------
A step object is made once per :func:`nnarray.fit` call for the whole training set on the device
(``Xd`` (N, n_in), ``Td`` (N, C) one-hot teachers) and offers:

* ``step(idx, n=None, masks=None)`` — one mini-batch, the rows ``idx`` of the data:

  0. for a net with dropout, the batch's masks M/(1 − p) in the compute dtype: given (host or device arrays,
     one row per row of ``idx``; :meth:`TrainStep.epoch` passes slices of buffers drawn for many batches at
     once and sent to the device once, :meth:`TrainStep.epoch_masks`) or drawn here from the host generator
     ``mask_rng`` (:meth:`nnarray.MLP.dropout_masks`) and sent — every backend trains with the same masks;
  1. forward through the model's layer loop: A = MLP.forward(X, masks) (:meth:`nnarray.MLP.forward`);
  2. the loss head: a = Y − T (÷ n for ``reduction="mean"``), the summed cross-entropy E and the number
     correct (:func:`nnarray.functions.softmax_cross_entropy`), added to ``loss_sum`` / ``correct``;
  3. back-propagation to ΔW, ΔB (:meth:`nnarray.MLP.backward`, with the same masks);
  4. the optimizer: ``opt.update(params, grads)``, which first runs its gradient hooks (data-parallel
     training's all-reduce of one packed buffer is one, :class:`nnarray.distributed.GradientAllReduce`).

  ``n`` is the size of the *global* batch, by which the mean reduction divides (the rows of ``idx`` when
  training in one process).
* ``reset()`` — zero the metric accumulators ``loss_sum`` (0-d, summed E) and ``correct`` (0-d, the index dtype);
  they stay on the device and are never read inside an epoch, so nothing synchronises.
* ``epoch(order_d, batch_size, comm=None, on_batches=None, log_every=50)`` — the one driver of an epoch:
  the batches ``order_d[s : s + batch_size]`` in turn; with a communicator of P processes each global batch
  of n rows is split into contiguous shares and rank r takes rows n·r//P … n·(r+1)//P of it (a rank may get
  none in a tiny last batch and then contributes zero gradients). Dropout masks are drawn for the whole
  global batch and each rank takes its rows' share, so P processes train with the masks of one.
* ``mask_rng`` — the host ``numpy.random.Generator`` of the dropout masks. :func:`nnarray.fit` sets a new one
  every epoch, derived from its permutation generator (whose state checkpoints save), so a resumed run
  draws the masks of an uninterrupted one. Unset, it is ``numpy.random.default_rng(0)``.

Backend-specific fast paths (:mod:`nnarray.fast`) subclass :class:`TrainStep`: they may replace *how* a piece
is computed (buffers, fused kernels, a CUDA graph that replays whole batches), not the algorithm, and are
tested against the generic step. The pieces a subclass can swap without rewriting the step: ``ops`` (the hidden
layers' elementwise parts and the weight gradient's product, :meth:`nnarray.MLP.forward`/``backward``),
:meth:`TrainStep.gather` (the batch's rows), :meth:`TrainStep.loss_head` and :meth:`TrainStep.backward_update`
(back-propagation and the update). One whose kernels apply the update learns the rule from the optimizer's fused
form (``opt.fused(backend)``, :func:`nnarray.optim.heavy_ball_form`) and refuses an optimizer with gradient hooks
(or leaves the update to it). They register with :func:`register_fast_path`; :func:`make_step` picks one.
"""

from __future__ import annotations

import os

import numpy as np  # host side only: dropout masks are drawn from a numpy.random.Generator

from . import functions as F
from .words import arg

__all__ = ["TrainStep", "make_step", "register_fast_path", "fast_path_for", "fast_enabled_by_env"]

#: The largest host buffer of dropout masks :meth:`TrainStep.epoch_masks` draws at once (bytes): the whole
#: epoch's masks for most networks; for wide ones (784-2048-10 at batch 128: 1 MiB per batch) a few transfers.
MASK_BUFFER_BYTES = 128 * 2**20


class TrainStep:
    """The training step written once against the Array API standard: the reference for every backend.

    Parameters
    ----------
    net : MLP
    opt : Optimizer (anything with ``update(params, grads)``)
    Xd : (N, n_in) array of the net's backend and dtype — X, the whole training set
    Td : (N, C) array — the one-hot teachers T of every sample
    reduction : {"mean", "sum"}
    """

    name = "generic"
    #: How this step computes, in a few words for people (the training command prints it).
    description = "the generic Array API step"
    #: What computes the hidden layers' elementwise parts and the weight gradient's product
    #: (:meth:`nnarray.MLP.forward`/``backward``'s ``ops``): None for :mod:`nnarray.functions`; a fast path may give
    #: one-pass kernels of the same functions.
    ops = None

    def __init__(self, net, opt, Xd, Td, reduction):
        self.net, self.opt, self.Xd, self.Td, self.reduction = net, opt, Xd, Td, reduction
        self.mask_rng = None
        self.reset()

    @classmethod
    def unsupported(cls, net, opt, Xd, Td, batch_size=None, explicit=False):
        """None when this step can run the training, else the reason it cannot (fast paths override)."""
        return None

    def reset(self):
        """Zero the metric accumulators (start of an epoch)."""
        xp, dev = self.net.xp, self.net.backend.device
        self.loss_sum = xp.zeros((), dtype=self.net.dtype, device=dev)
        self.correct = xp.zeros((), dtype=self.net.backend.index_dtype, device=dev)

    def draw_masks(self, n):
        """Host dropout masks for ``n`` rows from ``mask_rng`` (:meth:`nnarray.MLP.dropout_masks`); None without
        dropout."""
        if not getattr(self.net, "uses_dropout", False):
            return None
        if self.mask_rng is None:
            self.mask_rng = np.random.default_rng(0)
        return self.net.dropout_masks(self.mask_rng, n)

    def epoch_masks(self, N, batch_size):
        """Per global batch of an epoch of ``N`` rows, its dropout masks on the device (None without dropout).

        Drawn from ``mask_rng`` as :meth:`draw_masks` draws them batch after batch (the same values), but for
        many batches at once (:meth:`nnarray.MLP.draw_dropout`): one host buffer per hidden layer in the compute
        dtype, sent to the device in one transfer and sliced there per batch. A buffer holds the whole epoch
        when it fits in ``MASK_BUFFER_BYTES``, else as many batches as fit (at least one).
        """
        net = self.net
        starts = range(0, N, batch_size)
        if not getattr(net, "uses_dropout", False):
            yield from (None for _ in starts)
            return
        if self.mask_rng is None:
            self.mask_rng = np.random.default_rng(0)
        row_bytes = np.dtype(net.dtype_name).itemsize * sum(
            w for w, p in zip(net.layer_sizes[1:-1], net.dropout, strict=True) if p > 0.0
        )
        per_buffer = max(1, MASK_BUFFER_BYTES // (row_bytes * batch_size))
        for g in range(0, len(starts), per_buffer):
            rows = [min(batch_size, N - s) for s in starts[g : g + per_buffer]]
            host = net.draw_dropout(self.mask_rng, rows)
            device = [None if M is None else net.backend.asarray(M, dtype=net.dtype) for M in host]
            r = 0
            for n in rows:
                yield [None if M is None else M[r : r + n, ...] for M in device]
                r += n

    def gather(self, A, idx):
        """The rows ``idx`` of ``A`` (the batch of X or T): ``take`` along axis 0 (a fast path may use its
        library's own gather)."""
        return self.net.xp.take(A, idx, axis=0)

    def loss_head(self, A, T, n):
        """``(a, E, correct)`` of the batch's outputs ``A`` and teachers ``T``:
        :func:`nnarray.functions.softmax_cross_entropy` (a fast path may compute it elsewhere)."""
        return F.softmax_cross_entropy(self.net.xp, A, T, self.reduction, n)

    def __call__(self, idx, n=None, masks=None):
        """One mini-batch: the rows ``idx`` (1-D device array of the backend's index dtype); ``n`` the global batch
        size.

        ``masks``: the batch's host dropout masks (rows matching ``idx``); drawn here when the net has
        dropout and none are given.
        """
        net = self.net
        if masks is None:
            masks = self.draw_masks(idx.shape[0])
        if masks is not None:  # host → device, once per batch (no read back)
            masks = [None if M is None else net.backend.asarray(M, dtype=net.dtype) for M in masks]
        A, Hs = net.forward(self.gather(self.Xd, idx), masks, self.ops)
        a, E, correct = self.loss_head(A, self.gather(self.Td, idx), n)
        self.loss_sum += E
        self.correct += correct
        self.backward_update(a, Hs, masks)

    def backward_update(self, a, Hs, masks):
        """Back-propagation from ``a`` (N, C) through the layers ``Hs`` (:meth:`nnarray.MLP.backward`) and the
        optimizer's update of the gradients: steps 3 and 4 (a fast path may fold the update into the gradients'
        products)."""
        self.opt.update(self.net.params, self.net.backward(a, Hs, masks, self.ops))

    def epoch(self, order_d, batch_size, comm=None, on_batches=None, log_every=50):
        """Train on every batch of ``order_d`` (the epoch's permutation of row indices, on the device).

        ``on_batches(batches_done, n_batches, read_loss)`` is called every ``log_every`` batches (and after the
        last); ``read_loss()`` returns the running mean loss of this rank's rows and synchronises, so it is
        only read when asked.
        """
        N = order_d.shape[0]
        rank, size = (0, 1) if comm is None else (comm.rank, comm.size)
        n_batches = -(-N // batch_size)
        seen = 0
        mask_batches = self.epoch_masks(N, batch_size)
        for b, s in enumerate(range(0, N, batch_size), start=1):
            n = min(batch_size, N - s)  # the standard leaves out-of-bounds slice stops unspecified
            lo, hi = s + n * rank // size, s + n * (rank + 1) // size
            masks = next(mask_batches)  # the global batch's, so that every rank draws the same
            if masks is not None:
                masks = [None if M is None else M[lo - s : hi - s, ...] for M in masks]
            self(order_d[lo:hi], n, masks)
            seen += hi - lo
            if on_batches is not None and (b % log_every == 0 or b == n_batches):
                rows = max(seen, 1)  # bound now: the reader may be called after later batches
                on_batches(b, n_batches, lambda ls=self.loss_sum, m=rows: float(ls) / m)


# --------------------------------------------------------------------------------------------- selection
_FAST_PATHS: dict = {}  # backend name -> zero-argument callable returning the step class (imported lazily)


def register_fast_path(backend_name, load_class):
    """Register a fast path for ``backend_name``: ``load_class()`` returns a :class:`TrainStep` subclass."""
    _FAST_PATHS[backend_name] = load_class


def fast_enabled_by_env() -> bool:
    """False when ``$NNARRAY_FAST`` is ``0``/``false``/``no``/``off``."""
    return os.environ.get("NNARRAY_FAST", "1").strip().lower() not in ("0", "false", "no", "off")


def fast_path_for(net, opt, Xd, Td, batch_size=None, explicit=False):
    """``(class, None)`` for the fast path that can run this training, or ``(None, reason)``.

    ``explicit``: the caller asked for a fast path (``fit(fast=True)``), which admits experimental ones.
    """
    load = _FAST_PATHS.get(net.backend.name)
    if load is None:
        return None, f"no fast path for backend {net.backend.name!r}"
    cls = load()
    reason = cls.unsupported(net, opt, Xd, Td, batch_size=batch_size, explicit=explicit)
    return (cls, None) if reason is None else (None, reason)


def make_step(net, opt, Xd, Td, reduction, fast=None, batch_size=None):
    """The step :func:`nnarray.fit` uses: a fast path when allowed and able, else :class:`TrainStep`.

    ``fast``: None picks a fast path when one can run this training (unless ``$NNARRAY_FAST=0``); False always
    uses the generic step; True requires a fast path (ValueError naming the reason when none can run).
    """
    if fast is False or (fast is None and not fast_enabled_by_env()):
        return TrainStep(net, opt, Xd, Td, reduction)
    cls, reason = fast_path_for(net, opt, Xd, Td, batch_size, explicit=fast is True)
    if cls is None:
        if fast is True:
            raise ValueError(f"{arg('fast', 'True')}: no fast path available here ({reason}); "
                             f"use {arg('fast', 'None')} or {arg('fast', 'False')}")
        return TrainStep(net, opt, Xd, Td, reduction)
    return cls(net, opt, Xd, Td, reduction)
