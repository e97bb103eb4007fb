"""Fused forms of the optimizers' rules: each update applied in place, one pass per parameter, per backend.

:meth:`nnarray.optim.Optimizer.rule` is the reference: pure expressions, a new array per operation. On a
backend whose arrays are writeable, :meth:`~nnarray.optim.Optimizer.update` uses the optimizer's fused form
(:meth:`~nnarray.optim.Optimizer.fused`) instead, which leaves the parameter ``p`` and the state arrays equal
to what the rule returns (to rounding; tests/test_fused.py checks 1e-12 in float64 for every option) and never
changes the gradient ``g``:

* **NumPy** — with the ``numba`` extra installed, one compiled loop per parameter (:class:`NumbaForm`): p, g
  and the state are read once and written once. Without it, the rule's operations as in-place ufuncs
  (``out=``) on blocks of ``BLOCK`` elements (whole rows of the parameter), with scratch buffers of one block:
  every block's temporaries stay in the core's cache, so the memory traffic is close to one pass, and no
  array the size of a parameter is allocated per step. :func:`numpy_engine` says which one runs.
* **torch** — torch's in-place tensor methods (:class:`TorchForm`): no new state arrays and at most two
  temporaries per parameter and step (the functional rule makes one per operation).
* **CuPy** — one ``ElementwiseKernel`` per optimizer: one kernel launch per parameter and step. The kernels
  are compiled on first use; this module imports without CuPy.

The forms read the hyperparameters from the optimizer at every step (μ, β, ε, λ, ...) and the step's
scalars (η, Adam's bias corrections, AdaGrad's decayed η) from :meth:`~nnarray.optim.Optimizer.scalars`.
"""

from __future__ import annotations

import importlib.util
import os

from .optim import FusedForm, HeavyBallSGD, register_fused_forms

__all__ = ["BLOCK", "NUMBA_MISSING", "numpy_engine", "numpy_form", "torch_form", "cupy_form"]

#: Elements per block of the NumPy forms (a few blocks of float32 stay in a core's L2 cache).
BLOCK = 1 << 16


