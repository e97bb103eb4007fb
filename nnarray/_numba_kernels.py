"""The optimizers' rules as Numba loops: one pass over each parameter and its state (the ``numba`` extra), for
the optimizers :data:`nnarray.fused.NUMPY_FUSED_FAMILIES` names (SGD, Adam/AdamW, RMSprop, AdaGrad).

Imported by :mod:`nnarray.fused` only when Numba is installed. Every kernel takes flat contiguous arrays of one
dtype and scalars already cast to that dtype (so float32 is computed in float32, as the functional rule's weak
Python scalars are), and evaluates :meth:`nnarray.optim.Optimizer.rule`'s expressions in the rule's order.
``error_model="numpy"``: a division by zero gives inf/nan as NumPy does (and lets the loop vectorise).
"""

from __future__ import annotations

import math

import numba

_jit = numba.njit(cache=True, error_model="numpy", nogil=True)


@_jit
def sgd(p, g, lr, wd):
    for i in range(p.size):
        gi = g[i] + wd * p[i] if wd != 0 else g[i]
        p[i] = p[i] - lr * gi


@_jit
def sgd_momentum(p, g, v, lr, mu, wd, nesterov):
    for i in range(p.size):
        gi = g[i] + wd * p[i] if wd != 0 else g[i]
        vi = mu * v[i] - lr * gi
        v[i] = vi
        p[i] = p[i] + (mu * vi - lr * gi if nesterov else vi)


@_jit
def adam(p, g, m, v, b1, c1, b2, c2, eps, l2, decay, neg_step, bc2_sqrt):
    for i in range(p.size):
        pi = p[i]
        gi = g[i] + l2 * pi if l2 != 0 else g[i]
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        delta = mi / (math.sqrt(vi) / bc2_sqrt + eps) * neg_step
        if decay != 0:
            delta = delta + pi * decay
        p[i] = pi + delta


@_jit
def rmsprop(p, g, s, alpha, c, eps, wd, neg_lr):
    for i in range(p.size):
        gi = g[i] + wd * p[i] if wd != 0 else g[i]
        si = alpha * s[i] + c * (gi * gi)
        s[i] = si
        p[i] = p[i] + gi / (math.sqrt(si) + eps) * neg_lr


@_jit
def rmsprop_momentum(p, g, s, b, alpha, c, eps, mu, wd, neg_lr):
    for i in range(p.size):
        gi = g[i] + wd * p[i] if wd != 0 else g[i]
        si = alpha * s[i] + c * (gi * gi)
        s[i] = si
        bi = mu * b[i] + gi / (math.sqrt(si) + eps)
        b[i] = bi
        p[i] = p[i] + neg_lr * bi


@_jit
def adagrad(p, g, h, eps, wd, neg_clr):
    for i in range(p.size):
        gi = g[i] + wd * p[i] if wd != 0 else g[i]
        hi = h[i] + gi * gi
        h[i] = hi
        p[i] = p[i] + gi / (math.sqrt(hi) + eps) * neg_clr
