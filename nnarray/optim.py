"""Optimizers: the update rule that turns gradients ΔW, ΔB into new parameters.

The seed's update is plain SGD, B ← B − η ΔB, W ← W − η ΔW (:class:`SGD` with ``momentum=0``). The book's
optimizers ("Deep Learning from Scratch" ch. 6 and its common/optimizer.py) are here with PyTorch's definitions
and argument names, so that runs can be compared one to one with ``torch.optim`` (tests/test_optim.py does,
to 1e-12 in float64): :class:`SGD` (SGD, Momentum, Nesterov; weight decay), :class:`Adam`, :class:`AdamW`,
:class:`RMSprop`, :class:`AdaGrad`.

The optimizer protocol
----------------------
Every optimizer is an :class:`Optimizer`. Its update rule is written once, as pure expressions whose results
are stored, so it holds on every Array API library — mutable (NumPy, CuPy, torch) or not (JAX):

* ``rule(p, g, state, scalars) -> (new_p, new_state)`` — one parameter's update: ``p`` the parameter, ``g``
  its gradient, ``state`` ``{state name: array or None}`` (None: the state's initial value, zeros or AdaGrad's
  initial accumulator), ``scalars`` what :meth:`~Optimizer.scalars` gave. Nothing is modified; the result
  is new arrays. Written with the namespace's operators and Python floats only, so it also runs traced
  (``jax.jit``).
* ``scalars()`` — ``{"lr": η, ...}``: the Python floats of the current step, computed on the host from the
  step count ``t`` and the hyperparameters (η, Adam's bias corrections, AdaGrad's decayed η).
* ``update(params, grads)`` — one step: ``t`` += 1; the gradient hooks run in order (``grads = hook(params,
  grads)`` for each of ``hooks``, see :meth:`~Optimizer.add_hook`); then every parameter with a gradient is
  updated and every result stored: ``params[k] = new_p``, ``state[name][k] = ...``. Where the optimizer has
  a fused form for the arrays' backend (:meth:`~Optimizer.fused`) and the parameters are writeable
  (``array_api_compat.is_writeable_array``), that form applies the same rule in place instead.
* ``fused(backend)`` — a :class:`FusedForm` or None: the same rule as one in-place pass per parameter on that
  backend, or the description a fast path's own kernels implement (heavy-ball SGD, which the CuPy graph step
  and torch's CPU step fold into their products: :func:`heavy_ball_form`).
* ``state`` — ``{state name: {parameter key: array}}`` on the parameters' device (SGD's ``"velocity"``,
  Adam's ``"exp_avg"`` and ``"exp_avg_sq"``, ...); entries appear at a parameter's first update.
* ``hooks`` — the ordered gradient hooks, callables ``hook(params, grads) -> grads`` returning new gradients
  (never changing the arrays they are given): the data-parallel all-reduce
  (:class:`nnarray.distributed.GradientAllReduce`), scikit-learn's L2 penalty
  (:class:`nnarray.sklearn.L2Penalty`), :class:`ClipGradNorm`.
* ``snapshot()`` / ``restore(snap)`` — device copies of the state, ``t`` and η, for :func:`nnarray.fit`'s
  rollback after a diverged epoch (no round trip through the host).
* ``state_dict()`` / ``load_state_dict(sd, backend, dtype)`` — host copies for checkpoints;
  :func:`from_state_dict` rebuilds any optimizer.

Hyperparameters are Python floats, which the standard treats as "weak" scalars: float32 parameters stay
float32 (a NumPy scalar would promote them to float64 under NEP 50).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any, TypeAlias

import array_api_compat

from .backend import Array, Backend, get_backend, to_numpy
from .checks import FRACTION, PARAMETERS, POSITIVE, check_lr, validate

#: ``{parameter key: array}``: a network's parameters (``"W1"``, ``"b1"``, ...) or their gradients.
Params: TypeAlias = dict[str, Array]
#: A gradient hook ``hook(params, grads) -> grads`` (see :meth:`Optimizer.add_hook`).
Hook: TypeAlias = Callable[[Params, Params], Params]

__all__ = ["register_fused_forms", "Optimizer", "FusedForm", "HeavyBallSGD", "heavy_ball_form", "SGD", "Adam", "AdamW",
           "RMSprop", "AdaGrad", "Adagrad", "ClipGradNorm", "from_state_dict", "OPTIMIZERS"]

#: Optimizer classes by name, for checkpoints (:func:`from_state_dict`). Subclasses register themselves.
OPTIMIZERS: dict = {}


class FusedForm:
    """An optimizer's rule in a form tied to one backend: what :meth:`Optimizer.fused` returns.

    Two uses:

    * **in place, one pass per parameter** (a Numba loop on NumPy, a CuPy ``ElementwiseKernel``, ...): a
      subclass defines ``apply(p, g, state, scalars) -> None``, which must leave ``p`` and the arrays of
      ``state`` (``{state name: array}``, every one present, created by :meth:`Optimizer.init_state`) equal
      to what :meth:`Optimizer.rule` returns for the same arguments, and must not change ``g``.
      :meth:`Optimizer.update` uses it when the parameters and the state arrays are writeable. ``apply``
      stays None in a form that only describes the rule.
    * **a description** for a fast path whose own kernels compute the update (the CuPy graph step):
      ``kind`` names the algorithm (with its state layout), subclasses add the hyperparameters it needs,
      and :meth:`buffers` hands out the optimizer's state arrays, whose *contents* those kernels may then
      change on the device.

    A fast path asks ``opt.fused(backend)`` and checks ``kind``; it never tests the optimizer's type.
    """

    #: The algorithm this form computes, e.g. ``"sgd-heavy-ball"``; "" when it only applies the rule.
    kind = ""
    #: ``apply(p, g, state, scalars) -> None`` in a subclass that updates in place, else None.
    apply: Callable[..., None] | None = None
    #: How ``apply`` runs the update, in a few words for people (the training command's header).
    description = "an in-place form of the rule"

    def __init__(self, opt: Optimizer, backend: Backend) -> None:
        self.opt, self.backend = opt, backend

    def scalars(self) -> dict[str, float]:
        """The optimizer's :meth:`Optimizer.scalars` for its current step count."""
        return self.opt.scalars()

    def state(self) -> dict[str, Params]:
        """``{state name: {key: array}}``: the optimizer's state arrays this form uses, as they are (none created)."""
        return {name: self.opt.state[name] for name in self.opt.state_names()}

    def buffers(self, params: Params) -> dict[str, Params]:
        """``{state name: {key: array}}``: the optimizer's state arrays for every key of ``params``, created
        (:meth:`Optimizer.init_state`, on the parameters' device) where missing; the dicts are the optimizer's."""
        opt = self.opt
        states = {name: opt.state[name] for name in opt.state_names()}
        if not all(params.keys() <= s.keys() for s in states.values()):  # a step's check: nothing missing, as a rule
            for k, p in params.items():
                opt._created_state(k, p)
        return states

    def update(self, params: Params, grads: Params, scalars: dict[str, float]) -> None:
        """One step of every parameter ``params[k]`` with a gradient ``grads[k]`` (:meth:`Optimizer.update`
        calls it after the hooks): :meth:`apply` where the parameter and its state arrays are writeable (a
        capability of the arrays: NumPy's read-only flag, JAX's immutable arrays), else the functional rule,
        its results stored. A form may override it with a leaner loop of the same effect."""
        opt = self.opt
        writeable = array_api_compat.is_writeable_array
        states = [opt.state[name] for name in opt.state_names()]
        for k, g in grads.items():
            p = params[k]
            if writeable(p) and all(writeable(s[k]) for s in states if k in s):
                self.apply(p, g, opt._created_state(k, p), scalars)  # type: ignore[misc]
            else:
                opt._store_rule(params, k, g, scalars)

    def store(self, name: str, key: str, array: Array) -> None:
        """Make ``array`` (holding the current values) the optimizer's state ``name`` of ``key``: for a fast path
        whose kernels update buffers of their own."""
        self.opt.state[name][key] = array


