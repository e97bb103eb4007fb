"""Fused forms of the optimizers' rules: each update applied in place, one pass per parameter, per backend.

:meth:`nnarray.optim.Optimizer.rule` is the reference: pure expressions whose results are stored. On a backend
whose arrays are writeable, :meth:`~nnarray.optim.Optimizer.update` uses the optimizer's fused form
(:meth:`~nnarray.optim.Optimizer.fused`) instead, where there is one; it leaves the parameter ``p`` and the
state arrays equal to what the rule returns (to rounding; tests/test_fused.py checks 1e-12 in float64 for every
option) and never changes the gradient ``g``. A form stands beside the rule only where ``scripts/bench.py``
measures it faster per epoch at the sizes people train and no slower at the seed's (docs/speed.md):

* **NumPy** — every optimizer (:data:`NUMPY_FUSED_FAMILIES`), with the ``numba`` extra installed: one compiled
  loop per parameter (:class:`NumbaForm`) that reads p, g and the state once and writes them once, and flushes
  a decaying state to zero rather than leave it subnormal (:mod:`nnarray._numba_kernels`). Without the extra
  the functional rule runs; :func:`numpy_engine` says which one does.
* **torch** — on the CPU, with the ``numba`` extra, NumPy's loops on the tensors' own memory (:class:`TorchNumbaForm`:
  ``Tensor.numpy()`` is a view); on CUDA the functional rule.
* **CuPy** — one ``ElementwiseKernel`` per optimizer: one kernel launch per parameter and step. The kernels
  are compiled on first use; this module imports without CuPy.

The forms read the hyperparameters from the optimizer at every step (μ, β, ε, λ, ...) and the step's
scalars (η, Adam's bias corrections, AdaGrad's decayed η) from :meth:`~nnarray.optim.Optimizer.scalars`.
"""

from __future__ import annotations

import importlib.util
import os
from itertools import repeat
from operator import attrgetter, is_
from typing import TYPE_CHECKING

import numpy as np  # the NumPy forms' dtypes (np.finfo); CuPy's forms take CuPy arrays

from .optim import FusedForm, HeavyBallSGD, fused_updates_enabled, register_fused_forms

if TYPE_CHECKING:
    from .backend import Backend
    from .optim import Optimizer

__all__ = ["NUMPY_FUSED_FAMILIES", "NUMBA_MISSING", "NumbaForm", "TorchNumbaForm", "TorchHeavyBallSGD",
           "describe_updates", "numpy_engine", "numpy_form", "numpy_views", "torch_form", "cupy_form"]

# Which optimizers get a compiled pass on NumPy: the figures are in docs/speed.md.
NUMPY_FUSED_FAMILIES = frozenset({"sgd", "adam", "rmsprop", "adagrad"})

_CARRAY = attrgetter("flags.carray")
_C_CONTIGUOUS = attrgetter("flags.c_contiguous")
_FARRAY = attrgetter("flags.farray")
_F_CONTIGUOUS = attrgetter("flags.f_contiguous")
_DTYPE = attrgetter("dtype")


