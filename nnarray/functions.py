"""Stateless building blocks of the seed network, written against the Array API standard.

Every function takes the namespace ``xp`` explicitly (from a :class:`~nnarray.backend.Backend`),
uses only ``xp.*`` and never imports NumPy or CuPy. Shapes: ``N`` images per batch, ``C`` classes.
"""

from __future__ import annotations

from typing import Any

from .backend import index_dtype

__all__ = [
    "relu",
    "relu_backward",
    "softmax",
    "log_softmax",
    "one_hot",
    "softmax_cross_entropy",
    "count_correct",
]


def relu(xp, Z):
    """ReLU(x) = x if x > 0 else 0, elementwise. The seed's hidden layer: H = ReLU(B + Σ X W)."""
    # A Python scalar is "weak": the result keeps Z's dtype (float32 stays float32).
    return xp.maximum(Z, 0.0)


def relu_backward(xp: Any, h: Any, H: Any, inplace: bool = False) -> Any:
    """ReLU backward: h stays where H > 0 and becomes 0 where H ≤ 0 (the seed's mask).

    ``h`` : (N, n) gradient arriving at the layer's output; ``H`` : (N, n) the layer's forward output.
    Returns a new array, or ``h`` itself masked in place when ``inplace`` (for a fresh ``h`` that the
    caller owns: it saves a temporary of the layer's size per step).
    """
    # Multiplying by the 0/1 mask is much faster on NumPy than ``xp.where(H > 0, h, 0.0)``.
    # The mask is cast explicitly: bool×float promotion is unspecified by the standard (strict raises).
    mask = xp.astype(H > 0, h.dtype)
    if inplace:
        h *= mask
        return h
    return h * mask


def bias_relu(xp: Any, Z: Any, b: Any, M: Any = None) -> Any:
    """A hidden layer's output from its product: H = ReLU(Z + B), times the dropout mask M/(1 − p) when given.

    ``Z`` : (N, n) the fresh product H_prev·W, owned by the caller (the bias is added in place); ``b`` : (n,);
    ``M`` : (N, n) or None. The NumPy fast path (:mod:`nnarray.fast.numpy_numba`) does the same in one pass.
    """
    Z += b
    H = relu(xp, Z)
    if M is not None:
        H *= M  # inverted dropout, in place on relu's fresh output
    return H


def hidden_backward(xp: Any, h: Any, H: Any, M: Any = None) -> Any:
    """The gradient arriving at a hidden layer's output h (N, n), taken back through it: masked where H ≤ 0
    (:func:`relu_backward`, in place: ``h`` is a fresh product of the caller's), then times the dropout mask M
    when given (∂(ReLU(Z)·M/(1−p))/∂Z = 1[Z > 0]·M/(1−p)). The NumPy fast path does it in one pass."""
    h = relu_backward(xp, h, H, inplace=True)
    if M is not None:
        h *= M
    return h


def weight_gradient(xp: Any, H: Any, a: Any) -> Any:
    """ΔW (n_in, n_out) = Hᵀ·a, summed over the batch: the seed's ΔW_k,j = Σ_n H_j a_k for a layer whose input is
    ``H`` (N, n_in) and whose gradient at its output is ``a`` (N, n_out). A fast path may compute the same product
    in another memory layout (the torch fast path: (aᵀ·H)ᵀ, its weights' Fortran order)."""
    return H.T @ a


def softmax(xp, A):
    """Y_k = exp(A_k) / Σ_m exp(A_m) per row of ``A`` (N, C), shifted by the row maximum for stability.

    >>> import array_api_strict as xp
    >>> Y = softmax(xp, xp.asarray([[0.0, 0.0], [1000.0, 0.0]]))
    >>> [round(float(v), 6) for v in (Y[0, 0], Y[1, 0], Y[1, 1])]
    [0.5, 1.0, 0.0]
    """
    S = A - xp.max(A, axis=1, keepdims=True)
    E = xp.exp(S)
    return E / xp.sum(E, axis=1, keepdims=True)


def log_softmax(xp, A):
    """log Y for each row of ``A`` (N, C), computed without forming Y (exact for very negative logits)."""
    S = A - xp.max(A, axis=1, keepdims=True)
    return S - xp.log(xp.sum(xp.exp(S), axis=1, keepdims=True))


def one_hot(xp: Any, t: Any, num_classes: int, dtype: Any) -> Any:
    """Teacher T (N, C): 1.0 at the correct class t_n, 0 elsewhere.

    Built by comparison, not by integer-array assignment, which the standard leaves unspecified.

    >>> import array_api_strict as xp
    >>> one_hot(xp, xp.asarray([2, 0]), 3, xp.float32)
    Array([[0., 0., 1.],
           [1., 0., 0.]], dtype=array_api_strict.float32)
    """
    classes = xp.arange(num_classes, dtype=t.dtype, device=_device(xp, t))
    return xp.astype(t[..., None] == classes, dtype)


def softmax_cross_entropy(xp: Any, A: Any, T: Any, reduction: str = "mean",
                          n: int | None = None) -> tuple[Any, Any, Any]:
    """The loss head: softmax, cross-entropy, its gradient and the number correct, from one pass.

    ``A`` : (N, C) output-layer values; ``T`` : (N, C) one-hot teacher. Returns ``(a, E, correct)``:

    * ``a`` (N, C) = Y − T with Y_k = exp(A_k) / Σ_m exp(A_m) — the seed's aₖ = Yₖ − Tₖ, divided by ``n``
      for ``reduction="mean"`` (``n`` defaults to N; under data-parallel training it is the global batch);
    * ``E`` (0-d) = Σ_n −Σ_k T_k log Y_k, the cross-entropy *summed* over the rows;
    * ``correct`` (0-d, the namespace's index dtype) = rows whose correct class has the largest output (an exact
      tie counts).

    Everything shares the shifted values S = A − max A: Y = exp S / Z with Z = Σ_k exp S_k, and
    E_n = log Z_n − S_n,t (S at the correct class t). S_t = 0 exactly when the correct class has the largest
    output, which is cheaper than an argmax. Nothing is read back to the host.

    >>> import array_api_strict as xp
    >>> A = xp.asarray([[2.0, 0.0], [0.0, 0.0]])
    >>> a, E, correct = softmax_cross_entropy(xp, A, one_hot(xp, xp.asarray([0, 1]), 2, xp.float64), "sum")
    >>> round(float(E), 6), int(correct), round(float(a[0, 0]), 6)
    (0.820075, 2, -0.119203)
    """
    S = A - xp.max(A, axis=1, keepdims=True)
    ES = xp.exp(S)
    Z = xp.sum(ES, axis=1, keepdims=True)
    S_t = xp.vecdot(T, S, axis=-1)  # Σ_k T_k S_k: exactly S_t (the other terms are 0), in one call
    E = xp.sum(xp.log(Z)) - xp.sum(S_t)
    correct = xp.count_nonzero(S_t == 0.0)  # the standard gives it the default index dtype: no cast
    a = ES / Z - T  # a = Y − T
    if reduction == "mean":
        a = a / (A.shape[0] if n is None else n)
    return a, E, correct


def count_correct(xp, A, t):
    """Number of rows whose largest output is the correct class (0-d integer array; no host sync)."""
    return xp.sum(xp.astype(xp.argmax(A, axis=1) == t, index_dtype(xp, _device(xp, A))))


def _device(xp, x):
    # array_api_compat.device handles CuPy and torch arrays, which have no uniform ``.device``.
    import array_api_compat  # noqa: PLC0415

    return array_api_compat.device(x)
