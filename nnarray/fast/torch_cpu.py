"""PyTorch on the CPU: MKL's products in ``torch.nn.Linear``'s layout, the elementwise passes and the update as
the NumPy fast path's Numba loops on the tensors' own memory: :class:`TorchCpuStep`.

nnarray on torch runs the generic step with torch's operations: its products are MKL's, faster than OpenBLAS at
the wide layers people train, but every elementwise pass is a torch operation of its own, and the products run
in the seed's layout. This step changes how the step computes, not what:

* **the weights in Fortran order** — W (n_in, n_out) as the transpose of a C-contiguous (n_out, n_in) buffer, the
  way ``torch.nn.Linear`` keeps its weight: the forward product H·W is then MKL's NT product and
  ΔW = (aᵀ·H)ᵀ (:meth:`TorchOps.weight_gradient`) its TN product of the other shape, the pair PyTorch itself
  runs (at 784-2048-10, batch 128, one thread: 3109 against 3324 µs and 2757 against 3166 µs per product). The
  values are the seed's W; only their strides change (the model's ``params`` keep their shapes);
* **each hidden layer's elementwise passes** one compiled loop per direction (:class:`Ops` of
  :mod:`nnarray.fast.numpy_numba`) on NumPy views of the tensors (``Tensor.numpy()`` shares the memory);
* **the batch gathers** ``torch.index_select`` (array-api-compat's ``take`` first maps negative indices, three
  more operations per gather), and **the loss head** on NumPy views of the (batch, classes) arrays: a dozen small
  operations, each a few µs in NumPy against about 20 in torch;
* **the update** the optimizer's torch form (:class:`nnarray.fused.TorchNumbaForm`), which runs the loops on the
  Fortran-ordered weights and state as they lie; for **SGD with or without heavy-ball momentum** (no Nesterov, no
  weight decay, no gradient hooks: the optimizer's :class:`~nnarray.optim.HeavyBallSGD` form) each weight's update
  is folded into its gradient's product instead (:meth:`TorchCpuStep.backward_update`): V ← μV − η·Hᵀa is one
  ``addmm_`` into the velocity V, then W += V one pass on torch's threads (μ = 0: W ← W − η·Hᵀa one ``addmm_``
  into W). ΔW is never stored and the update runs on MKL's and torch's threads, where the Numba loop runs on one
  core: at 784-2048-10, batch 128, two threads, W1's gradient and update took 2.25 ms against 2.71.

The elementwise parts are the generic step's operations in the same order; the products differ by rounding only
(MKL sums in another order): tested against the generic step (tests/test_step.py). Used by default on torch's
CPU device with the ``numba`` extra; ``fit(fast=False)`` or ``$NNARRAY_FAST=0`` runs the generic step.
"""

from __future__ import annotations

import numpy as np  # the loss head on NumPy views of the tensors (see TorchCpuStep.loss_head)

from .. import functions as F
from ..fused import numpy_views
from ..optim import fused_updates_enabled, heavy_ball_form
from .numpy_numba import NumbaStep, Ops

__all__ = ["TorchCpuStep", "TorchOps"]


class TorchOps(Ops):
    """:class:`~nnarray.fast.numpy_numba.Ops` on CPU tensors (through NumPy views of their memory), and the
    weight gradient in the Fortran order of :class:`TorchCpuStep`'s weights."""

    @staticmethod
    def weight_gradient(xp, H, a):
        """ΔW = Hᵀ·a computed as (aᵀ·H)ᵀ: a Fortran-ordered (n_in, n_out) view, the layout of the weights."""
        return (a.T @ H).T

    _views = staticmethod(numpy_views)