# --------------------------------------------------------------------------------------------- NumPy
class NumbaForm(FusedForm):
    """The rule as one compiled Numba loop per parameter (:mod:`nnarray._numba_kernels`, the ``numba`` extra):
    p, g and the state read once and written once. Arrays that are not contiguous or not of one dtype take the
    functional rule, whose results are written into p and the state arrays; read-only ones take the functional
    rule, whose results are stored."""

    description = "one compiled Numba pass per parameter (numba extra)"

    def __init__(self, opt, backend, family):
        super().__init__(opt, backend)
        self.family = family
        self._key, self._cached = None, None  # what _kernel made last, and from what

    def _kernel(self, scalars, dtype):
        """``(kernel, constants)`` of this step: the constants cast to ``dtype`` are made again only when a value
        changed (a step of plain SGD makes none). The kernels take the state arrays in
        :meth:`Optimizer.state_names`' order."""
        name, raw, _ = _arguments(self.opt, self.family, scalars)
        key = (name, raw, dtype)
        if key != self._key:
            from . import _numba_kernels  # noqa: PLC0415 -- the numba extra; chosen only when installed

            dt = dtype.type  # constants in the arrays' dtype: float32 computes in float32, as the rule does
            tiny = np.finfo(dtype).tiny  # the kernels' flush-to-zero threshold (see _numba_kernels)
            consts = (*(c if isinstance(c, int) else dt(c) for c in raw), dt(tiny))
            self._key, self._cached = key, (getattr(_numba_kernels, name), consts)
        return self._cached

    def update(self, params, grads, scalars):
        # FusedForm.update's effect, lean: it runs once per training step, where every microsecond of Python
        # counts at the seed's sizes (the products evict the interpreter's data from the caches, so a line of
        # Python costs about 3 × what it costs in isolation). The checks of every array run as C-level maps.
        keys, gs = list(grads), list(grads.values())
        ps = list(map(params.__getitem__, keys))
        names = self.opt.state_names()
        columns = self._state_columns(names, keys, ps) if names else ()
        if not self._loops(ps, gs, columns, scalars):
            super().update(params, grads, scalars)  # read-only, strided or mixed: parameter by parameter

    def apply(self, p, g, state, scalars):
        if not self._loops([p], [g], [[a] for a in state.values()], scalars):
            self._write_rule(p, g, state, scalars)

    def _views(self, ps, gs, columns):
        """The NumPy arrays the loops run on: the arrays themselves here (a form for another library's arrays
        gives NumPy views of their memory, or None where it has none)."""
        return ps, gs, columns

    def _loops(self, ps, gs, columns, scalars):
        """Run the kernel on every parameter ``ps[i]`` with its gradient ``gs[i]`` and state ``column[i]`` of each
        of ``columns`` (:meth:`_views` of them), when all are writeable, of one dtype and C-contiguous (or all
        Fortran-contiguous); False (nothing run) otherwise."""
        views = self._views(ps, gs, columns)
        if views is None:
            return False
        ps, gs, columns = views
        arrays = ps if not columns else ps + [a for column in columns for a in column]
        dtype = ps[0].dtype
        if not all(map(is_, map(_DTYPE, arrays + gs), repeat(dtype))):  # the very dtype of p
            return False
        # carray: C-contiguous, aligned and writeable
        if not (all(map(_CARRAY, arrays)) and all(map(_C_CONTIGUOUS, gs))):
            if not (all(map(_FARRAY, arrays)) and all(map(_F_CONTIGUOUS, gs))):
                return False
            # Fortran order throughout (the torch fast path stores its weights so): the loops see the transposes,
            # C-contiguous views of the same memory, element for element the same pairs
            ps, gs = [a.T for a in ps], [a.T for a in gs]
            columns = [[a.T for a in column] for column in columns]
        kernel, consts = self._kernel(scalars, dtype)
        for p, g, *state in zip(ps, gs, *columns, strict=True):
            kernel(p, g, *state, *consts)
        return True

    def _state_columns(self, names, keys, ps):
        """Per state name of ``names`` (:meth:`Optimizer.state_names`) the list of the arrays of ``keys``, each
        created where missing."""
        opt = self.opt
        states = [opt.state[name] for name in names]
        try:
            return [list(map(s.__getitem__, keys)) for s in states]
        except KeyError:
            for k, p in zip(keys, ps, strict=True):
                opt._created_state(k, p)
            return [list(map(s.__getitem__, keys)) for s in states]

    def _write_rule(self, p, g, state, scalars):
        """The functional rule's results written into ``p`` and the state arrays (strided or mixed dtypes)."""
        new_p, new_state = self.opt.rule(p, g, state, scalars)
        p[...] = new_p
        for name, v in new_state.items():
            state[name][...] = v


class TorchNumbaForm(NumbaForm):
    """:class:`NumbaForm` on PyTorch's CPU tensors: the same Numba loops run on the tensors' own memory through
    NumPy views (``Tensor.numpy()`` shares it, no copy). A tensor that is not contiguous, not of the parameters'
    dtype or has no view (one that requires grad) gets the functional rule's results written into it, as
    :class:`NumbaForm` does for a strided array."""

    description = "one compiled Numba pass per parameter on the CPU tensors' memory (numba extra)"

    def _views(self, ps, gs, columns):
        groups = [numpy_views(ps), numpy_views(gs), *map(numpy_views, columns)]
        return None if None in groups else (groups[0], groups[1], groups[2:])

    def _write_rule(self, p, g, state, scalars):
        import torch  # noqa: PLC0415 -- only torch tensors come here

        with torch.no_grad():  # a leaf that requires grad may be written in place only so (as torch.optim does)
            super()._write_rule(p, g, state, scalars)


