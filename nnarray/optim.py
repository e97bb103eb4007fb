"""Optimizers: the update rule that turns gradients ΔW, ΔB into new parameters.

The seed's update is plain SGD, B ← B − η ΔB, W ← W − η ΔW (:class:`SGD` with ``momentum=0``). The book's
optimizers ("Deep Learning from Scratch" ch. 6 and its common/optimizer.py) are here with PyTorch's definitions
and argument names, so that runs can be compared one to one with ``torch.optim`` (tests/test_optim.py does,
to 1e-12 in float64): :class:`SGD` (SGD, Momentum, Nesterov; weight decay), :class:`Adam`, :class:`AdamW`,
:class:`RMSprop`, :class:`AdaGrad`. Each is written once against the Array API standard.

The optimizer protocol
----------------------
Every optimizer is an :class:`Optimizer`:

* ``lr`` — the learning rate η, a Python float; schedules (:mod:`nnarray.schedules`) set it per epoch;
* ``hyperparameters()`` — ``{"lr": η, ...}``, everything that defines the update besides the state;
* ``update(params, grads, consume=False)`` — one step for every key of ``grads``; arrays are updated in place
  where they are writeable (NumPy, CuPy, array-api-strict, torch), else replaced by new entries of ``params``.
  ``consume=True`` says the gradients are the caller's scratch (the training step's own arrays): an optimizer
  may then overwrite them instead of allocating a temporary the size of every parameter per step;
* ``state`` — ``{state name: {parameter key: array}}`` on the parameters' device (SGD's ``"velocity"``,
  Adam's ``"exp_avg"`` and ``"exp_avg_sq"``, ...);
  only the optimizer assigns its entries. A fast path that computes the update itself (with the documented
  formula) asks for the arrays with ``state_arrays(params, name)``, which creates missing ones as zeros,
  and may then change their *contents* on the device;
* ``state_dict()`` / ``load_state_dict(sd, backend, dtype)`` — host copies for checkpoints and for
  :func:`nnarray.fit`'s rollback after a diverged epoch; :func:`from_state_dict` rebuilds any optimizer.

Hyperparameters are Python floats, which the standard treats as "weak" scalars: float32 parameters stay
float32 (a NumPy scalar would promote them to float64 under NEP 50).
"""

from __future__ import annotations

import math
import numbers

from .backend import to_numpy
from .checks import check_lr

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "AdaGrad", "Adagrad", "from_state_dict", "OPTIMIZERS"]

#: Optimizer classes by name, for checkpoints (:func:`from_state_dict`). Subclasses register themselves.
OPTIMIZERS: dict = {}


