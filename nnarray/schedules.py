"""Learning-rate schedules: η for each epoch, as library objects usable from Python and the CLI.

A schedule is called with the epoch number (1 for the first epoch) and returns that epoch's η.
:func:`nnarray.fit` (``schedule=``) sets ``opt.lr`` from it before every epoch; because η is a function of
the epoch number alone, a resumed run gets exactly the rates of an uninterrupted one.

>>> s = Exponential(0.05, gamma=0.9)
>>> [round(s(e), 5) for e in (1, 2, 3)]
[0.05, 0.045, 0.0405]
"""

from __future__ import annotations

from .validation import check_lr, check_positive_int

__all__ = ["Schedule", "Constant", "Exponential", "SCHEDULES", "from_config"]

#: Schedule classes by name (for configs and checkpoints).
SCHEDULES: dict = {}


class Schedule:
    """Base class: ``schedule(epoch) -> η``; ``config()`` gives the constructor arguments."""

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
        gamma = float(gamma)
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma: expected a factor in (0, 1], got {gamma!r}")
        self.gamma = gamma

    def at(self, epoch):
        return self.lr * self.gamma ** (epoch - 1)


def from_config(config: dict) -> Schedule:
    """The schedule :meth:`Schedule.config` describes."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in SCHEDULES:
        raise ValueError(f"schedule: unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")
    return SCHEDULES[name](**config)