class TorchHeavyBallSGD(TorchNumbaForm, HeavyBallSGD):
    """SGD's :class:`TorchNumbaForm` without Nesterov and weight decay, which is also the
    :class:`~nnarray.optim.HeavyBallSGD` description the torch CPU step folds into its products
    (:class:`nnarray.fast.torch_cpu.TorchCpuStep`)."""

    description = ("one compiled Numba pass per parameter on the CPU tensors' memory (numba extra); in torch's CPU "
                   "fast step the weights' update folded into their gradients' products")


def numpy_views(tensors):
    """NumPy views of the memory of CPU ``tensors`` (``Tensor.numpy()``, no copy), or None where one has none (it
    requires grad, or is not on the CPU)."""
    try:
        return [t.numpy() for t in tensors]
    except (RuntimeError, TypeError):
        return None


#: Why the NumPy updates run the functional rule rather than one compiled pass (Numba missing).
NUMBA_MISSING = (
    "numba is not installed: NumPy optimizer updates run the functional rule "
    "(pip install 'nnarray[numba]' for one compiled pass per parameter for every optimizer)"
)


def numpy_engine() -> str:
    """``"numba"`` when the NumPy forms run compiled loops (Numba installed and ``$NNARRAY_NUMBA`` not ``0``/
    ``off``), else ``"functional"`` (:data:`NUMBA_MISSING` says why, when it is the missing extra)."""
    if os.environ.get("NNARRAY_NUMBA", "1").strip().lower() in ("0", "false", "no", "off"):
        return "functional"
    return "numba" if importlib.util.find_spec("numba") is not None else "functional"


def describe_updates(opt: Optimizer, backend: Backend) -> str:
    """How ``opt``'s updates run on ``backend``, in words: its fused form's
    :attr:`~nnarray.optim.FusedForm.description`, else the functional rule — on NumPy without Numba with the
    extra that would change it."""
    form = opt.fused(backend) if fused_updates_enabled() else None
    if form is not None and form.apply is not None:
        return form.description
    if backend.name == "numpy" and importlib.util.find_spec("numba") is None:
        return "the functional rule (pip install 'nnarray[numba]' for one compiled pass per parameter)"
    return "the functional rule"


def numpy_form(opt, family, backend):
    """The NumPy fused form of ``family`` for ``opt``: a Numba loop for the families of
    :data:`NUMPY_FUSED_FAMILIES` when :func:`numpy_engine` says so, else None (the functional rule)."""
    if family in NUMPY_FUSED_FAMILIES and numpy_engine() == "numba":
        return NumbaForm(opt, backend, family)
    return None


def torch_form(opt, family, backend):
    """The torch fused form of ``family`` for ``opt``: on the CPU, NumPy's Numba loops on the tensors' memory
    (:class:`TorchNumbaForm`; for SGD without Nesterov and weight decay :class:`TorchHeavyBallSGD`) when
    :func:`numpy_engine` says so; else None (the functional rule; on CUDA too)."""
    device = getattr(backend, "device", None)
    if family in NUMPY_FUSED_FAMILIES and numpy_engine() == "numba" and getattr(device, "type", None) == "cpu":
        heavy_ball = family == "sgd" and not opt.nesterov and not opt.weight_decay
        return (TorchHeavyBallSGD if heavy_ball else TorchNumbaForm)(opt, backend, family)
    return None


# --------------------------------------------------------------------------------------------- CuPy
# One ElementwiseKernel per optimizer (and state layout). ``T`` is the parameters' dtype; every constant arrives
# from the host as a Python float computed there as the rule computes it (1 − β1, −ηλ, ...; cast to T as the
# rule's weak scalars are), flags as ints. Each kernel evaluates the rule's expressions in the rule's order.
_CUPY_SOURCES = {
    "sgd": ("T g, T lr, T wd", "T p", "T ge = wd != 0 ? g + wd * p : g; p = p - lr * ge;"),
    "sgd_momentum": (
        "T g, T lr, T mu, T wd, int32 nesterov",
        "T p, T v",
        "T ge = wd != 0 ? g + wd * p : g; T nv = mu * v - lr * ge; v = nv;"
        "p = p + (nesterov ? mu * nv - lr * ge : nv);",
    ),
    "adam": (
        "T g, T b1, T c1, T b2, T c2, T eps, T l2, T decay, T neg_step, T bc2_sqrt",
        "T p, T m, T v",
        "T ge = l2 != 0 ? g + l2 * p : g;"
        "T nm = b1 * m + c1 * ge; T nv = b2 * v + c2 * (ge * ge); m = nm; v = nv;"
        "T delta = nm / (sqrt(nv) / bc2_sqrt + eps) * neg_step;"
        "if (decay != 0) delta = delta + p * decay;"
        "p = p + delta;",
    ),
    "rmsprop": (
        "T g, T alpha, T c, T eps, T wd, T neg_lr",
        "T p, T s",
        "T ge = wd != 0 ? g + wd * p : g; T ns = alpha * s + c * (ge * ge); s = ns;"
        "p = p + ge / (sqrt(ns) + eps) * neg_lr;",
    ),
    "rmsprop_momentum": (
        "T g, T alpha, T c, T eps, T mu, T wd, T neg_lr",
        "T p, T s, T b",
        "T ge = wd != 0 ? g + wd * p : g; T ns = alpha * s + c * (ge * ge); s = ns;"
        "T nb = mu * b + ge / (sqrt(ns) + eps); b = nb; p = p + neg_lr * nb;",
    ),
    "adagrad": (
        "T g, T eps, T wd, T neg_clr",
        "T p, T h",
        "T ge = wd != 0 ? g + wd * p : g; T nh = h + ge * ge; h = nh; p = p + ge / (sqrt(nh) + eps) * neg_clr;",
    ),
}
_CUPY_KERNELS: dict = {}