# --------------------------------------------------------------------------------------------- NumPy
def _blocks(p, *others, scratch):
    """``(p_block, *other_blocks, *scratch_blocks)`` over blocks of whole rows of ``p`` (any layout: basic
    slices are views, so in-place operations reach the arrays)."""
    if p.ndim == 0:
        yield (p, *others, *(s[:1].reshape(()) for s in scratch))
        return
    rows = p.shape[0]
    row = p.size // rows if rows else 1
    step = max(1, BLOCK // max(row, 1))
    for s in range(0, rows, step):
        e = min(rows, s + step)
        views = tuple(buf[: (e - s) * row].reshape((e - s,) + p.shape[1:]) for buf in scratch)
        yield (p[s:e], *(a[s:e] for a in others), *views)


class _NumpyForm(FusedForm):
    """Base of the NumPy forms: scratch buffers of one block per dtype, and the block loop."""

    n_scratch = 2

    def __init__(self, opt, backend):
        super().__init__(opt, backend)
        self._scratch = {}

    def _buffers(self, dtype):
        bufs = self._scratch.get(dtype)
        if bufs is None:
            import numpy as np  # noqa: PLC0415 -- this form serves the NumPy backend only

            bufs = self._scratch[dtype] = tuple(np.empty(BLOCK, dtype=dtype) for _ in range(self.n_scratch))
        return bufs

    def apply(self, p, g, state, scalars):
        arrays = [state[n] for n in self.opt.state_names()]
        scratch = self._buffers(p.dtype)
        if p.size <= BLOCK:  # one block: the scratch viewed in p's shape (most biases, small layers)
            self.block(p, g, arrays, [buf[: p.size].reshape(p.shape) for buf in scratch], scalars)
            return
        k = len(arrays)
        for blk in _blocks(p, g, *arrays, scratch=scratch):
            self.block(blk[0], blk[1], blk[2 : 2 + k], blk[2 + k :], scalars)

    def _gradient(self, np, p, g, tmp, wd):
        """g + λp (L2 added to the gradient) in ``tmp``, or ``g`` itself when λ = 0 (never changed)."""
        if not wd:
            return g
        np.multiply(p, wd, out=tmp)
        np.add(g, tmp, out=tmp)
        return tmp


class NumpySGD(_NumpyForm):
    """SGD in place: μ = 0: W ← W − η g; else v ← μ v − η g, W ← W + v (Nesterov: W ← W + μ v − η g)."""

    n_scratch = 3

    def block(self, p, g, state, tmp, scalars):
        import numpy as np  # noqa: PLC0415

        opt, lr = self.opt, scalars["lr"]
        g = self._gradient(np, p, g, tmp[0], opt.weight_decay)
        lg = np.multiply(g, lr, out=tmp[1])  # η g
        if not opt.momentum:
            np.subtract(p, lg, out=p)
            return
        (v,) = state
        np.multiply(v, opt.momentum, out=v)
        np.subtract(v, lg, out=v)  # v ← μv − ηg
        if opt.nesterov:
            step = np.multiply(v, opt.momentum, out=tmp[2])
            np.subtract(step, lg, out=step)  # μv − ηg
            np.add(p, step, out=p)
        else:
            np.add(p, v, out=p)


class NumpyAdam(_NumpyForm):
    """Adam / AdamW in place: m ← β1 m + (1 − β1) g, v ← β2 v + (1 − β2) g²,
    W ← W − (η / (1 − β1^t)) m / (√v / √(1 − β2^t) + ε) (AdamW: − ηλW besides)."""

    n_scratch = 3

    def block(self, p, g, state, tmp, scalars):
        import numpy as np  # noqa: PLC0415

        opt = self.opt
        (b1, b2), wd = opt.betas, opt.weight_decay
        m, v = state
        g = self._gradient(np, p, g, tmp[0], wd if not opt._decoupled else 0.0)
        t1 = tmp[1]
        np.multiply(m, b1, out=m)
        np.multiply(g, 1.0 - b1, out=t1)
        np.add(m, t1, out=m)
        np.multiply(g, g, out=t1)
        np.multiply(t1, 1.0 - b2, out=t1)
        np.multiply(v, b2, out=v)
        np.add(v, t1, out=v)
        np.sqrt(v, out=t1)
        np.divide(t1, scalars["bc2_sqrt"], out=t1)
        np.add(t1, opt.eps, out=t1)
        np.divide(m, t1, out=t1)
        np.multiply(t1, -scalars["step_size"], out=t1)
        if wd and opt._decoupled:
            decay = np.multiply(p, -scalars["lr"] * wd, out=tmp[2])  # −ηλW, from W before the step
            np.add(t1, decay, out=t1)
        np.add(p, t1, out=p)


class NumpyRMSprop(_NumpyForm):
    """RMSprop in place: s ← α s + (1 − α) g², d = g / (√s + ε); W ← W − η d, or b ← μ b + d, W ← W − η b."""

    n_scratch = 3

    def block(self, p, g, state, tmp, scalars):
        import numpy as np  # noqa: PLC0415

        opt = self.opt
        g = self._gradient(np, p, g, tmp[0], opt.weight_decay)
        s = state[0]
        d = tmp[1]
        np.multiply(g, g, out=d)
        np.multiply(d, 1.0 - opt.alpha, out=d)
        np.multiply(s, opt.alpha, out=s)
        np.add(s, d, out=s)
        np.sqrt(s, out=d)
        np.add(d, opt.eps, out=d)
        np.divide(g, d, out=d)  # d = g / (√s + ε)
        if not opt.momentum:
            np.multiply(d, -scalars["lr"], out=d)
            np.add(p, d, out=p)
            return
        b = state[1]
        np.multiply(b, opt.momentum, out=b)
        np.add(b, d, out=b)
        np.multiply(b, -scalars["lr"], out=d)
        np.add(p, d, out=p)


class NumpyAdaGrad(_NumpyForm):
    """AdaGrad in place: h ← h + g², W ← W − η_t g / (√h + ε)."""

    def block(self, p, g, state, tmp, scalars):
        import numpy as np  # noqa: PLC0415

        opt = self.opt
        g = self._gradient(np, p, g, tmp[0], opt.weight_decay)
        (h,) = state
        t1 = tmp[1]
        np.multiply(g, g, out=t1)
        np.add(h, t1, out=h)
        np.sqrt(h, out=t1)
        np.add(t1, opt.eps, out=t1)
        np.divide(g, t1, out=t1)
        np.multiply(t1, -scalars["clr"], out=t1)
        np.add(p, t1, out=p)


_NUMPY = {"sgd": NumpySGD, "adam": NumpyAdam, "rmsprop": NumpyRMSprop, "adagrad": NumpyAdaGrad}


class NumbaForm(FusedForm):
    """The rule as one compiled Numba loop per parameter (:mod:`nnarray._numba_kernels`, the ``numba`` extra):
    p, g and the state read once and written once. Arrays that are not contiguous or not of one dtype take
    the ufunc blocks of the same family instead."""

    def __init__(self, opt, backend, family):
        super().__init__(opt, backend)
        self.family = family
        self.ufuncs = _NUMPY[family](opt, backend)
        self._step = (None, None, None)  # (scalars, dtype) of the step the cached kernel and constants are for

    def _kernel(self, state, scalars, dtype):
        """``(kernel, constants, state names)`` of this step: made once per step (``scalars`` is one dict per
        update) and dtype, not once per parameter."""
        scalars_seen, dtype_seen, cached = self._step
        if scalars_seen is not scalars or dtype_seen != dtype:
            from . import _numba_kernels  # noqa: PLC0415 -- the numba extra; chosen only when installed

            name, consts, arrays = _arguments(self.opt, self.family, state, scalars)
            names = [n for n in self.opt.state_names() if any(state[n] is a for a in arrays)]
            dt = dtype.type  # constants in the arrays' dtype: float32 computes in float32, as the rule does
            consts = tuple(c if isinstance(c, int) else dt(c) for c in consts)
            cached = (getattr(_numba_kernels, name), consts, names)
            self._step = (scalars, dtype, cached)
        return cached

    def apply(self, p, g, state, scalars):
        kernel, consts, names = self._kernel(state, scalars, p.dtype)
        arrays = [state[n] for n in names]
        if not (p.flags.c_contiguous and g.flags.c_contiguous and g.dtype == p.dtype
                and all(a.flags.c_contiguous and a.dtype == p.dtype for a in arrays)):
            self.ufuncs.apply(p, g, state, scalars)
            return
        kernel(p.reshape(-1), g.reshape(-1), *[a.reshape(-1) for a in arrays], *consts)


#: Why the NumPy forms run as ufunc blocks rather than one compiled pass, or None when Numba serves them.
NUMBA_MISSING = (
    "numba is not installed: NumPy optimizer updates run as in-place ufunc blocks "
    "(pip install 'nnarray[numba]' for one compiled pass per parameter)"
)


def numpy_engine() -> str:
    """``"numba"`` when the NumPy forms run compiled loops (Numba installed and ``$NNARRAY_NUMBA`` not ``0``/
    ``off``), else ``"ufunc"`` (:data:`NUMBA_MISSING` says why, when it is the missing extra)."""
    if os.environ.get("NNARRAY_NUMBA", "1").strip().lower() in ("0", "false", "no", "off"):
        return "ufunc"
    return "numba" if importlib.util.find_spec("numba") is not None else "ufunc"


def numpy_form(opt, family, backend):
    """The NumPy fused form of ``family`` ("sgd", "adam", "rmsprop", "adagrad") for ``opt``: Numba loops when
    :func:`numpy_engine` says so, else in-place ufunc blocks."""
    if numpy_engine() == "numba":
        return NumbaForm(opt, backend, family)
    return _NUMPY[family](opt, backend)


# --------------------------------------------------------------------------------------------- torch
class TorchForm(FusedForm):
    """The rule with torch's in-place tensor methods (``mul_``, ``add_``, ``addcmul_``, ``addcdiv_``): the
    state and the parameter are updated where they are, with at most two temporaries per parameter instead of
    one per operation (CPU or CUDA tensors)."""

    def __init__(self, opt, backend, family):
        super().__init__(opt, backend)
        self.family = family

    def apply(self, p, g, state, scalars):
        opt = self.opt
        l2 = 0.0 if getattr(opt, "_decoupled", False) else opt.weight_decay
        if l2:
            g = g.add(p, alpha=l2)  # g + λW, a new tensor: the caller's gradient is not changed
        getattr(self, "_" + self.family)(opt, p, g, state, scalars)

    @staticmethod
    def _sgd(opt, p, g, state, scalars):
        lr, mu = scalars["lr"], opt.momentum
        if not mu:
            p.add_(g, alpha=-lr)
            return
        v = state["velocity"].mul_(mu).add_(g, alpha=-lr)  # v ← μv − ηg
        if opt.nesterov:
            p.add_(v, alpha=mu).add_(g, alpha=-lr)
        else:
            p.add_(v)

    @staticmethod
    def _adam(opt, p, g, state, scalars):
        (b1, b2), wd = opt.betas, opt.weight_decay
        m = state["exp_avg"].mul_(b1).add_(g, alpha=1.0 - b1)
        v = state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1.0 - b2)
        denom = v.sqrt().div_(scalars["bc2_sqrt"]).add_(opt.eps)
        if wd and opt._decoupled:
            p.mul_(1.0 - scalars["lr"] * wd)  # W − ηλW, then the Adam step (as torch.optim.AdamW)
        p.addcdiv_(m, denom, value=-scalars["step_size"])

    @staticmethod
    def _rmsprop(opt, p, g, state, scalars):
        s = state["square_avg"].mul_(opt.alpha).addcmul_(g, g, value=1.0 - opt.alpha)
        avg = s.sqrt().add_(opt.eps)
        if not opt.momentum:
            p.addcdiv_(g, avg, value=-scalars["lr"])
            return
        b = state["momentum_buffer"].mul_(opt.momentum).addcdiv_(g, avg)
        p.add_(b, alpha=-scalars["lr"])

    @staticmethod
    def _adagrad(opt, p, g, state, scalars):
        h = state["sum"].addcmul_(g, g, value=1.0)
        p.addcdiv_(g, h.sqrt().add_(opt.eps), value=-scalars["clr"])


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


