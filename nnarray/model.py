"""The seed network generalised to any number of hidden ReLU layers: :class:`MLP`.

Notation (the seed's; forward values upper case, backward values lower case):

====================  ===============  =========================================================
seed                   nnarray          shape / meaning
====================  ===============  =========================================================
X_i                    ``X``            (N, n_in) input pixels, one image per row
W⁽ˡ⁾_j,i               ``W{l}[i, j]``   (fan_in, fan_out) weight from unit i to unit j of layer l
B⁽ˡ⁾_j                 ``b{l}[j]``      (fan_out,) bias
H_j                    ``H``            (N, n_hidden) hidden values after ReLU
A_k                    ``A``            (N, C) output-layer values (affine, no activation)
Y_k                    ``Y``            (N, C) softmax probabilities
T_k                    ``T``            (N, C) one-hot teacher
a_k                    ``a``            (N, C) a = Y − T
h_j                    ``h``            (N, n_hidden) back-propagated value, masked by ReLU
ΔW, ΔB                 ``grads``        same keys and shapes as ``params``
—                      ``masks``        (N, n_hidden) per hidden layer: dropout's M/(1−p) (training only)
====================  ===============  =========================================================

Dropout (inverted; Srivastava et al. 2014, the book's ch. 6.4.3 ``Dropout`` layer): in training, each hidden
unit of each row is kept with probability 1 − p (M = 1) or dropped (M = 0), and the kept ones are scaled
by 1/(1 − p), so H's expected value is unchanged and nothing needs scaling at prediction time:
H = ReLU(B + Σ H_prev W) · M/(1 − p), and back-propagation masks h by the same M/(1 − p) besides ReLU's
mask. The masks are drawn on the host (:meth:`MLP.dropout_masks`) by the training step, so every backend
trains with the same masks; ``predict``, ``loss``, ``accuracy`` and :func:`nnarray.evaluate` never drop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np  # host-side only: He initialisation is drawn from numpy.random.default_rng

from . import functions as F
from .backend import Array, Backend, Namespace, get_backend, to_numpy
from .checks import check_dropout, check_reduction, check_seed, check_X, check_Xt

__all__ = ["MLP"]

_FLOAT_DTYPES = ("float32", "float64")


class MLP:
    """Fully-connected classifier: affine + ReLU hidden layers, an affine output layer, softmax.

    ``MLP([784, 100, 10])`` is the seed network: X (784) → H (100, ReLU) → A (10) → Y = softmax(A).

    Parameters
    ----------
    layer_sizes : sequence of int
        ``[n_in, n_hidden_1, ..., n_out]``; at least two entries (no hidden layer = softmax regression).
    backend : str or Backend, optional
        Where the parameters live and the arithmetic runs (see :func:`nnarray.get_backend`).
    dtype : {"float32", "float64"}
        Floating type of parameters and computation (float32 default). Nothing is silently upcast.
    seed : int or numpy.random.Generator or None
        He initialisation W ~ N(0, 2/fan_in), biases 0, drawn on the host from
        ``numpy.random.default_rng(seed)``, so every backend starts from the same weights.
    dropout : float or sequence of float
        p in [0, 1), the probability of dropping a hidden unit in training (inverted dropout, see the module
        docstring): one rate for every hidden layer or one per hidden layer. 0 (default) is off. Stored
        in saved models and checkpoints.

    Attributes
    ----------
    params : dict
        ``"W1"`` (n_in, n_1), ``"b1"`` (n_1,), ``"W2"``, ``"b2"``, ... as arrays of the backend.

    Examples
    --------
    >>> import nnarray as nn
    >>> net = nn.MLP([4, 8, 3], backend="numpy", seed=0)
    >>> sorted(net.params), net.params["W1"].shape
    (['W1', 'W2', 'b1', 'b2'], (4, 8))
    """

    def __init__(self, layer_sizes: Sequence[int], backend: str | Backend | Namespace | None = None,
                 dtype: str | Any = "float32", seed: int | np.random.Generator | None = None,
                 dropout: float | Sequence[float] = 0.0) -> None:
        try:
            sizes = list(layer_sizes) if not isinstance(layer_sizes, (str, bytes)) else None
        except TypeError:  # MLP(20): a single number, not a list
            sizes = None
        if (
            sizes is None
            or len(sizes) < 2
            or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in sizes)
        ):
            raise ValueError(
                "layer_sizes: expected a list of at least two positive integers such as [784, 100, 10], "
                f"got {layer_sizes!r}"
            )
        if sizes[-1] < 2:
            raise ValueError(
                f"layer_sizes: expected at least 2 outputs (one per class; a single class leaves nothing to learn), "
                f"got {layer_sizes!r}"
            )
        if str(getattr(dtype, "name", getattr(dtype, "__name__", dtype))) not in _FLOAT_DTYPES:
            raise TypeError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        self.layer_sizes = [int(n) for n in sizes]
        self.dropout = check_dropout(dropout, len(self.layer_sizes) - 2)
        self.backend = get_backend(backend)
        self.dtype_name = str(getattr(dtype, "name", getattr(dtype, "__name__", dtype)))
        self.dtype = self.backend.dtype(self.dtype_name)
        seed = check_seed(seed)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.params = {}
        for l, (fan_in, fan_out) in enumerate(zip(self.layer_sizes[:-1], self.layer_sizes[1:], strict=True), start=1):
            # He: std √(2/n), n = units in the previous layer. Drawn in float64 on the host, then cast,
            # so float32 and float64 nets from one seed hold the same weights up to rounding.
            W = rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)
            self.params[f"W{l}"] = self.backend.asarray(W, dtype=self.dtype)
            self.params[f"b{l}"] = self.backend.asarray(np.zeros(fan_out), dtype=self.dtype)

    # ----------------------------------------------------------------- introspection
    @property
    def xp(self) -> Namespace:
        """The Array API namespace of the backend."""
        return self.backend.xp

    @property
    def n_layers(self) -> int:
        """Number of affine layers (hidden layers + the output layer)."""
        return len(self.layer_sizes) - 1

    @property
    def n_in(self) -> int:
        return self.layer_sizes[0]

    @property
    def n_classes(self) -> int:
        return self.layer_sizes[-1]

    def __repr__(self):
        sizes = "-".join(map(str, self.layer_sizes))
        drop = f", dropout={self.dropout!r}" if any(self.dropout) else ""
        return f"MLP({sizes}, backend={self.backend.name!r}, dtype={self.dtype_name!r}{drop})"

    # ----------------------------------------------------------------- dropout masks (host)
    @property
    def uses_dropout(self) -> bool:
        """True when some hidden layer has a dropout rate p > 0."""
        return any(p > 0.0 for p in self.dropout)

    def dropout_masks(self, rng: np.random.Generator, n: int) -> list[Any]:
        """Host masks for ``n`` rows: per hidden layer l a (n, n_l) array M/(1 − p) of the compute dtype — 0 for
        a dropped unit, 1/(1 − p) (rounded to the dtype) for a kept one — or None where p = 0.

        ``rng`` is a ``numpy.random.Generator``; a unit is dropped where its float64 uniform draw u ∈ [0, 1) is
        < p (probability p). Drawn layer by layer, row-major, so the same generator state gives the same masks
        for any backend or dtype. One batch of :meth:`draw_dropout`.
        """
        return self.draw_dropout(rng, [n])

    def draw_dropout(self, rng: np.random.Generator, rows: Sequence[int]) -> list[Any]:
        """The masks of consecutive batches of ``rows[0]``, ``rows[1]``, ... rows, drawn in one go.

        Returns per hidden layer one host buffer (Σ rows, n_l) of the compute dtype (None where p = 0): batch b's
        masks are its rows ``sum(rows[:b])`` … ``sum(rows[:b + 1])``, the values :meth:`dropout_masks` gives
        batch after batch from the same generator (the uniforms u are drawn in the same order: batch by batch,
        layer by layer, row-major). u lives only in a float64 scratch of one batch; each buffer is written once.
        """
        hidden = zip(self.layer_sizes[1:-1], self.dropout, strict=True)
        layers = [(l, w, p) for l, (w, p) in enumerate(hidden) if p > 0.0]
        dtype = np.dtype(self.dtype_name)
        bufs: list[Any] = [None] * len(self.dropout)
        if not layers:
            return bufs
        total, width = sum(rows), sum(w for _, w, _ in layers)
        for l, w, _ in layers:
            bufs[l] = np.empty((total, w), dtype=dtype)
        scale = {l: dtype.type(1.0 / (1.0 - p)) for l, _, p in layers}  # the float64 1/(1 − p), rounded once
        u = np.empty(max(rows, default=0) * width)  # float64: u ≥ p decides exactly as before
        keep = np.empty(u.shape, dtype=bool)
        r = 0
        for n in rows:
            rng.random(out=u[: n * width])
            off = 0
            for l, w, p in layers:
                k = keep[off : off + n * w].reshape(n, w)
                np.greater_equal(u[off : off + n * w].reshape(n, w), p, out=k)
                np.multiply(k, scale[l], out=bufs[l][r : r + n])  # M/(1 − p) in the compute dtype, one pass
                off += n * w
            r += n
        return bufs

    # ----------------------------------------------------------------- forward / backward on device arrays
    def forward(self, X: Array, masks: Sequence[Array | None] | None = None,
                ops: Any = None) -> tuple[Array, list[Array]]:
        """Forward pass on backend arrays. Returns ``(A, Hs)``.

        ``X`` : (N, n_in) backend array of ``self.dtype``. ``A`` : (N, C) output-layer values.
        ``Hs`` : the input X followed by each hidden layer's output H (what backward needs).
        ``masks`` : training only: per hidden layer a (N, n_l) backend array M/(1 − p) or None
        (:meth:`dropout_masks` moved to the device); H is multiplied by it. None: no dropout.
        ``ops`` : what computes a hidden layer's elementwise part (``bias_relu``, ``hidden_backward``):
        :mod:`nnarray.functions` by default, a fast path's one-pass kernels otherwise.
        """
        xp, p, ops = self.xp, self.params, ops or F
        Hs = [X]
        H = X
        L = self.n_layers
        for l in range(1, L):
            # H_j = ReLU(B⁽ˡ⁾_j + Σ_i H_i W⁽ˡ⁾_j,i) (· M_j): the bias added in place to the fresh product
            H = ops.bias_relu(xp, H @ p[f"W{l}"], p[f"b{l}"], None if masks is None else masks[l - 1])
            Hs.append(H)
        # A_k = B_k + Σ_j H_j W_k,j
        A = H @ p[f"W{L}"]
        A += p[f"b{L}"]
        return A, Hs

    def backward(self, a: Array, Hs: Sequence[Array],
                 masks: Sequence[Array | None] | None = None, ops: Any = None) -> dict[str, Array]:
        """Back-propagation from ``a`` (N, C) = ∂E/∂A through the layers cached in ``Hs``.

        Returns the gradient dict (same keys as ``params``). Per layer, summed over the batch rows:
        ΔB_k = Σ_n a_k,  ΔW_k,j = Σ_n H_j a_k,  h_j = Σ_k W_k,j a_k masked where H_j ≤ 0, and multiplied
        by the dropout mask M/(1 − p) when ``masks`` (the ones given to :meth:`forward`) has one. ``ops``: as
        in :meth:`forward`.
        """
        xp, p, ops = self.xp, self.params, ops or F
        grads = {}
        for l in range(self.n_layers, 0, -1):
            H_prev = Hs[l - 1]
            grads[f"W{l}"] = ops.weight_gradient(xp, H_prev, a)  # ΔW = H_prevᵀ·a
            grads[f"b{l}"] = xp.sum(a, axis=0)
            if l > 1:  # the input layer has no gradient to pass on
                # h_j = Σ_k W_k,j a_k, masked in place (the product is a fresh array of ours); H_prev is hidden
                # layer l − 1's output, so its dropout mask is masks[l − 2]
                a = ops.hidden_backward(xp, a @ p[f"W{l}"].T, H_prev, None if masks is None else masks[l - 2])
        return grads

    # ----------------------------------------------------------------- public API (validated input)
    def predict(self, X: Array) -> Array:
        """Class probabilities Y (N, C) = softmax(A) for input ``X`` (N, n_in), as a backend array."""
        Xd = self._to_device_X(X)
        A, _ = self.forward(Xd)
        return F.softmax(self.xp, A)

    def loss(self, X: Array, t: Array, reduction: str = "mean") -> float:
        """Cross-entropy E = −Σ_k T_k log Y_k, averaged over the rows (``"mean"``) or summed (``"sum"``)."""
        check_reduction(reduction)
        Xd, td = self._to_device_Xt(X, t)
        _, E, _ = self._head(Xd, td)
        return float(E) / (Xd.shape[0] if reduction == "mean" else 1)

    def accuracy(self, X: Array, t: Array) -> float:
        """Fraction of rows whose most probable class equals the label ``t``."""
        Xd, td = self._to_device_Xt(X, t)
        return int(F.count_correct(self.xp, self.forward(Xd)[0], td)) / Xd.shape[0]

    def gradient(self, X: Array, t: Array, reduction: str = "mean") -> dict[str, Array]:
        """ΔW, ΔB for every layer by back-propagation, as a dict with the keys of ``params``.

        ``reduction="sum"`` adds every image's values over the batch (the seed's accumulation);
        ``"mean"`` divides that sum by N (the book's convention).
        """
        check_reduction(reduction)
        Xd, td = self._to_device_Xt(X, t)
        A, Hs = self.forward(Xd)
        a, _, _ = F.softmax_cross_entropy(self.xp, A, F.one_hot(self.xp, td, self.n_classes, self.dtype), reduction)
        return self.backward(a, Hs)

    def _head(self, Xd, td):
        """The loss head on the whole of (Xd, td): ``(a, E, correct)`` as :func:`functions.softmax_cross_entropy`."""
        A, _ = self.forward(Xd)
        return F.softmax_cross_entropy(self.xp, A, F.one_hot(self.xp, td, self.n_classes, self.dtype), "sum")

    def numerical_gradient(self, X: Array, t: Array, reduction: str = "mean",
                           eps: float = 1e-6) -> dict[str, np.ndarray]:
        """Central-difference gradient, host float64 (see :func:`nnarray.gradcheck.numerical_gradient`)."""
        from .gradcheck import numerical_gradient  # noqa: PLC0415

        return numerical_gradient(self, X, t, reduction=reduction, eps=eps)

    # ----------------------------------------------------------------- helpers
    def _to_device_X(self, X):
        X = check_X(X, self.n_in)
        return self.backend.asarray(X, dtype=self.dtype)

    def _to_device_Xt(self, X, t):
        X, t = check_Xt(X, t, self.n_in, self.n_classes)
        return self.backend.asarray(X, dtype=self.dtype), self.backend.asarray(t, dtype=self.backend.index_dtype)

    def to(self, backend: str | Backend | Namespace) -> MLP:
        """A copy of this network on another backend (e.g. GPU-trained → ``"numpy"``)."""
        other = MLP.__new__(MLP)
        other.layer_sizes = list(self.layer_sizes)
        other.dropout = list(self.dropout)
        other.backend = get_backend(backend)
        other.dtype_name = self.dtype_name
        other.dtype = other.backend.dtype(self.dtype_name)
        other.params = {k: other.backend.asarray(to_numpy(v), dtype=other.dtype, copy=True)
                        for k, v in self.params.items()}
        return other

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host NumPy copies of the parameters, keyed like ``params``, C-contiguous (the seed's layout, whatever
        layout a fast path keeps them in on its device)."""
        return {k: np.array(to_numpy(v), order="C") for k, v in self.params.items()}

    def load_state_dict(self, state: dict[str, Array]) -> None:
        """Replace the parameters by ``state`` (host or backend arrays of the right shapes)."""
        expected = {k: tuple(v.shape) for k, v in self.params.items()}
        got = {k: tuple(np.shape(to_numpy(v))) for k, v in state.items()}
        if expected != got:
            raise ValueError(f"state: parameter shapes {got} do not match this network's {expected}")
        # Copies: SGD updates parameters in place, which must never reach the caller's arrays.
        self.params = {k: self.backend.asarray(np.ascontiguousarray(to_numpy(state[k])), dtype=self.dtype, copy=True)
                       for k in expected}
