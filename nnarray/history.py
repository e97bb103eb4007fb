"""The record of a training run: :class:`History`, one schema for Python, checkpoints and history files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["History"]


@dataclass
class History:
    """Per-epoch record of a training run (one entry per finished epoch, all plain Python numbers).

    Columns (``History.KEYS``):

    ``epoch``
        1, 2, ... (numbered on across resumed runs);
    ``train_loss``, ``train_accuracy``
        running values over the epoch's mini-batches, each batch measured with the parameters it was trained
        from (as most training loops report them); a sample counts as correct when its class has the largest
        output (an exact tie counts as correct);
    ``val_loss``, ``val_accuracy``
        mean cross-entropy and accuracy on the validation set after the epoch (None without one);
    ``lr``
        the learning rate η the epoch was trained with;
    ``seconds``, ``samples``
        wall time of the epoch (training and validation) and the number of training samples seen.
    """

    epoch: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    samples: list = field(default_factory=list)

    KEYS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds", "samples")

    def __len__(self):
        return len(self.epoch)

    def __getitem__(self, key):
        if key not in self.KEYS:
            raise KeyError(f"history has no column {key!r}; columns: {', '.join(self.KEYS)}")
        return getattr(self, key)

    def append(self, **record):
        """Add one epoch; ``record`` holds a value per column (missing ones are None)."""
        unknown = set(record) - set(self.KEYS)
        if unknown:
            raise KeyError(f"history has no column(s) {', '.join(sorted(unknown))}; columns: {', '.join(self.KEYS)}")
        for k in self.KEYS:
            getattr(self, k).append(record.get(k))

    def to_dict(self) -> dict:
        """Columns as lists (JSON-ready)."""
        return {k: list(getattr(self, k)) for k in self.KEYS}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        """Inverse of :meth:`to_dict`; columns an older file lacks are filled with None."""
        h = cls()
        n = len(d.get("epoch", []))
        for k in cls.KEYS:
            column = list(d.get(k, [None] * n))
            if len(column) != n:
                raise ValueError(f"history: column {k!r} has {len(column)} entries, 'epoch' has {n}")
            setattr(h, k, column)
        return h

    def records(self) -> list:
        """One dict per epoch."""
        return [{k: getattr(self, k)[i] for k in self.KEYS} for i in range(len(self))]

    @property
    def last(self) -> dict | None:
        """The last epoch's record (None before the first epoch)."""
        return self.records()[-1] if len(self) else None