class TorchCpuStep(NumbaStep):
    """:class:`~nnarray.fast.numpy_numba.NumbaStep` on torch's CPU tensors, with MKL's products in
    ``torch.nn.Linear``'s layout (see the module)."""

    name = "torch-cpu"
    description = ("the generic step, its products in torch.nn.Linear's layout, each hidden layer's elementwise "
                   "passes one compiled Numba loop on the tensors' memory, SGD's update folded into the weight "
                   "gradients' products (numba extra)")
    ops_class = TorchOps
    #: Every how many updates the heavy-ball route flushes subnormal velocities to zero (:meth:`_flush`).
    flush_every = 64

    def __init__(self, net, opt, Xd, Td, reduction):
        super().__init__(net, opt, Xd, Td, reduction)
        import torch  # noqa: PLC0415 -- only on the torch backend

        self._torch = torch
        self._index_select, self._from_numpy = torch.index_select, torch.from_numpy
        self._fused = fused_updates_enabled()  # $NNARRAY_FUSED=0: the functional rule, here too
        # the largest subnormal number of the dtype: hardshrink by it zeroes exactly what the Numba kernels flush
        dt = np.dtype(net.dtype_name).type
        self._subnormal_max = float(np.nextafter(np.finfo(dt).tiny, dt(0)))
        fortran_weights(net, opt)

    @classmethod
    def unsupported(cls, net, opt, Xd, Td, batch_size=None, explicit=False):
        device = getattr(net.backend.device, "type", str(net.backend.device))
        if device != "cpu":
            return f"the torch CPU step runs on the CPU, not on {device!r}"
        return super().unsupported(net, opt, Xd, Td, batch_size, explicit)

    def gather(self, A, idx):
        return self._index_select(A, 0, idx)

    def loss_head(self, A, T, n):
        # The head's dozen operations on a (batch, classes) array cost a few µs each in NumPy and about 20 in
        # torch: computed on NumPy views of A and T; ``a`` comes back as a tensor on the same memory.
        views = numpy_views((A, T))
        if views is None:  # a tensor that requires grad has no view
            return super().loss_head(A, T, n)
        a, E, correct = F.softmax_cross_entropy(np, *views, self.reduction, n)
        return self._from_numpy(a), E, correct

    def backward_update(self, a, Hs, masks):
        """Back-propagation and the update; for heavy-ball SGD (:func:`nnarray.optim.heavy_ball_form`) in one walk
        down the layers, each weight's update folded into its gradient's product:

        * h = Σ_k W_k,j a_k (masked as :meth:`nnarray.MLP.backward` does) first, from W before it changes;
        * μ > 0: V ← μV − η·H_prevᵀa as one ``addmm_`` into the velocity V (:class:`~nnarray.optim.SGD`'s
          ``"velocity"``, v = −η b), then W += V; μ = 0: W ← W − η·H_prevᵀa as one ``addmm_`` into W;
        * the bias: the form's Numba loop on ΔB = Σ_n a (:class:`~nnarray.fused.TorchNumbaForm`).

        The optimizer's ``t`` and state advance as :meth:`~nnarray.optim.Optimizer.update` advances them; the
        values are the rule's to rounding (MKL adds μV to the product unrounded; tests/test_step.py).
        """
        form = heavy_ball_form(self.opt, self.net.backend)[0] if self._fused else None
        velocity = {} if form is None or not form.momentum else form.buffers(self.net.params)["velocity"]
        if form is None or not self._foldable(velocity):
            return super().backward_update(a, Hs, masks)
        net, xp, ops = self.net, self.net.xp, self.ops
        p = net.params
        self.opt.t += 1
        lr, mu, scalars = form.lr, form.momentum, form.scalars()
        bias_grads = {}
        with self._torch.no_grad():  # a weight that requires grad may be changed in place only so
            for l in range(net.n_layers, 0, -1):
                H_prev, W = Hs[l - 1], p[f"W{l}"]
                bias_grads[f"b{l}"] = xp.sum(a, axis=0)  # ΔB
                M = None if masks is None or l == 1 else masks[l - 2]
                h = None if l == 1 else ops.hidden_backward(xp, a @ W.T, H_prev, M)
                # V ← μV − η·H_prevᵀa into the velocity, or W ← W − η·H_prevᵀa into W (μ = 0); the transposes
                # are the C-contiguous buffers of the Fortran-ordered tensors
                target = velocity[f"W{l}"] if mu else W
                target.T.addmm_(a.T, H_prev, beta=mu or 1.0, alpha=-lr)
                if mu:
                    W.add_(target)
                a = h
            form.update(p, bias_grads, scalars)  # the biases: the form's Numba loop
        if mu and self.opt.t % self.flush_every == 0:
            self._flush(velocity.values())
        return None

    def _foldable(self, velocity):
        """Whether every weight's velocity (if any) is a tensor of the weight's dtype and shape, as ``addmm_``
        needs (a state loaded otherwise takes the optimizer's update, which writes the rule into it)."""
        for k, V in velocity.items():
            W = self.net.params[k]
            if W.ndim == 2 and not (isinstance(V, self._torch.Tensor) and V.dtype == W.dtype and V.shape == W.shape):
                return False
        return True

    def _flush(self, arrays):
        """Set every value below the dtype's smallest normal number to 0, in place, as the Numba kernels do at
        every update (:mod:`nnarray._numba_kernels`): the velocity of a dead unit decays into the subnormal numbers,
        where each product then takes a microcode assist (``addmm_`` with a quarter of W1's velocities subnormal:
        2.4 × slower). Run every :attr:`flush_every` updates, one pass per array on torch's threads; meanwhile such a
        value moves no weight (added to one, it rounds away)."""
        for V in arrays:
            self._torch.hardshrink(V, self._subnormal_max, out=V)


def fortran_weights(net, opt):
    """Store every weight matrix of ``net`` and the optimizer's state of it in Fortran order, the same values."""
    params = net.params
    for k in list(params):
        params[k] = _fortran(params[k])
        for arrays in opt.state.values():
            if k in arrays:
                arrays[k] = _fortran(arrays[k])


def _fortran(x):
    """A 2-D tensor as the transpose of a C-contiguous copy of its transpose (itself when it already lies so)."""
    return x.T.contiguous().T if x.ndim == 2 and x.stride(0) != 1 else x
