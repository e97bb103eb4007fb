"""The optimizers' rules as Numba loops: one pass over each parameter and its state (the ``numba`` extra), for
the optimizers :data:`nnarray.fused.NUMPY_FUSED_FAMILIES` names (SGD, Adam/AdamW, RMSprop, AdaGrad).

Imported by :mod:`nnarray.fused` only when Numba is installed. Every kernel takes flat contiguous arrays of one
dtype and scalars already cast to that dtype (so float32 is computed in float32, as the functional rule's weak
Python scalars are), and evaluates :meth:`nnarray.optim.Optimizer.rule`'s expressions in the rule's order.
``error_model="numpy"``: a division by zero gives inf/nan as NumPy does (and lets the loop vectorise).

**Flush to zero.** A state that only decays (momentum, Adam's m and v, RMSprop's mean square) for a weight whose
gradient stays 0 — the weights of a dead ReLU unit — shrinks into the subnormal numbers and stays there: μ times
the smallest subnormal rounds back to it. On x86 every later operation on a subnormal takes a microcode assist,
30–60 × slower; a quarter of W1's Adam state stuck there made the 784-2048-10 AdamW epoch 3.5 × slower. So these
kernels store a decayed state below ``tiny`` (the dtype's smallest normal number) as 0, as the hardware's
flush-to-zero mode would. The difference from the rule is below ``tiny`` in the state and nothing in the
parameters (such a state's step, about tiny·η, is far below the rounding of any parameter it would change).
"""

from __future__ import annotations

import math

import numba

_jit = numba.njit(cache=True, error_model="numpy", nogil=True)


@_jit
def _ftz(x, tiny):
    """``x``, or 0 of its dtype where ``|x| < tiny`` (a subnormal); NaN and ±inf stay. A product with the
    comparison, not a branch: the loops stay vectorised (a conditional expression made Adam's 3.5 × slower)."""
    return x * (abs(x) >= tiny)


@_jit
def sgd(p, g, lr, wd, tiny):
    for i in range(p.size):
        gi = g[i] + wd * p[i] if wd != 0 else g[i]
        p[i] = p[i] - lr * gi


@_jit
def sgd_momentum(p, g, v, lr, mu, wd, nesterov, tiny):
    for i in range(p.size):
        gi = g[i] + wd * p[i] if wd != 0 else g[i]
        vi = _ftz(mu * v[i] - lr * gi, tiny)
        v[i] = vi
        p[i] = p[i] + (mu * vi - lr * gi if nesterov else vi)


@_jit
def adam(p, g, m, v, b1, c1, b2, c2, eps, l2, decay, neg_step, bc2_sqrt, tiny):
    for i in range(p.size):
        pi = p[i]
        gi = g[i] + l2 * pi if l2 != 0 else g[i]
        mi = _ftz(b1 * m[i] + c1 * gi, tiny)
        vi = _ftz(b2 * v[i] + c2 * (gi * gi), tiny)
        m[i] = mi
        v[i] = vi
        delta = mi / (math.sqrt(vi) / bc2_sqrt + eps) * neg_step
        if decay != 0:
            delta = delta + pi * decay
        p[i] = pi + delta


@_jit
def rmsprop(p, g, s, alpha, c, eps, wd, neg_lr, tiny):
    for i in range(p.size):
        gi = g[i] + wd * p[i] if wd != 0 else g[i]
        si = _ftz(alpha * s[i] + c * (gi * gi), tiny)
        s[i] = si
        p[i] = p[i] + gi / (math.sqrt(si) + eps) * neg_lr


@_jit
def rmsprop_momentum(p, g, s, b, alpha, c, eps, mu, wd, neg_lr, tiny):
    for i in range(p.size):
        gi = g[i] + wd * p[i] if wd != 0 else g[i]
        si = _ftz(alpha * s[i] + c * (gi * gi), tiny)
        s[i] = si
        bi = _ftz(mu * b[i] + gi / (math.sqrt(si) + eps), tiny)
        b[i] = bi
        p[i] = p[i] + neg_lr * bi


@_jit
def adagrad(p, g, h, eps, wd, neg_clr, tiny):  # h only grows: nothing to flush
    for i in range(p.size):
        gi = g[i] + wd * p[i] if wd != 0 else g[i]
        hi = h[i] + gi * gi
        h[i] = hi
        p[i] = p[i] + gi / (math.sqrt(hi) + eps) * neg_clr
