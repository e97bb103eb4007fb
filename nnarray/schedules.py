"""Learning-rate schedules: η for each epoch, as library objects usable from Python and the CLI.

A schedule is called with the epoch number (1 for the first epoch) and returns that epoch's η.
:func:`nnarray.fit` (``schedule=``) sets ``opt.lr`` from it before every epoch; because η is a function of
the epoch number alone, a resumed run gets exactly the rates of an uninterrupted one.

>>> s = Exponential(0.05, gamma=0.9)
>>> [round(s(e), 5) for e in (1, 2, 3)]
[0.05, 0.045, 0.0405]
>>> s = Warmup(Cosine(0.1, epochs=3), epochs=2)
>>> [round(s(e), 4) for e in (1, 2, 3, 4, 5)]
[0.05, 0.1, 0.1, 0.075, 0.025]

Each schedule equals PyTorch's ``torch.optim.lr_scheduler`` counterpart stepped once per epoch (epoch e here
is PyTorch's ``last_epoch`` e − 1): :class:`Constant` (no scheduler), :class:`Exponential` (ExponentialLR),
:class:`Step` (StepLR), :class:`Cosine` (CosineAnnealingLR), :class:`Warmup` (SequentialLR of a LinearLR
warm-up and the inner schedule). tests/test_schedules.py compares them.
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any

from .checks import PARAMETERS, check_lr, check_option, check_positive_int, validate

__all__ = ["Schedule", "Constant", "Exponential", "Step", "Cosine", "Warmup", "SCHEDULES", "from_config", "make",
           "parameters"]

#: Schedule classes by name (for configs and checkpoints).
SCHEDULES: dict = {}


class Schedule:
    """Base class: ``schedule(epoch) -> η``; ``config()`` gives the constructor arguments.

    Use one with ``nn.fit(net, opt, X, t, epochs=E, schedule=s)``: ``opt.lr = s(epoch)`` before every epoch.
    """

    name = "?"

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        SCHEDULES[cls.name] = cls

    def __init__(self, lr):
        self.lr = check_lr(lr)

    def __call__(self, epoch: int) -> float:
        check_positive_int(epoch, "epoch")
        return self.at(int(epoch))

    def at(self, epoch: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def last_epoch(self):
        """The last epoch this schedule gives an η for (None: every epoch); :func:`nnarray.fit` refuses longer runs."""
        return None

    def config(self) -> dict:
        """``{"name": ..., constructor arguments...}`` (JSON-ready); :func:`from_config` inverts it."""
        return {"name": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """η in every epoch."""

    name = "constant"

    def at(self, epoch):
        return self.lr


class Exponential(Schedule):
    """η · γ^(epoch − 1): multiplied by γ after every epoch (PyTorch's ExponentialLR, the MNIST example's --gamma)."""

    name = "exponential"

    def __init__(self, lr, gamma=0.9):
        super().__init__(lr)
        self.gamma = validate({"gamma": gamma}, PARAMETERS["Exponential"])["gamma"]

    def at(self, epoch):
        return self.lr * self.gamma ** (epoch - 1)


class Step(Schedule):
    """η · γ^⌊(epoch − 1) / step_size⌋: multiplied by γ every ``step_size`` epochs (PyTorch's StepLR).

    >>> [Step(0.1, step_size=2, gamma=0.5)(e) for e in (1, 2, 3, 4, 5)]
    [0.1, 0.1, 0.05, 0.05, 0.025]
    """

    name = "step"

    def __init__(self, lr, step_size, gamma=0.1):
        super().__init__(lr)
        checked = validate({"step_size": step_size, "gamma": gamma}, PARAMETERS["Step"])
        self.step_size, self.gamma = checked["step_size"], checked["gamma"]

    def at(self, epoch):
        return self.lr * self.gamma ** ((epoch - 1) // self.step_size)


class Cosine(Schedule):
    """Cosine annealing from η to η_min over ``epochs`` epochs (PyTorch's CosineAnnealingLR, T_max = epochs).

    η_e = η_min + (η − η_min) · (1 + cos(π (e − 1) / epochs)) / 2 for e = 1 … epochs: η in the first epoch,
    falling along half a cosine; the last epoch's η is just above η_min (PyTorch reaches η_min at step
    T_max, one after the last epoch trained). Training past ``epochs`` epochs is refused with an error
    (PyTorch's η would rise again, and reach 0 with η_min = 0): make the schedule for the whole run.

    Parameters
    ----------
    lr : float
        η, the first epoch's learning rate.
    epochs : int
        The number of epochs of the annealing (the run's length).
    eta_min : float
        η_min ≥ 0, the floor (default 0).
    """

    name = "cosine"

    def __init__(self, lr, epochs, eta_min=0.0):
        super().__init__(lr)
        self.epochs = validate({"epochs": epochs}, PARAMETERS["Cosine"])["epochs"]
        if isinstance(eta_min, bool) or not isinstance(eta_min, numbers.Real):
            raise TypeError(f"eta_min: expected a number, got {eta_min!r}")
        eta_min = float(eta_min)
        if not 0.0 <= eta_min < self.lr:
            raise ValueError(f"eta_min: expected a value in [0, lr) = [0, {self.lr}), got {eta_min!r}")
        self.eta_min = eta_min

    @property
    def last_epoch(self):
        return self.epochs

    def at(self, epoch):
        if epoch > self.epochs:
            raise ValueError(
                f"epoch: the cosine schedule was made for epochs 1..{self.epochs}, got epoch {epoch}; "
                "make it with epochs= the run's total number of epochs"
            )
        return self.eta_min + (self.lr - self.eta_min) * (1.0 + math.cos(math.pi * (epoch - 1) / self.epochs)) / 2.0


class Warmup(Schedule):
    """Linear warm-up for ``epochs`` epochs, then the inner ``schedule`` (counted from its own epoch 1).

    η_e = η₁ · e / w for e = 1 … w (η₁ = schedule(1), w = ``epochs``), then η_e = schedule(e − w): epoch w
    and epoch w + 1 both train at η₁. This is PyTorch's SequentialLR of LinearLR(start_factor=1/w,
    total_iters=w − 1) and the inner scheduler with milestone w. For a run of E epochs with a cosine after
    the warm-up, use ``Warmup(Cosine(lr, epochs=E − w), epochs=w)``.

    Parameters
    ----------
    schedule : Schedule or dict
        The schedule after the warm-up (a config dict is turned into one with :func:`from_config`).
    epochs : int
        w, the number of warm-up epochs.
    """

    name = "warmup"

    def __init__(self, schedule, epochs):
        if isinstance(schedule, dict):
            schedule = from_config(schedule)
        if not isinstance(schedule, Schedule):
            raise TypeError(
                f"schedule: expected a Schedule (e.g. Cosine(0.1, epochs=40)), got {type(schedule).__name__}"
            )
        self.schedule = schedule
        self.epochs = validate({"epochs": epochs}, PARAMETERS["Warmup"])["epochs"]
        self.lr = schedule(1)

    @property
    def last_epoch(self):
        inner = self.schedule.last_epoch
        return None if inner is None else self.epochs + inner

    def at(self, epoch):
        if epoch <= self.epochs:
            return self.lr * epoch / self.epochs
        return self.schedule(epoch - self.epochs)

    def config(self):
        return {"name": self.name, "schedule": self.schedule.config(), "epochs": self.epochs}


def from_config(config: dict) -> Schedule:
    """The schedule :meth:`Schedule.config` describes."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in SCHEDULES:
        raise ValueError(f"schedule: unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")
    return SCHEDULES[name](**config)


def parameters(name: str) -> tuple:
    """The names of the settings of schedule ``name`` besides ``lr`` (its constructor's arguments)."""
    check_option(name, tuple(SCHEDULES), "schedule")
    return tuple(p for p in inspect.signature(SCHEDULES[name]).parameters if p not in ("self", "lr", "schedule"))


def make(name: str, lr: float, epochs: int, warmup: int = 0, **settings: Any) -> Schedule:
    """The schedule ``name`` (a key of :data:`SCHEDULES`) for a run of ``epochs`` epochs, with an optional linear
    warm-up over its first ``warmup`` epochs (:class:`Warmup`). ``settings`` holds any of the schedule's own
    arguments (``gamma``, ``step_size``, ...); None values and those it does not take are left out; a schedule
    with an ``epochs`` argument (:class:`Cosine`) spans the epochs after the warm-up.

    >>> make("cosine", 0.1, epochs=10, warmup=2)
    Warmup(schedule={'name': 'cosine', 'lr': 0.1, 'epochs': 8, 'eta_min': 0.0}, epochs=2)
    >>> make("step", 0.1, epochs=10, gamma=0.5, step_size=3)(4)
    0.05
    """
    epochs = check_positive_int(epochs, "epochs")
    if isinstance(warmup, bool) or not isinstance(warmup, numbers.Integral) or not 0 <= int(warmup) < epochs:
        raise ValueError(f"warmup: expected a number of epochs in 0..{epochs - 1} (fewer than epochs={epochs}), "
                         f"got {warmup!r}")
    names = parameters(name)
    kw = {k: v for k, v in settings.items() if k in names and v is not None}
    if "epochs" in names:
        kw["epochs"] = epochs - warmup
    s = SCHEDULES[name](lr, **kw)
    return Warmup(s, epochs=warmup) if warmup else s