def _check_fraction(value, name, upper_open=True):
    """A float in [0, 1) (or [0, 1] with ``upper_open=False``), with an error naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    value = float(value)
    if not (0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0):
        raise ValueError(f"{name}: expected a value in [0, {'1)' if upper_open else '1]'}, got {value!r}")
    return value


def _check_nonnegative(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    value = float(value)
    if not (0.0 <= value < float("inf")):
        raise ValueError(f"{name}: expected a finite value ≥ 0, got {value!r}")
    return value


class Optimizer:
    """Base class: the protocol above. Subclasses define ``_hyper`` (names) and ``_step(key, p, g)``.

    ``_step`` returns the array to *add* to the parameter (``p + delta``), computed from the gradient and
    the optimizer's state; the base class applies it in place where possible.
    """

    #: Names of the hyperparameters besides ``lr`` (constructor arguments of the same names).
    _hyper: tuple = ()
    #: Names of the per-parameter state arrays.
    _state_names: tuple = ()

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        OPTIMIZERS[cls.__name__] = cls

    def __init__(self, lr):
        self.lr = lr
        self.state = {name: {} for name in self._state_names}
        self.t = 0  # number of updates made (Adam's bias correction needs it)

    # ---------------------------------------------------------------- hyperparameters
    @property
    def lr(self) -> float:
        """The learning rate η (a positive Python float)."""
        return self._lr

    @lr.setter
    def lr(self, value):
        value = check_lr(value)
        old = getattr(self, "_lr", None)
        self._lr = value
        if old is not None and old != value:
            self._lr_changed(old, value)

    def _lr_changed(self, old, new):
        """Hook: η changed from ``old`` to ``new`` (SGD rescales its velocities; see :class:`SGD`)."""

    def hyperparameters(self) -> dict:
        """``{"lr": η, ...}``: every constructor argument, as plain Python values."""
        return {"lr": self.lr, **{k: getattr(self, k) for k in self._hyper}}

    def __repr__(self):
        from .words import number  # noqa: PLC0415 -- floats as written (0.045, not 0.045000000000000005)

        args = ", ".join(f"{k}={number(v) if isinstance(v, float) else repr(v)}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"

    # ---------------------------------------------------------------- the update
    def update(self, params, grads, consume=False):
        """Apply one step to every ``params[k]`` that has a gradient ``grads[k]``.

        ``params`` is modified: its arrays in place where they are writeable, else by new entries.
        ``grads`` are not modified unless ``consume`` (then their values are undefined afterwards).
        """
        self.t += 1
        step = self._step_consuming if consume else self._step
        for k, g in grads.items():
            p = params[k]
            delta = step(k, p, g)
            try:
                p += delta  # in place (identical values, no new array)
            except (ValueError, TypeError):  # read-only NumPy arrays, immutable namespaces (JAX)
                params[k] = p + delta
            else:
                if p is not params[k]:  # a namespace whose += rebinds instead of mutating
                    params[k] = p

    def _step(self, key, p, g):  # pragma: no cover - abstract
        raise NotImplementedError

    def _step_consuming(self, key, p, g):
        """As :meth:`_step`, allowed to overwrite ``g`` (same values; subclasses save temporaries with it)."""
        return self._step(key, p, g)

    # ---------------------------------------------------------------- state
    def _initial_state(self, name, p):
        """A fresh state array ``name`` for parameter ``p``: zeros like ``p`` (AdaGrad overrides)."""
        return _zeros_like(p)

    def _buffer(self, name, key, p):
        """``state[name][key]``, created by :meth:`_initial_state` on first use.

        The arrays are the optimizer's own (created here or copied in :meth:`load_state_dict`), so
        ``_step`` may update them in place; it stores the result back, which also serves namespaces whose
        in-place operators rebind instead of mutating.
        """
        arrays = self.state[name]
        if key not in arrays:
            arrays[key] = self._initial_state(name, p)
        return arrays[key]

    def state_arrays(self, params, name):
        """``state[name]`` with an array (zeros like the parameter) for every key of ``params``.

        For fast paths that compute the update themselves on the device: they may change the arrays'
        contents, never the dict.
        """
        if name not in self.state:
            raise KeyError(f"{type(self).__name__} has no state {name!r}; it has {', '.join(self.state) or 'none'}")
        arrays = self.state[name]
        for k, p in params.items():
            if k not in arrays:
                arrays[k] = self._initial_state(name, p)
        return arrays

    def state_dict(self) -> dict:
        """Everything needed to continue: type, hyperparameters, step count and host copies of the state."""
        return {
            "type": type(self).__name__,
            "hyperparameters": self.hyperparameters(),
            "t": self.t,
            "state": {name: {k: to_numpy(v).copy() for k, v in arrays.items()} for name, arrays in self.state.items()},
        }

    def load_state_dict(self, sd, backend=None, dtype=None):
        """Restore from :meth:`state_dict`; state arrays are copied onto ``backend`` (a Backend) when given."""
        if sd.get("type", type(self).__name__) != type(self).__name__:
            raise ValueError(f"state: a {sd['type']} state cannot be loaded into {type(self).__name__}")
        # Validated (and normalised, e.g. betas back to a tuple) by the constructor, then taken over as they
        # are: no rescaling of the state about to be replaced (see SGD's velocity and η).
        given = {k: v for k, v in sd.get("hyperparameters", {}).items() if k == "lr" or k in self._hyper}
        checked = type(self)(**{**self.hyperparameters(), **given})
        self._lr = checked.lr
        for k in self._hyper:
            setattr(self, k, getattr(checked, k))
        self.t = int(sd.get("t", 0))
        state = sd.get("state", {})
        # Copies either way: the optimizer updates its state in place, which must never reach ``sd``.
        self.state = {
            name: {
                k: (backend.asarray(v, dtype=dtype, copy=True) if backend is not None else _copy(v))
                for k, v in state.get(name, {}).items()
            }
            for name in self._state_names
        }


def from_state_dict(sd, backend=None, dtype=None) -> Optimizer:
    """The optimizer a :meth:`Optimizer.state_dict` describes, with its state on ``backend``."""
    cls = OPTIMIZERS.get(sd.get("type"))
    if cls is None:
        raise ValueError(f"unknown optimizer type {sd.get('type')!r}; known: {', '.join(sorted(OPTIMIZERS))}")
    opt = cls(**sd.get("hyperparameters", {}))
    opt.load_state_dict(sd, backend=backend, dtype=dtype)
    return opt


def _copy(v):
    import array_api_compat  # noqa: PLC0415

    return array_api_compat.array_namespace(v).asarray(v, copy=True)


def _zeros_like(p):
    import array_api_compat  # noqa: PLC0415

    xp = array_api_compat.array_namespace(p)
    return xp.zeros(p.shape, dtype=p.dtype, device=array_api_compat.device(p))




def _xp(p):
    import array_api_compat  # noqa: PLC0415

    return array_api_compat.array_namespace(p)


def _check_bool(value, name):
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


def _check_betas(betas):
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise ValueError(f"betas: expected a pair (β1, β2) such as (0.9, 0.999), got {betas!r}")
    return (_check_fraction(betas[0], "betas[0]"), _check_fraction(betas[1], "betas[1]"))


class SGD(Optimizer):
    """Stochastic gradient descent — the seed's update — with momentum, Nesterov momentum and weight decay.

    PyTorch's ``torch.optim.SGD`` (dampening 0) with g = ΔW (+ λW with weight decay λ):

    * ``momentum`` μ = 0 (default; the seed, the book's **SGD**): W ← W − η g.
    * μ > 0 (the book's **Momentum**, heavy ball): b ← μ b + g (b = g at the first step), W ← W − η b.
    * ``nesterov=True`` (the book's **Nesterov**, in PyTorch's form): b as above, W ← W − η (g + μ b).
    * ``weight_decay`` λ > 0: g = ΔW + λW (L2 regularisation added to the gradient, as PyTorch's SGD).

    The state is kept as the book's velocity v = −η b (``state["velocity"]``): v ← μ v − η g, W ← W + v;
    for a constant η this is exactly the seed's and the book's momentum step (bit for bit the values this
    class gave before Nesterov and weight decay existed). When η changes (a schedule sets ``lr`` every
    epoch), the velocities are rescaled in place by η_new / η_old, so that v = −η b still holds and the
    update stays PyTorch's for any sequence of learning rates (PyTorch stores b, without η). Without the
    rescaling a falling η would still be applied to the old steps' momentum at the old rate. The CuPy graph
    step uses the same velocity (:meth:`Optimizer.state_arrays`) and sees the rescaled values. Effect on the
    command's default run (784-512-10, η 0.05 ×0.9 per epoch, μ 0.9, 20 epochs, float32, NumPy): final
    Fashion-MNIST test accuracy 0.8956 with the rescaling, 0.8976 without (train loss 0.16717 vs 0.16737).

    Parameters
    ----------
    lr : float
        Learning rate η. With ``reduction="mean"`` gradients, 0.1 suits the seed network; with the
        seed's ``reduction="sum"``, use about η/N (0.001 for batches of 100).
    momentum : float
        μ in [0, 1).
    nesterov : bool
        Nesterov momentum (needs μ > 0).
    weight_decay : float
        λ ≥ 0, the L2 penalty's coefficient (½λ‖W‖² added to the loss, for biases too, as in PyTorch).

    Examples
    --------
    >>> import numpy as np
    >>> p, g = {"W": np.ones(2)}, {"W": np.full(2, 0.5)}
    >>> SGD(lr=0.1).update(p, g); p["W"]
    array([0.95, 0.95])
    """

    _hyper = ("momentum", "nesterov", "weight_decay")
    _state_names = ("velocity",)

    def __init__(self, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr)
        self.momentum = _check_fraction(momentum, "momentum")
        self.nesterov = _check_bool(nesterov, "nesterov")
        self.weight_decay = _check_nonnegative(weight_decay, "weight_decay")
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov: Nesterov momentum needs momentum > 0, got momentum=0.0")

    @property
    def velocity(self):
        """The velocities v = −η b per parameter key (``state["velocity"]``)."""
        return self.state["velocity"]

    def _lr_changed(self, old, new):
        # v = −η b must hold for the new η: v ← v · η_new/η_old (in place, so a fast path's arrays follow).
        ratio = new / old
        for k, v in self.velocity.items():
            v *= ratio
            self.velocity[k] = v

    def _step(self, key, p, g):
        lr, mu = self.lr, self.momentum
        if self.weight_decay:
            g = g + self.weight_decay * p  # a new array: the caller's gradient is not modified
        if mu == 0.0:
            return -lr * g  # W ← W − η ΔW  (adding −ηΔW rounds exactly like subtracting ηΔW)
        v = self.velocity.get(key)
        v = -lr * g if v is None else mu * v - lr * g  # v ← μv − ηg  (= −η b, b ← μb + g)
        self.velocity[key] = v
        if self.nesterov:
            return mu * v - lr * g  # −η (g + μ b)
        return v  # W ← W + v

    def _step_consuming(self, key, p, g):
        # The same operations in place (each rounds as in _step, so the values are bit-identical), on the
        # gradient the caller gave away and on our own velocity. Never keep a reference to ``g``: the caller
        # may reuse its memory (a data-parallel step's packed buffer).
        if self.weight_decay or self.nesterov:
            return self._step(key, p, g)
        lr, mu = self.lr, self.momentum
        v = self.velocity.get(key) if mu != 0.0 else None
        if v is None:  # plain SGD, or momentum's first step (v = −η ΔW, a new array of ours)
            if mu != 0.0:
                v = self.velocity[key] = -lr * g
                return v
            try:
                g *= -lr  # −η ΔW
            except (ValueError, TypeError):  # read-only arrays, immutable namespaces
                return self._step(key, p, g)
            return g
        try:
            g *= lr  # first: if g is read-only, nothing has changed yet
        except (ValueError, TypeError):
            return self._step(key, p, g)
        try:
            v *= mu
            v -= g  # v ← μv − ηΔW
        except (ValueError, TypeError):
            v = self.velocity[key] = mu * v - g
        return v


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015; the book's **Adam**), as PyTorch's ``torch.optim.Adam`` (amsgrad off).

    With g = ΔW (+ λW with ``weight_decay`` λ, L2 added to the gradient) and t the step number (1, 2, ...):

    m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²,
    W ← W − (η / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε).

    The bias corrections are Python floats (computed on the host from t), so float32 stays float32. The
    book's code folds √(1 − β2^t) into η and adds ε = 1e-7 to √v without correction; results differ only
    where √v is as small as ε.

    Parameters
    ----------
    lr : float
        η (default 1e-3).
    betas : (float, float)
        (β1, β2) in [0, 1), the decay rates of m and v (default (0.9, 0.999)).
    eps : float
        ε ≥ 0 added to the denominator (default 1e-8).
    weight_decay : float
        λ ≥ 0 (default 0): L2 penalty added to the gradient (for decoupled decay use :class:`AdamW`).
    """

    _hyper = ("betas", "eps", "weight_decay")
    _state_names = ("exp_avg", "exp_avg_sq")
    _decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr)
        self.betas = _check_betas(betas)
        self.eps = _check_nonnegative(eps, "eps")
        self.weight_decay = _check_nonnegative(weight_decay, "weight_decay")

    def _step(self, key, p, g):
        xp = _xp(p)
        (b1, b2), lr, wd = self.betas, self.lr, self.weight_decay
        decay = None
        if wd:
            if self._decoupled:
                decay = p * (-lr * wd)  # AdamW: W ← W − ηλW, before the Adam step (as PyTorch)
            else:
                g = g + wd * p
        m = self._buffer("exp_avg", key, p)
        m *= b1
        m += (1.0 - b1) * g
        self.state["exp_avg"][key] = m
        v = self._buffer("exp_avg_sq", key, p)
        v *= b2
        v += (1.0 - b2) * (g * g)
        self.state["exp_avg_sq"][key] = v
        # Bias corrections as Python floats from the step count t (a NumPy scalar would promote float32).
        bc1 = 1.0 - b1**self.t
        bc2_sqrt = math.sqrt(1.0 - b2**self.t)
        denom = xp.sqrt(v)
        denom /= bc2_sqrt
        denom += self.eps
        delta = m / denom
        delta *= -(lr / bc1)
        if decay is not None:
            delta += decay
        return delta


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay, as PyTorch's ``torch.optim.AdamW``.

    W ← W − ηλW, then the :class:`Adam` step with g = ΔW (the decay is not added to the gradient, so it is
    not rescaled by Adam's denominator). Not in the book (its weight decay is the L2 term of ch. 6.4).

    Parameters
    ----------
    lr : float
        η (default 1e-3).
    betas : (float, float)
        (β1, β2) in [0, 1) (default (0.9, 0.999)).
    eps : float
        ε ≥ 0 (default 1e-8).
    weight_decay : float
        λ ≥ 0 (default 1e-2), applied to biases too (as PyTorch with one parameter group).
    """

    _decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(lr, betas=betas, eps=eps, weight_decay=weight_decay)


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e; the book's **RMSprop** in common/optimizer.py), as ``torch.optim.RMSprop``.

    With g = ΔW (+ λW with ``weight_decay`` λ):

    s ← α s + (1 − α) g²,   d = g / (√s + ε),
    μ = 0: W ← W − η d;   μ > 0: b ← μ b + d, W ← W − η b  (b starts at 0; PyTorch's convention: b without η,
    so a changing η applies to the whole step).

    The book's RMSprop is μ = 0 with α = ``decay_rate`` = 0.99 and ε = 1e-7. (PyTorch's ``centered``
    variant is not offered.)

    Parameters
    ----------
    lr : float
        η (default 1e-2).
    alpha : float
        α in [0, 1), the decay rate of the mean square s (default 0.99).
    eps : float
        ε ≥ 0 (default 1e-8).
    momentum : float
        μ in [0, 1) (default 0).
    weight_decay : float
        λ ≥ 0 (default 0), L2 added to the gradient.
    """

    _hyper = ("alpha", "eps", "momentum", "weight_decay")
    _state_names = ("square_avg", "momentum_buffer")

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
        super().__init__(lr)
        self.alpha = _check_fraction(alpha, "alpha")
        self.eps = _check_nonnegative(eps, "eps")
        self.momentum = _check_fraction(momentum, "momentum")
        self.weight_decay = _check_nonnegative(weight_decay, "weight_decay")

    def _step(self, key, p, g):
        xp = _xp(p)
        alpha, lr, mu = self.alpha, self.lr, self.momentum
        if self.weight_decay:
            g = g + self.weight_decay * p
        s = self._buffer("square_avg", key, p)
        s *= alpha
        s += (1.0 - alpha) * (g * g)
        self.state["square_avg"][key] = s
        avg = xp.sqrt(s)
        avg += self.eps
        if mu == 0.0:
            delta = g / avg
            delta *= -lr
            return delta
        b = self._buffer("momentum_buffer", key, p)
        b *= mu
        b += g / avg
        self.state["momentum_buffer"][key] = b
        return -lr * b


class AdaGrad(Optimizer):
    """AdaGrad (Duchi et al. 2011; the book's **AdaGrad**), as PyTorch's ``torch.optim.Adagrad``.

    With g = ΔW (+ λW with ``weight_decay`` λ) and t the step number (1, 2, ...):

    h ← h + g²,   W ← W − η_t g / (√h + ε),   η_t = η / (1 + (t − 1) · lr_decay).

    The book's AdaGrad is this with ε = 1e-7 (and no decay); h starts at ``initial_accumulator_value``.

    Parameters
    ----------
    lr : float
        η (default 1e-2).
    eps : float
        ε ≥ 0 (default 1e-10).
    weight_decay : float
        λ ≥ 0 (default 0), L2 added to the gradient.
    lr_decay : float
        ≥ 0 (default 0): PyTorch's per-step decay of η.
    initial_accumulator_value : float
        ≥ 0 (default 0): the starting value of h.
    """

    _hyper = ("eps", "weight_decay", "lr_decay", "initial_accumulator_value")
    _state_names = ("sum",)

    def __init__(self, lr=1e-2, eps=1e-10, weight_decay=0.0, lr_decay=0.0, initial_accumulator_value=0.0):
        super().__init__(lr)
        self.eps = _check_nonnegative(eps, "eps")
        self.weight_decay = _check_nonnegative(weight_decay, "weight_decay")
        self.lr_decay = _check_nonnegative(lr_decay, "lr_decay")
        self.initial_accumulator_value = _check_nonnegative(initial_accumulator_value, "initial_accumulator_value")

    def _initial_state(self, name, p):
        h = _zeros_like(p)
        if self.initial_accumulator_value:
            h += self.initial_accumulator_value
        return h

    def _step(self, key, p, g):
        xp = _xp(p)
        if self.weight_decay:
            g = g + self.weight_decay * p
        clr = self.lr / (1.0 + (self.t - 1) * self.lr_decay)
        h = self._buffer("sum", key, p)
        h += g * g
        self.state["sum"][key] = h
        std = xp.sqrt(h)
        std += self.eps
        delta = g / std
        delta *= -clr
        return delta


#: PyTorch's spelling of :class:`AdaGrad`.
Adagrad = AdaGrad


def by_name() -> dict:
    """:data:`OPTIMIZERS` by lower-case name (``"sgd"``, ``"adamw"``): the command's ``--optimizer`` choices and
    the scikit-learn estimator's ``solver`` values."""
    return {name.lower(): cls for name, cls in OPTIMIZERS.items()}