def _arguments(opt, family, state, scalars):
    """``(kernel name, constants, state arrays)`` of one parameter's update, shared by the CuPy and Numba kernels
    (which take ``p, g, *state`` and the constants in this order): every constant computed on the host as the
    functional rule computes it (1 − β1, −ηλ, ...), flags as ints."""
    lr, wd = scalars["lr"], opt.weight_decay
    if family == "sgd":
        if not opt.momentum:
            return "sgd", (lr, wd), ()
        return "sgd_momentum", (lr, opt.momentum, wd, int(opt.nesterov)), (state["velocity"],)
    if family == "adam":
        b1, b2 = opt.betas
        l2, decay = (0.0, -lr * wd) if opt._decoupled else (wd, 0.0)
        args = (b1, 1.0 - b1, b2, 1.0 - b2, opt.eps, l2, decay, -scalars["step_size"], scalars["bc2_sqrt"])
        return "adam", args, (state["exp_avg"], state["exp_avg_sq"])
    if family == "rmsprop":
        args = (opt.alpha, 1.0 - opt.alpha, opt.eps)
        if not opt.momentum:
            return "rmsprop", (*args, wd, -lr), (state["square_avg"],)
        return "rmsprop_momentum", (*args, opt.momentum, wd, -lr), (state["square_avg"], state["momentum_buffer"])
    return "adagrad", (opt.eps, wd, -scalars["clr"]), (state["sum"],)