class Optimizer:
    """Base class: the protocol above. Subclasses define ``_hyper``, ``_state_names``, :meth:`scalars` and
    :meth:`rule`; they may override :meth:`state_names` (the state a configuration uses), :meth:`_initial`
    and :meth:`fused`."""

    #: Names of the hyperparameters besides ``lr`` (constructor arguments of the same names).
    _hyper: tuple = ()
    #: Names of every per-parameter state the class can keep.
    _state_names: tuple = ()

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        OPTIMIZERS[cls.__name__] = cls

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.state: dict[str, Params] = {name: {} for name in self._state_names}
        self.t = 0  # number of updates made (Adam's bias correction needs it)
        self.hooks: list[Hook] = []

    # ---------------------------------------------------------------- hyperparameters
    @property
    def lr(self) -> float:
        """The learning rate η (a positive Python float)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        value = check_lr(value)
        old = getattr(self, "_lr", None)
        self._lr = value
        if old is not None and old != value:
            self._lr_changed(old, value)

    def _lr_changed(self, old, new):
        """Hook: η changed from ``old`` to ``new`` (SGD rescales its velocities; see :class:`SGD`)."""

    def _set_checked(self, table: str, **settings: Any) -> None:
        """Each setting checked against ``checks.PARAMETERS[table]`` (errors name the argument), then set."""
        for name, value in validate(settings, PARAMETERS[table]).items():
            setattr(self, name, value)

    def hyperparameters(self) -> dict[str, Any]:
        """``{"lr": η, ...}``: every constructor argument, as plain Python values."""
        return {"lr": self.lr, **{k: getattr(self, k) for k in self._hyper}}

    def __repr__(self):
        from .words import number  # noqa: PLC0415 -- floats as written (0.045, not 0.045000000000000005)

        args = ", ".join(f"{k}={number(v) if isinstance(v, float) else repr(v)}"
                         for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"

    # ---------------------------------------------------------------- the rule
    def scalars(self) -> dict[str, float]:
        """The current step's Python floats for :meth:`rule` (η at least), from ``t`` and the hyperparameters."""
        return {"lr": self.lr}

    def rule(self, p: Array, g: Array, state: dict[str, Array | None],
             scalars: dict[str, float]) -> tuple[Array, dict[str, Array]]:  # pragma: no cover - abstract
        """``(new_p, new_state)`` for parameter ``p`` with gradient ``g`` (pure: nothing is modified)."""
        raise NotImplementedError

    def state_names(self) -> tuple[str, ...]:
        """The states this configuration keeps per parameter (e.g. SGD without momentum: none)."""
        return self._state_names

    def _initial(self, name, p):
        """The initial value of state ``name`` for parameter ``p``: zeros like ``p`` (AdaGrad overrides)."""
        return _zeros_like(p)

    def init_state(self, p: Array) -> dict[str, Array]:
        """``{state name: initial array}`` for parameter ``p``, on its device: the arrays :meth:`rule` treats a
        None state as, and what a fused form or a traced (jit) step starts from."""
        return {name: self._initial(name, p) for name in self.state_names()}

    def fused(self, backend: Backend) -> FusedForm | None:
        """A :class:`FusedForm` of this optimizer's rule for ``backend`` (a :class:`nnarray.backend.Backend`),
        or None when it has none there (the functional :meth:`rule` then serves). A form belongs to the rule it
        was written for: a subclass that redefines :meth:`rule` or :meth:`scalars` gets None from its parent's
        ``fused`` (``_own_rule``) unless it defines its own."""
        return None

    # ---------------------------------------------------------------- hooks
    def add_hook(self, hook: Hook, first: bool = False) -> Hook:
        """Run ``hook(params, grads) -> grads`` before every update, after the hooks already added (``first``:
        before them, as the data-parallel all-reduce must, so that every later hook sees the global gradient)."""
        if not callable(hook):
            raise TypeError(f"hook: expected a callable hook(params, grads) -> grads, got {type(hook).__name__}")
        if first:
            self.hooks.insert(0, hook)
        else:
            self.hooks.append(hook)
        return hook

    def remove_hook(self, hook: Hook) -> None:
        """Stop running ``hook`` (ValueError when it was not added)."""
        for i, h in enumerate(self.hooks):
            if h is hook:
                del self.hooks[i]
                return
        raise ValueError(f"hook: {hook!r} is not one of this optimizer's hooks")

    # ---------------------------------------------------------------- the update
    def update(self, params: Params, grads: Params) -> None:
        """One step for every ``params[k]`` that has a gradient ``grads[k]``; results are stored in ``params``
        and ``state`` (new arrays, or the same arrays changed in place by a fused form). ``grads`` is not
        modified."""
        self.t += 1
        for hook in self.hooks:
            grads = hook(params, grads)
        if not grads:
            return
        scalars = self.scalars()
        form = self._in_place_form(params[next(iter(grads))])
        if form is not None:
            form.update(params, grads, scalars)
            return
        for k, g in grads.items():
            self._store_rule(params, k, g, scalars)

    def _store_rule(self, params: Params, k: str, g: Array, scalars: dict[str, float]) -> None:
        """The functional rule for parameter ``k``: its results stored in ``params`` and ``state``."""
        state = self.state
        new_p, new_state = self.rule(params[k], g, {name: state[name].get(k) for name in self.state_names()}, scalars)
        params[k] = new_p
        for name, v in new_state.items():
            state[name][k] = v

    def _created_state(self, k: str, p: Array) -> dict:
        """``{state name: array}`` of parameter ``k``, each created (:meth:`init_state`) and stored where missing."""
        names = self.state_names()
        missing = [name for name in names if k not in self.state[name]]
        if missing:
            initial = self.init_state(p)
            for name in missing:
                self.state[name][k] = initial[name]
        return {name: self.state[name][k] for name in names}

    def _in_place_form(self, p: Array) -> FusedForm | None:
        """The fused form that updates in place on the backend of ``p`` (a parameter), when there is one; it
        checks each parameter's arrays itself (:meth:`FusedForm.update`).

        Asked once for the parameters an update meets and kept while the same parameter array comes back: a
        form updates in place, so a training run asks once (every microsecond counts in the step at the seed's
        sizes). ``$NNARRAY_FUSED`` and the backend are read then."""
        memo = self.__dict__.get("_form_memo")
        if memo is not None and memo[0] is p:
            return memo[1]
        form = None
        if type(self).fused is not Optimizer.fused and fused_updates_enabled():
            form = self.fused(_backend_of(p))
            if form is not None and form.apply is None:
                form = None
        self._form_memo = (p, form)
        return form

    # ---------------------------------------------------------------- state
    def snapshot(self) -> dict[str, Any]:
        """Device copies of the state, with ``t`` and η: what :meth:`restore` goes back to."""
        return {
            "t": self.t,
            "lr": self.lr,
            "state": {name: {k: _copy(v) for k, v in arrays.items()} for name, arrays in self.state.items()},
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Go back to :meth:`snapshot`'s ``snap`` (copied again, so ``snap`` can serve once more). η is set
        without :meth:`_lr_changed`: the state restored belongs to the η restored."""
        self._lr, self.t = snap["lr"], snap["t"]
        self.state = {name: {k: _copy(v) for k, v in arrays.items()} for name, arrays in snap["state"].items()}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: type, hyperparameters, step count and host copies of the state
        (C-contiguous: ``ndarray.copy``'s order, whatever layout a fast path keeps the state in)."""
        return {
            "type": type(self).__name__,
            "hyperparameters": self.hyperparameters(),
            "t": self.t,
            "state": {name: {k: to_numpy(v).copy() for k, v in arrays.items()} for name, arrays in self.state.items()},
        }

    def load_state_dict(self, sd: dict[str, Any], backend: Backend | None = None, dtype: Any = None) -> None:
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
        # Copies either way: a fused form updates the state in place, which must never reach ``sd``.
        self.state = {
            name: {
                k: (backend.asarray(v, dtype=dtype, copy=True) if backend is not None else _copy(v))
                for k, v in state.get(name, {}).items()
            }
            for name in self._state_names
        }


def from_state_dict(sd: dict[str, Any], backend: Backend | None = None, dtype: Any = None) -> Optimizer:
    """The optimizer a :meth:`Optimizer.state_dict` describes, with its state on ``backend``."""
    cls = OPTIMIZERS.get(sd.get("type"))
    if cls is None:
        raise ValueError(f"unknown optimizer type {sd.get('type')!r}; known: {', '.join(sorted(OPTIMIZERS))}")
    opt = cls(**sd.get("hyperparameters", {}))
    opt.load_state_dict(sd, backend=backend, dtype=dtype)
    return opt


def _copy(v):
    return array_api_compat.array_namespace(v).asarray(v, copy=True)


def _zeros_like(p):
    # zeros_like keeps p's memory layout where the library has one (a Fortran-ordered weight gets a Fortran-ordered
    # state, which a fused form can then walk with it in one flat loop)
    return array_api_compat.array_namespace(p).zeros_like(p)


def _xp(p):
    return array_api_compat.array_namespace(p)


_BACKENDS: dict = {}  # (array type, device name) -> Backend: update() asks once per step


def _backend_of(x: Array) -> Backend:
    """The Backend ``x`` lives on: :func:`nnarray.get_backend` of ``x``, kept per array type and device."""
    device = array_api_compat.device(x)
    key = (type(x), str(device))  # str: the standard does not require devices to be hashable
    be = _BACKENDS.get(key)
    if be is None:
        be = _BACKENDS[key] = get_backend(x)
    return be


def _check_betas(betas):
    if isinstance(betas, (str, bytes)) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise ValueError(f"betas: expected a pair (β1, β2) such as (0.9, 0.999), got {betas!r}")
    return (FRACTION(betas[0], "betas[0]"), FRACTION(betas[1], "betas[1]"))


def _own_rule(opt: Optimizer, cls: type[Optimizer]) -> bool:
    """True when ``opt`` computes ``cls``'s rule (a subclass that redefines it has no fused form of ``cls``)."""
    kind = type(opt)
    return kind.rule is cls.rule and kind.scalars is cls.scalars and kind.state_names is cls.state_names


def fused_updates_enabled() -> bool:
    """False when ``$NNARRAY_FUSED`` is ``0``/``false``/``no``/``off``: every update then runs the functional
    :meth:`Optimizer.rule` (the reference), e.g. to compare the two in ``scripts/bench.py``."""
    return os.environ.get("NNARRAY_FUSED", "1").strip().lower() not in ("0", "false", "no", "off")


#: Makers of fused forms by backend name, ``make(opt, family, backend) -> FusedForm or None``: registered by
#: :mod:`nnarray.fused` (imported with the package), so that this module does not import it.
_FUSED_MAKERS: dict = {}


def register_fused_forms(backend_name, make):
    """Register ``make(opt, family, backend)``, the maker of the fused forms on ``backend_name``."""
    _FUSED_MAKERS[backend_name] = make


def _fused_for(opt, cls, family, backend):
    """``opt``'s fused form of ``cls``'s rule on ``backend`` (NumPy, torch on the CPU, CuPy; :mod:`nnarray.fused`), or
    None: made once per backend and configuration and kept (a Numba form keeps its step's constants)."""
    make = _FUSED_MAKERS.get(backend.name)
    if make is None or not _own_rule(opt, cls):
        return None
    device = str(getattr(backend, "device", None))
    key = (backend.name, device, family, bool(getattr(opt, "nesterov", False)), bool(opt.weight_decay))
    forms = opt.__dict__.setdefault("_fused_forms", {})
    if key not in forms:
        forms[key] = make(opt, family, backend)
    return forms[key]


class HeavyBallSGD(FusedForm):
    """SGD with or without heavy-ball momentum, as a fast path's own kernels compute it (:meth:`SGD.fused`).

    Per parameter W with gradient ΔW the kernels do: μ = 0: W ← W − η ΔW; μ > 0: v ← μ v − η ΔW, W ← W + v,
    where v = −η b is the optimizer's state ``"velocity"`` (:meth:`~FusedForm.buffers`), so the optimizer
    continues exactly where the kernels leave it. η and μ are :attr:`lr` and :attr:`momentum` (read them
    whenever an epoch starts: schedules change η).
    """

    kind = "sgd-heavy-ball"
    opt: SGD

    @property
    def lr(self) -> float:
        """η now."""
        return self.opt.lr

    @property
    def momentum(self) -> float:
        """μ (0: plain SGD, no velocity)."""
        return self.opt.momentum


def heavy_ball_form(opt: Any, backend: Backend) -> tuple[HeavyBallSGD | None, str | None]:
    """``(form, None)`` with ``opt``'s :class:`HeavyBallSGD` form on ``backend``, or ``(None, why not)``: for a
    fast path whose own kernels apply the update (SGD with or without heavy-ball momentum, its velocity
    v = −η b), which have no place for the optimizer's gradient hooks. ``opt`` may be any object with
    ``update(params, grads)``."""
    fused = getattr(opt, "fused", None)
    form = fused(backend) if callable(fused) else None
    if form is None or form.kind != "sgd-heavy-ball":
        return None, (f"optimizer {opt!r} has no heavy-ball SGD form on {backend.name} (the kernels apply SGD with "
                      "or without momentum only: no Nesterov, no weight_decay, no other optimizer)")
    hooks = getattr(opt, "hooks", ())
    if hooks:
        return None, (f"optimizer with gradient hooks ({', '.join(map(repr, hooks))}): the kernels apply the "
                      "update without them")
    return form, None


class SGD(Optimizer):
    """Stochastic gradient descent — the seed's update — with momentum, Nesterov momentum and weight decay.

    PyTorch's ``torch.optim.SGD`` (dampening 0) with g = ΔW (+ λW with weight decay λ):

    * ``momentum`` μ = 0 (default; the seed, the book's **SGD**): W ← W − η g.
    * μ > 0 (the book's **Momentum**, heavy ball): b ← μ b + g (b = g at the first step), W ← W − η b.
    * ``nesterov=True`` (the book's **Nesterov**, in PyTorch's form): b as above, W ← W − η (g + μ b).
    * ``weight_decay`` λ > 0: g = ΔW + λW (L2 regularisation added to the gradient, as PyTorch's SGD).

    The state is kept as the book's velocity v = −η b (``state["velocity"]``): v ← μ v − η g, W ← W + v;
    for a constant η this is exactly the seed's and the book's momentum step. When η changes (a schedule
    sets ``lr`` every epoch), the velocities are rescaled by η_new / η_old (new arrays, stored), so that
    v = −η b still holds and the update stays PyTorch's for any sequence of learning rates (PyTorch stores
    b, without η). Without the rescaling a falling η would still be applied to the old steps' momentum at
    the old rate. The CuPy graph step's kernels keep the same velocity (:class:`HeavyBallSGD`).

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
    >>> opt = SGD(lr=0.1, momentum=0.9)
    >>> new_p, new_state = opt.rule(np.ones(2), np.full(2, 0.5), {"velocity": None}, opt.scalars())
    >>> new_p, new_state["velocity"]
    (array([0.95, 0.95]), array([-0.05, -0.05]))
    """

    _hyper = ("momentum", "nesterov", "weight_decay")
    _state_names = ("velocity",)
    momentum: float
    nesterov: bool
    weight_decay: float

    def __init__(self, lr: float = 0.1, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr)
        self._set_checked("SGD", momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("nesterov: Nesterov momentum needs momentum > 0, got momentum=0.0")

    @property
    def velocity(self):
        """The velocities v = −η b per parameter key (``state["velocity"]``)."""
        return self.state["velocity"]

    def state_names(self) -> tuple[str, ...]:
        return ("velocity",) if self.momentum else ()

    def _lr_changed(self, old, new):
        # v = −η b must hold for the new η: v ← v · η_new/η_old, stored (immutable arrays included).
        ratio = new / old
        velocity = self.state["velocity"]
        for k, v in velocity.items():
            velocity[k] = v * ratio

    def rule(self, p: Array, g: Array, state: dict[str, Array | None],
             scalars: dict[str, float]) -> tuple[Array, dict[str, Array]]:
        # Each expression starts with a fresh product and adds the stored array to it: NumPy then writes the
        # sum into that temporary (temporary elision), so W ← W − ηΔW makes one new array, not two
        # (``p - lr * g`` makes two: elision needs the temporary on the left of a subtraction).
        lr, mu = scalars["lr"], self.momentum
        if self.weight_decay:
            g = self.weight_decay * p + g
        if mu == 0.0:
            return -lr * g + p, {}  # W ← W − η ΔW
        v = state["velocity"]
        v = -lr * g if v is None else -lr * g + mu * v  # v ← μv − ηg  (= −η b, b ← μb + g)
        return (-lr * g + mu * v + p if self.nesterov else v + p), {"velocity": v}  # Nesterov: −η (g + μ b)

    def fused(self, backend: Backend) -> FusedForm | None:
        """The in-place form on NumPy and torch's CPU tensors (with the ``numba`` extra) and CuPy
        (:mod:`nnarray.fused`); on CuPy without Nesterov and weight decay also the :class:`HeavyBallSGD` the graph
        step's kernels compute. None elsewhere (the rule)."""
        return _fused_for(self, SGD, "sgd", backend)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015; the book's **Adam**), as PyTorch's ``torch.optim.Adam`` (amsgrad off).

    With g = ΔW (+ λW with ``weight_decay`` λ, L2 added to the gradient) and t the step number (1, 2, ...):

    m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²,
    W ← W − (η / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε).

    The bias corrections are Python floats (:meth:`scalars`, computed on the host from t), so float32 stays
    float32. The book's code folds √(1 − β2^t) into η and adds ε = 1e-7 to √v without correction; results
    differ only where √v is as small as ε.

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
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    _decoupled = False

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr)
        self.betas = _check_betas(betas)
        self._set_checked("Adam", eps=eps, weight_decay=weight_decay)

    def scalars(self) -> dict[str, float]:
        """η, the step size η / (1 − β1^t) and √(1 − β2^t), as Python floats (a NumPy scalar would promote float32)."""
        b1, b2 = self.betas
        return {"lr": self.lr, "step_size": self.lr / (1.0 - b1**self.t), "bc2_sqrt": math.sqrt(1.0 - b2**self.t)}

    def fused(self, backend: Backend) -> FusedForm | None:
        """The in-place form on NumPy (with the ``numba`` extra) and CuPy (:mod:`nnarray.fused`), else None."""
        return _fused_for(self, Adam, "adam", backend)

    def rule(self, p: Array, g: Array, state: dict[str, Array | None],
             scalars: dict[str, float]) -> tuple[Array, dict[str, Array]]:
        xp = _xp(p)
        (b1, b2), wd = self.betas, self.weight_decay
        if wd and not self._decoupled:
            g = g + wd * p
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m = (1.0 - b1) * g if m is None else b1 * m + (1.0 - b1) * g
        g2 = g * g
        v = (1.0 - b2) * g2 if v is None else b2 * v + (1.0 - b2) * g2
        delta = m / (xp.sqrt(v) / scalars["bc2_sqrt"] + self.eps) * -scalars["step_size"]
        if wd and self._decoupled:  # AdamW: W ← W − ηλW besides the Adam step (as PyTorch)
            delta = delta + p * (-scalars["lr"] * wd)
        return p + delta, {"exp_avg": m, "exp_avg_sq": v}


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

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
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
    alpha: float
    eps: float
    momentum: float
    weight_decay: float

    def __init__(self, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr)
        self._set_checked("RMSprop", alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay)

    def state_names(self) -> tuple[str, ...]:
        return ("square_avg", "momentum_buffer") if self.momentum else ("square_avg",)

    def fused(self, backend: Backend) -> FusedForm | None:
        """The in-place form on NumPy (with the ``numba`` extra) and CuPy (:mod:`nnarray.fused`), else None."""
        return _fused_for(self, RMSprop, "rmsprop", backend)

    def rule(self, p: Array, g: Array, state: dict[str, Array | None],
             scalars: dict[str, float]) -> tuple[Array, dict[str, Array]]:
        xp = _xp(p)
        alpha, lr, mu = self.alpha, scalars["lr"], self.momentum
        if self.weight_decay:
            g = g + self.weight_decay * p
        s, g2 = state["square_avg"], g * g
        s = (1.0 - alpha) * g2 if s is None else alpha * s + (1.0 - alpha) * g2
        d = g / (xp.sqrt(s) + self.eps)
        if mu == 0.0:
            return p + d * -lr, {"square_avg": s}
        b = state["momentum_buffer"]
        b = d if b is None else mu * b + d
        return p + -lr * b, {"square_avg": s, "momentum_buffer": b}


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
    eps: float
    weight_decay: float
    lr_decay: float
    initial_accumulator_value: float

    def __init__(self, lr: float = 1e-2, eps: float = 1e-10, weight_decay: float = 0.0, lr_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0) -> None:
        super().__init__(lr)
        self._set_checked("AdaGrad", eps=eps, weight_decay=weight_decay, lr_decay=lr_decay,
                          initial_accumulator_value=initial_accumulator_value)

    def scalars(self) -> dict[str, float]:
        """η and this step's decayed η_t, Python floats."""
        return {"lr": self.lr, "clr": self.lr / (1.0 + (self.t - 1) * self.lr_decay)}

    def _initial(self, name, p):
        h = _zeros_like(p)
        return h + self.initial_accumulator_value if self.initial_accumulator_value else h

    def fused(self, backend: Backend) -> FusedForm | None:
        """The in-place form on NumPy (with the ``numba`` extra) and CuPy (:mod:`nnarray.fused`), else None."""
        return _fused_for(self, AdaGrad, "adagrad", backend)

    def rule(self, p: Array, g: Array, state: dict[str, Array | None],
             scalars: dict[str, float]) -> tuple[Array, dict[str, Array]]:
        xp = _xp(p)
        if self.weight_decay:
            g = g + self.weight_decay * p
        h, g2 = state["sum"], g * g
        if h is None:  # h₀ = initial_accumulator_value
            h = g2 + self.initial_accumulator_value if self.initial_accumulator_value else g2
        else:
            h = h + g2
        return p + g / (xp.sqrt(h) + self.eps) * -scalars["clr"], {"sum": h}


#: PyTorch's spelling of :class:`AdaGrad`.
Adagrad = AdaGrad


# --------------------------------------------------------------------------------------------- gradient hooks
class ClipGradNorm:
    """Gradient hook: every gradient scaled by one factor so that their joint 2-norm is at most ``max_norm``.

    PyTorch's ``torch.nn.utils.clip_grad_norm_(parameters, max_norm)``: with ‖g‖ the 2-norm of all gradients
    together, each gradient is multiplied by min(max_norm / (‖g‖ + 1e-6), 1). The factor stays on the device
    (no synchronisation); :attr:`total_norm` keeps the last ‖g‖ (a 0-d array) for whoever wants to read it.
    Added after the data-parallel all-reduce, it clips the global gradient.

    >>> import numpy as np
    >>> opt = SGD(lr=1.0)
    >>> clip = opt.add_hook(ClipGradNorm(1.0))
    >>> p = {"W": np.zeros(2)}
    >>> opt.update(p, {"W": np.array([3.0, 4.0])}); p["W"].round(6), float(clip.total_norm)
    (array([-0.6, -0.8]), 5.0)
    """

    def __init__(self, max_norm: float) -> None:
        self.max_norm: float = POSITIVE(max_norm, "max_norm")
        self.total_norm: Array | None = None

    def __call__(self, params: Params, grads: Params) -> Params:
        if not grads:
            return grads
        xp = _xp(next(iter(grads.values())))
        total = None
        for g in grads.values():
            s = xp.sum(g * g)
            total = s if total is None else total + s
        self.total_norm = xp.sqrt(total)
        coef = xp.minimum(self.max_norm / (self.total_norm + 1e-6), 1.0)
        return {k: g * coef for k, g in grads.items()}

    def __repr__(self):
        return f"ClipGradNorm(max_norm={self.max_norm!r})"


def by_name() -> dict:
    """:data:`OPTIMIZERS` by lower-case name (``"sgd"``, ``"adamw"``): the command's ``--optimizer`` choices and
    the scikit-learn estimator's ``solver`` values."""
    return {name.lower(): cls for name, cls in OPTIMIZERS.items()}
