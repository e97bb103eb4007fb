"""Numerical gradients by central differences: an independent check of back-propagation.

Computed on the host in float64 with NumPy, deliberately *not* with the network's own forward code,
so a bug in :meth:`MLP.forward` cannot hide itself.
"""

from __future__ import annotations

import numpy as np

from .backend import to_numpy
from .checks import check_reduction, check_Xt

__all__ = ["numerical_gradient", "max_relative_error"]


def _loss_host(params, X, T, n_layers, reduction, masks=None):
    H = X
    for l in range(1, n_layers):
        H = np.maximum(H @ params[f"W{l}"] + params[f"b{l}"], 0.0)
        if masks is not None and masks[l - 1] is not None:
            H = H * masks[l - 1]  # dropout's fixed M/(1 − p)
    A = H @ params[f"W{n_layers}"] + params[f"b{n_layers}"]
    S = A - A.max(axis=1, keepdims=True)
    E = -np.sum(T * (S - np.log(np.exp(S).sum(axis=1, keepdims=True))))
    return E / X.shape[0] if reduction == "mean" else E


def numerical_gradient(net, X, t, reduction="mean", eps=1e-6, masks=None):
    """(E(θ + ε) − E(θ − ε)) / 2ε for every entry θ of every parameter of ``net``.

    Returns a dict keyed like ``net.params`` of host float64 arrays. Two forward passes per
    parameter entry: meant for small networks in tests. ``masks``: fixed dropout masks M/(1 − p) per
    hidden layer (host arrays or None, as :meth:`nnarray.MLP.dropout_masks` gives), applied to H.
    """
    check_reduction(reduction)
    Xh = np.asarray(to_numpy(X), dtype=np.float64)
    th = np.asarray(to_numpy(t))
    check_Xt(Xh, th, net.n_in, net.n_classes)
    T = (th[:, None] == np.arange(net.n_classes)).astype(np.float64)
    params = {k: np.array(to_numpy(v), dtype=np.float64) for k, v in net.params.items()}
    if masks is not None:
        masks = [None if M is None else np.asarray(to_numpy(M), dtype=np.float64) for M in masks]
    grads = {}
    for key, value in params.items():
        g = np.zeros_like(value)
        flat, gflat = value.reshape(-1), g.reshape(-1)  # views: writing flat[i] perturbs params[key]
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            e_plus = _loss_host(params, Xh, T, net.n_layers, reduction, masks)
            flat[i] = old - eps
            e_minus = _loss_host(params, Xh, T, net.n_layers, reduction, masks)
            flat[i] = old
            gflat[i] = (e_plus - e_minus) / (2 * eps)
        grads[key] = g
    return grads


def max_relative_error(a, b):
    """max |a − b| / max(|a|, |b|, tiny) over every key of two gradient dicts (host arrays)."""
    worst = 0.0
    for k in a:
        x, y = np.asarray(to_numpy(a[k]), dtype=np.float64), np.asarray(to_numpy(b[k]), dtype=np.float64)
        scale = max(np.max(np.abs(x)), np.max(np.abs(y)), 1e-30)
        worst = max(worst, float(np.max(np.abs(x - y)) / scale))
    return worst