class _CupyApply(FusedForm):
    """``apply`` of the CuPy forms: the family's kernel, one launch per parameter."""

    family = ""

    def apply(self, p, g, state, scalars):
        name, args, arrays = _arguments(self.opt, self.family, state, scalars)
        _cupy_kernel(name)(g, *args, p, *arrays)


class CupyForm(_CupyApply, FusedForm):
    """An optimizer's rule as one CuPy ``ElementwiseKernel`` per parameter and step."""

    def __init__(self, opt, backend, family):
        super().__init__(opt, backend)
        self.family = family


class CupyHeavyBallSGD(_CupyApply, HeavyBallSGD):
    """:class:`~nnarray.optim.HeavyBallSGD` (the CuPy graph step's description) that also applies itself."""

    family = "sgd"


def torch_form(opt, family, backend):
    """The torch fused form of ``family`` for ``opt``."""
    return TorchForm(opt, backend, family)


def cupy_form(opt, family, backend):
    """The CuPy fused form of ``family`` for ``opt`` (heavy-ball SGD keeps the graph step's description)."""
    if family == "sgd" and not opt.nesterov and not opt.weight_decay:
        return CupyHeavyBallSGD(opt, backend)
    return CupyForm(opt, backend, family)


register_fused_forms("numpy", numpy_form)
register_fused_forms("torch", torch_form)
register_fused_forms("cupy", cupy_form)
