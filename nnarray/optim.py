"""Optimisers: :class:`SGD`, the seed's update B ← B − η ΔB, W ← W − η ΔW (with optional momentum)."""

from __future__ import annotations

from .backend import to_numpy
from .validation import check_lr

__all__ = ["SGD"]


class SGD:
    """Stochastic gradient descent.

    ``update`` computes ``params[k] − lr · grads[k]`` for every key. Writeable arrays (NumPy, CuPy,
    array-api-strict, torch) are updated in place, which saves an allocation per parameter and step;
    others (read-only arrays, JAX) get a new array in ``params[k]``. Both give identical values.

    With ``momentum`` μ > 0 (not in the seed; 0 by default) it keeps a velocity per parameter:
    v ← μ v − η ΔW, W ← W + v.

    Parameters
    ----------
    lr : float
        Learning rate η. With ``reduction="mean"`` gradients, 0.1 suits the seed network; with the
        seed's ``reduction="sum"``, use about η/N (0.001 for batches of 100).
    momentum : float
        μ in [0, 1).
    """

    def __init__(self, lr=0.1, momentum=0.0):
        self.lr = check_lr(lr)
        momentum = float(momentum)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum: expected a value in [0, 1), got {momentum!r}")
        self.momentum = momentum
        self.velocity = {}

    def __repr__(self):
        return f"SGD(lr={self.lr}, momentum={self.momentum})"

    def update(self, params, grads):
        """Apply one step to every ``params[k]`` that has a gradient ``grads[k]``.

        ``params`` is modified: its arrays in place where they are writeable, else by new entries.
        """
        lr, mu = self.lr, self.momentum  # Python floats: "weak", so float32 parameters stay float32
        for k, g in grads.items():
            if mu == 0.0:
                delta = -lr * g  # W ← W − η ΔW  (adding −ηΔW rounds exactly like subtracting ηΔW)
            else:
                v = self.velocity.get(k)
                delta = self.velocity[k] = -lr * g if v is None else mu * v - lr * g  # v ← μv − ηΔW; W ← W + v
            p = params[k]
            try:
                p += delta  # in place (identical values, no new array)
            except (ValueError, TypeError):  # read-only NumPy arrays, immutable namespaces (JAX)
                params[k] = p + delta
            else:
                if p is not params[k]:  # a namespace whose += rebinds instead of mutating
                    params[k] = p

    # --------------------------------------------------------- checkpoints
    def state_dict(self):
        """Hyperparameters and velocities as host NumPy arrays (for checkpoints)."""
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "velocity": {k: to_numpy(v).copy() for k, v in self.velocity.items()},
        }

    def load_state_dict(self, state, backend=None, dtype=None):
        """Restore from :meth:`state_dict`; velocities are moved to ``backend`` (a Backend) when given."""
        self.lr = check_lr(state["lr"])
        self.momentum = float(state["momentum"])
        vel = state.get("velocity", {})
        self.velocity = {k: (backend.asarray(v, dtype=dtype, copy=True) if backend is not None else v) for k, v in vel.items()}