def _cupy_kernel(name):
    """The compiled ``ElementwiseKernel`` ``name`` (built on first use; needs CuPy)."""
    if name not in _CUPY_KERNELS:
        import cupy  # noqa: PLC0415 -- only a CuPy backend asks for these kernels

        params_in, params_out, body = _CUPY_SOURCES[name]
        _CUPY_KERNELS[name] = cupy.ElementwiseKernel(params_in, params_out, body, f"nnarray_{name}")
    return _CUPY_KERNELS[name]


def _arguments(opt, family, scalars):
    """``(kernel name, constants, state names)`` of one parameter's update, shared by the CuPy and Numba kernels
    (which take ``p, g``, the named state arrays and the constants in this order): every constant computed on
    the host as the functional rule computes it (1 − β1, −ηλ, ...), flags as ints."""
    lr, wd = scalars["lr"], opt.weight_decay
    if family == "sgd":
        if not opt.momentum:
            return "sgd", (lr, wd), ()
        return "sgd_momentum", (lr, opt.momentum, wd, int(opt.nesterov)), ("velocity",)
    if family == "adam":
        b1, b2 = opt.betas
        l2, decay = (0.0, -lr * wd) if opt._decoupled else (wd, 0.0)
        args = (b1, 1.0 - b1, b2, 1.0 - b2, opt.eps, l2, decay, -scalars["step_size"], scalars["bc2_sqrt"])
        return "adam", args, ("exp_avg", "exp_avg_sq")
    if family == "rmsprop":
        args = (opt.alpha, 1.0 - opt.alpha, opt.eps)
        if not opt.momentum:
            return "rmsprop", (*args, wd, -lr), ("square_avg",)
        return "rmsprop_momentum", (*args, opt.momentum, wd, -lr), ("square_avg", "momentum_buffer")
    return "adagrad", (opt.eps, wd, -scalars["clr"]), ("sum",)


class _CupyApply(FusedForm):
    """``apply`` of the CuPy forms: the family's kernel, one launch per parameter."""

    family = ""
    description = "one CuPy ElementwiseKernel per parameter"

    def apply(self, p, g, state, scalars):
        name, args, names = _arguments(self.opt, self.family, scalars)
        _cupy_kernel(name)(g, *args, p, *[state[n] for n in names])


class CupyForm(_CupyApply, FusedForm):
    """An optimizer's rule as one CuPy ``ElementwiseKernel`` per parameter and step."""

    def __init__(self, opt, backend, family):
        super().__init__(opt, backend)
        self.family = family


class CupyHeavyBallSGD(_CupyApply, HeavyBallSGD):
    """:class:`~nnarray.optim.HeavyBallSGD` (the CuPy graph step's description) that also applies itself."""

    family = "sgd"


def cupy_form(opt, family, backend):
    """The CuPy fused form of ``family`` for ``opt`` (heavy-ball SGD keeps the graph step's description)."""
    if family == "sgd" and not opt.nesterov and not opt.weight_decay:
        return CupyHeavyBallSGD(opt, backend)
    return CupyForm(opt, backend, family)


register_fused_forms("numpy", numpy_form)
register_fused_forms("torch", torch_form)
register_fused_forms("cupy", cupy_form)
