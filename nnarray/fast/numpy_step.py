"""The training step on NumPy with preallocated buffers: the generic step's arithmetic, without temporaries.

:class:`NumpyStep` performs exactly the operations of :class:`nnarray.train.GenericStep`, in the same
order and with the same rounding, but writes every intermediate into a buffer allocated once per batch
shape (``out=``), fuses the bias add and ReLU into the product's buffer, and updates the parameters as
soon as a layer's gradient is known. On NumPy the two paths give bit-identical parameters
(``tests/test_fast_paths.py``); this one saves the allocation and first touch of every temporary,
which matters for wide layers (a 100×1000 hidden layer's temporaries are 400 kB each, every step).
"""

from __future__ import annotations

import numpy as np

__all__ = ["NumpyStep"]


class _Buffers:
    """Every intermediate of one step for batches of ``n`` rows (shapes in the seed's notation)."""

    def __init__(self, n, sizes, dtype):
        L = len(sizes) - 1
        self.Xb = np.empty((n, sizes[0]), dtype)  # X: the batch's input rows
        self.Tb = np.empty((n, sizes[-1]), dtype)  # T: the batch's one-hot teachers
        self.H = [None] + [np.empty((n, sizes[l]), dtype) for l in range(1, L)]  # H after each hidden layer
        self.h = [None] + [np.empty((n, sizes[l]), dtype) for l in range(1, L)]  # h: back-propagated values
        self.mask = [None] + [np.empty((n, sizes[l]), bool) for l in range(1, L)]  # H > 0
        self.A = np.empty((n, sizes[-1]), dtype)  # A, then S = A − max A, then exp S, then a
        self.TS = np.empty((n, sizes[-1]), dtype)  # T · S
        self.m = np.empty((n, 1), dtype)  # row maximum of A
        self.z = np.empty((n, 1), dtype)  # Z = Σ exp S, then log Z
        self.S_t = np.empty((n,), dtype)  # S at the correct class
        self.hit = np.empty((n,), bool)  # S_t == 0
        self.dW = [None] + [np.empty((sizes[l - 1], sizes[l]), dtype) for l in range(1, L + 1)]
        self.db = [None] + [np.empty((sizes[l],), dtype) for l in range(1, L + 1)]


class NumpyStep:
    """Fast path of the training step for the ``numpy`` backend and :class:`nnarray.SGD`."""

    name = "numpy-buffers"

    def __init__(self, net, opt, Xd, Td, reduction):
        self.net, self.opt, self.Xd, self.Td, self.reduction = net, opt, Xd, Td, reduction
        self.dtype = np.dtype(net.dtype_name)
        self._buffers = {}  # batch size → _Buffers (the last batch of an epoch may be smaller)
        L = net.n_layers
        self._keys = [None] + [(f"W{l}", f"b{l}") for l in range(1, L + 1)]  # formatted once, not per step
        self.reset()

    @staticmethod
    def unsupported(net, opt, Xd, Td):
        """None when this fast path can run the training, else the reason it cannot."""
        from ..optim import SGD  # noqa: PLC0415

        if type(opt) is not SGD:
            return f"optimizer {type(opt).__name__} (only nnarray.SGD)"
        dtype = np.dtype(net.dtype_name)
        arrays = {**net.params, "X": Xd, "T": Td, **{f"velocity {k}": v for k, v in opt.velocity.items()}}
        for k, v in arrays.items():
            if type(v) is not np.ndarray or v.dtype != dtype or not v.flags.c_contiguous:
                return f"{k} is not a C-contiguous numpy.ndarray of {dtype}"
            if k != "X" and k != "T" and not v.flags.writeable:
                return f"{k} is read-only"
        return None

    def reset(self):
        self.loss_sum = np.zeros((), self.dtype)
        self.correct = np.zeros((), np.int64)

    def _buf(self, n):
        buf = self._buffers.get(n)
        if buf is None:
            buf = self._buffers[n] = _Buffers(n, self.net.layer_sizes, self.dtype)
        return buf

    def __call__(self, idx):
        n = idx.shape[0]
        B = self._buf(n)
        p, keys = self.net.params, self._keys
        L = len(keys) - 1
        # Indices come from a validated permutation: mode="wrap" skips take's buffered bounds check.
        # (Methods and ufunc.reduce rather than np.take/np.sum/np.max: the same C loops, without the
        # Python wrapper layer, which is a measurable share of a 784-100-10 step.)
        self.Xd.take(idx, axis=0, out=B.Xb, mode="wrap")
        self.Td.take(idx, axis=0, out=B.Tb, mode="wrap")

        # Forward: H = ReLU(H_prev @ W + b), A = H @ W_L + b_L.
        H = B.Xb
        for l in range(1, L):
            Z = B.H[l]
            kW, kb = keys[l]
            np.matmul(H, p[kW], out=Z)
            Z += p[kb]
            np.maximum(Z, 0.0, out=Z)
            H = Z
        A = B.A
        kW, kb = keys[L]
        np.matmul(H, p[kW], out=A)
        A += p[kb]

        # Softmax + cross-entropy + accuracy from S = A − max A (as GenericStep).
        np.maximum.reduce(A, axis=1, keepdims=True, out=B.m)
        np.subtract(A, B.m, out=A)  # A now holds S
        np.multiply(B.Tb, A, out=B.TS)
        np.add.reduce(B.TS, axis=1, out=B.S_t)
        np.exp(A, out=A)  # exp S
        np.add.reduce(A, axis=1, keepdims=True, out=B.z)  # Z
        np.divide(A, B.z, out=A)  # Y
        np.log(B.z, out=B.z)
        self.loss_sum += np.add.reduce(B.z, axis=None) - np.add.reduce(B.S_t)
        np.equal(B.S_t, 0.0, out=B.hit)
        self.correct += np.count_nonzero(B.hit)
        a = A
        np.subtract(a, B.Tb, out=a)  # a = Y − T
        if self.reduction == "mean":
            np.divide(a, n, out=a)

        # Backward, updating each layer as soon as its gradient is known and W is no longer needed.
        opt = self.opt
        lr, mu = opt.lr, opt.momentum
        for l in range(L, 0, -1):
            H_prev = B.H[l - 1] if l > 1 else B.Xb
            kW, kb = keys[l]
            dW, db = B.dW[l], B.db[l]
            np.matmul(H_prev.T, a, out=dW)  # ΔW_k,j = Σ_n H_j a_k
            np.add.reduce(a, axis=0, out=db)  # ΔB_k = Σ_n a_k
            if l > 1:
                h = B.h[l - 1]
                np.matmul(a, p[kW].T, out=h)  # h_j = Σ_k W_k,j a_k
                np.greater(H_prev, 0.0, out=B.mask[l - 1])
                np.multiply(h, B.mask[l - 1], out=h)  # ReLU backward
                a = h
            # nnarray.SGD.update, in place; the gradient buffers are consumed.
            for key, g in ((kW, dW), (kb, db)):
                if mu == 0.0:
                    np.multiply(g, -lr, out=g)  # −η ΔW
                    p[key] += g
                    continue
                v = opt.velocity.get(key)
                if v is None:
                    v = opt.velocity[key] = g * -lr
                else:
                    np.multiply(v, mu, out=v)
                    np.multiply(g, lr, out=g)
                    np.subtract(v, g, out=v)  # v ← μ v − η ΔW
                p[key] += v
