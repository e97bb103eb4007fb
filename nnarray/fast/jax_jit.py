"""The generic training step traced once by ``jax.jit``: :class:`JaxJitStep`.

On JAX the generic :class:`~nnarray.step.TrainStep` dispatches every operation on its own. This step runs the
very same code — :meth:`nnarray.MLP.forward`, :func:`nnarray.functions.softmax_cross_entropy`,
:meth:`nnarray.MLP.backward` and the optimizer's pure :meth:`~nnarray.optim.Optimizer.rule` — but once, under
``jax.jit``, which compiles it into one XLA program per batch shape; every later batch of that shape is a
single call. Parameters and optimizer state go in and come out as arrays (their input buffers are donated,
so XLA may update them where they lie); the Python floats of :meth:`~nnarray.optim.Optimizer.scalars` (η,
Adam's bias corrections, ...) are arguments, so a schedule or a growing step count never recompiles.

Same algorithm, same values: tested against the generic step (float64, 1e-10; tests/test_jax_jit.py).
Not used where the optimizer has gradient hooks (the data-parallel all-reduce talks to other processes and
cannot be traced).
"""

from __future__ import annotations

import copy
import functools

from .. import functions as F
from ..optim import Optimizer
from ..step import TrainStep

__all__ = ["JaxJitStep"]


#: Compiled batch functions, one per (network structure, optimizer type and hyperparameters, reduction): every
#: ``fit`` call with such a network and optimizer reuses the programs jax.jit compiled for it (per batch shape).
_COMPILED: dict = {}


def _compiled_batch(net, opt, reduction):
    """The jit-compiled :func:`_batch` for this network structure, optimizer rule and reduction (cached).

    What the traced code reads besides its arguments is in the key: the layer sizes and dropout rates (the
    model's loop), the dtype, the optimizer's type and hyperparameters other than η (its rule's constants).
    """
    import jax  # noqa: PLC0415 -- only on the JAX backend

    hyper = tuple(sorted((k, v) for k, v in opt.hyperparameters().items() if k != "lr"))
    key = (tuple(net.layer_sizes), tuple(net.dropout), net.dtype_name, type(opt), hyper, reduction)
    if key not in _COMPILED:
        batch = functools.partial(_batch, copy.copy(net), copy.copy(opt), reduction)
        _COMPILED[key] = jax.jit(batch, static_argnums=(0,), donate_argnums=(1, 2))
    return _COMPILED[key]


def _batch(net, opt, reduction, n, params, state, Xd, Td, idx, masks, scalars):
    """One batch as a pure function: ``(params, state, E, correct)`` after the update (traced by jit).

    ``net`` and ``opt`` are templates: the model's own forward and backward run on the traced ``params``,
    the optimizer's rule on the traced ``state`` and ``scalars``.
    """
    xp = net.xp
    net = copy.copy(net)
    net.params = params
    A, Hs = net.forward(xp.take(Xd, idx, axis=0), masks)
    a, E, correct = F.softmax_cross_entropy(xp, A, xp.take(Td, idx, axis=0), reduction, n)
    grads = net.backward(a, Hs, masks)
    new_params, new_state = {}, {name: {} for name in state}
    for k, g in grads.items():
        new_params[k], s = opt.rule(params[k], g, {name: state[name][k] for name in state}, scalars)
        for name, v in s.items():
            new_state[name][k] = v
    return new_params, new_state, E, correct


class JaxJitStep(TrainStep):
    """:class:`~nnarray.step.TrainStep` with its batch computation compiled by ``jax.jit`` (see the module)."""

    name = "jax-jit"
    description = "the generic step traced once by jax.jit"

    @classmethod
    def unsupported(cls, net, opt, Xd, Td, batch_size=None, explicit=False):
        if net.backend.name != "jax":
            return f"the jit step runs on JAX only, not on {net.backend.name!r}"
        if not isinstance(opt, Optimizer):
            return f"the jit step traces an nnarray Optimizer's pure rule; got {type(opt).__name__}"
        if opt.hooks:
            return "the optimizer has gradient hooks, which run outside a traced step"
        return None

    def __init__(self, net, opt, Xd, Td, reduction):
        super().__init__(net, opt, Xd, Td, reduction)
        self._compiled = _compiled_batch(net, opt, reduction)
        # Donated buffers are consumed: start from arrays of our own, so that arrays the caller still holds
        # (the parameters before fit, a snapshot) stay valid.
        xp = net.xp
        for k, v in net.params.items():
            net.params[k] = xp.asarray(v, copy=True)
        for arrays in opt.state.values():
            for k, v in arrays.items():
                arrays[k] = xp.asarray(v, copy=True)

    def __call__(self, idx, n=None, masks=None):
        """One mini-batch (as :meth:`nnarray.step.TrainStep.__call__`), computed by the compiled program."""
        net, opt = self.net, self.opt
        if masks is None:
            masks = self.draw_masks(idx.shape[0])
        if masks is not None:  # host → device, once per batch (no read back)
            masks = [None if M is None else net.backend.asarray(M, dtype=net.dtype) for M in masks]
        opt.t += 1
        for k, p in net.params.items():  # the state's initial values where missing (what rule treats None as)
            opt._created_state(k, p)
        state = {name: dict(opt.state[name]) for name in opt.state_names()}
        n = idx.shape[0] if n is None else n
        params, state, E, correct = self._compiled(n, dict(net.params), state, self.Xd, self.Td, idx, masks,
                                                   opt.scalars())  # fmt: skip
        net.params.update(params)
        for name, arrays in state.items():
            opt.state[name].update(arrays)
        self.loss_sum += E
        self.correct += correct
