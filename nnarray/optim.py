"""Optimizers: the update rule that turns gradients ΔW, ΔB into new parameters.

The seed's update is plain SGD, B ← B − η ΔB, W ← W − η ΔW (:class:`SGD` with ``momentum=0``).

The optimizer protocol
----------------------
Every optimizer is an :class:`Optimizer`:

* ``lr`` — the learning rate η, a Python float; schedules (:mod:`nnarray.schedules`) set it per epoch;
* ``hyperparameters()`` — ``{"lr": η, ...}``, everything that defines the update besides the state;
* ``update(params, grads, consume=False)`` — one step for every key of ``grads``; arrays are updated in place
  where they are writeable (NumPy, CuPy, array-api-strict, torch), else replaced by new entries of ``params``.
  ``consume=True`` says the gradients are the caller's scratch (the training step's own arrays): an optimizer
  may then overwrite them instead of allocating a temporary the size of every parameter per step;
* ``state`` — ``{state name: {parameter key: array}}`` on the parameters' device (SGD's ``"velocity"``);
  only the optimizer assigns its entries. A fast path that computes the update itself (with the documented
  formula) asks for the arrays with ``state_arrays(params, name)``, which creates missing ones as zeros,
  and may then change their *contents* on the device;
* ``state_dict()`` / ``load_state_dict(sd, backend, dtype)`` — host copies for checkpoints and for
  :func:`nnarray.fit`'s rollback after a diverged epoch; :func:`from_state_dict` rebuilds any optimizer.

Hyperparameters are Python floats, which the standard treats as "weak" scalars: float32 parameters stay
float32 (a NumPy scalar would promote them to float64 under NEP 50).
"""

from __future__ import annotations

import numbers

from .backend import to_numpy
from .validation import check_lr

__all__ = ["Optimizer", "SGD", "from_state_dict", "OPTIMIZERS"]

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
        self._lr = check_lr(value)

    def hyperparameters(self) -> dict:
        """``{"lr": η, ...}``: every constructor argument, as plain Python values."""
        return {"lr": self.lr, **{k: getattr(self, k) for k in self._hyper}}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
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
                arrays[k] = _zeros_like(p)
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
        for k, v in sd.get("hyperparameters", {}).items():
            if k == "lr" or k in self._hyper:
                setattr(self, k, v)
        self.t = int(sd.get("t", 0))
        state = sd.get("state", {})
        self.state = {
            name: {
                k: (backend.asarray(v, dtype=dtype, copy=True) if backend is not None else v)
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


def _zeros_like(p):
    import array_api_compat  # noqa: PLC0415

    xp = array_api_compat.array_namespace(p)
    return xp.zeros(p.shape, dtype=p.dtype, device=array_api_compat.device(p))


class SGD(Optimizer):
    """Stochastic gradient descent — the seed's update, with optional momentum.

    ``momentum`` μ = 0 (default, the seed): W ← W − η ΔW.
    ``momentum`` μ > 0 (heavy ball): v ← μ v − η ΔW, W ← W + v (v starts at 0, so the first step is the seed's).

    Parameters
    ----------
    lr : float
        Learning rate η. With ``reduction="mean"`` gradients, 0.1 suits the seed network; with the
        seed's ``reduction="sum"``, use about η/N (0.001 for batches of 100).
    momentum : float
        μ in [0, 1).

    Examples
    --------
    >>> import numpy as np
    >>> p, g = {"W": np.ones(2)}, {"W": np.full(2, 0.5)}
    >>> SGD(lr=0.1).update(p, g); p["W"]
    array([0.95, 0.95])
    """

    _hyper = ("momentum",)
    _state_names = ("velocity",)

    def __init__(self, lr=0.1, momentum=0.0):
        super().__init__(lr)
        self.momentum = _check_fraction(momentum, "momentum")

    @property
    def velocity(self):
        """The velocities v per parameter key (``state["velocity"]``)."""
        return self.state["velocity"]

    def _step(self, key, p, g):
        lr, mu = self.lr, self.momentum
        if mu == 0.0:
            return -lr * g  # W ← W − η ΔW  (adding −ηΔW rounds exactly like subtracting ηΔW)
        v = self.velocity.get(key)
        v = -lr * g if v is None else mu * v - lr * g  # v ← μv − ηΔW; W ← W + v
        self.velocity[key] = v
        return v

    def _step_consuming(self, key, p, g):
        # The same operations in place (each rounds as in _step, so the values are bit-identical), on the
        # gradient the caller gave away and on our own velocity. Never keep a reference to ``g``: the caller
        # may reuse its memory (a data-parallel step's packed buffer).
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
