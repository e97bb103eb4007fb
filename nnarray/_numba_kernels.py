"""The optimizers' rules as Numba loops: one pass over each parameter and its state (the ``numba`` extra), for
the optimizers :data:`nnarray.fused.NUMPY_FUSED_FAMILIES` names (SGD, Adam/AdamW, RMSprop, AdaGrad).

Imported by :mod:`nnarray.fused` only when Numba is installed. Every kernel takes C-contiguous arrays of one shape
and dtype (p, g, then the state in :meth:`nnarray.optim.Optimizer.state_names`' order), seen flat, and scalars
already cast to that dtype (so float32 is computed in float32, as the functional rule's weak Python scalars are),
and evaluates :meth:`nnarray.optim.Optimizer.rule`'s expressions in the rule's order.
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
def sgd(P, G, lr, wd, tiny):
    p = P.reshape(P.size)
    g = G.reshape(G.size)
    for i in range(p.size):
        gi = g[i] + wd * p[i] if wd != 0 else g[i]
        p[i] = p[i] - lr * gi


@_jit
def sgd_momentum(P, G, V, lr, mu, wd, nesterov, tiny):
    p = P.reshape(P.size)
    g = G.reshape(G.size)
    v = V.reshape(V.size)
    for i in range(p.size):
        gi = g[i] + wd * p[i] if wd != 0 else g[i]
        vi = _ftz(mu * v[i] - lr * gi, tiny)
        v[i] = vi
        p[i] = p[i] + (mu * vi - lr * gi if nesterov else vi)


@_jit
def adam(P, G, M, V, b1, c1, b2, c2, eps, l2, decay, neg_step, bc2_sqrt, tiny):
    p = P.reshape(P.size)
    g = G.reshape(G.size)
    m = M.reshape(M.size)
    v = V.reshape(V.size)
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
def rmsprop(P, G, S, alpha, c, eps, wd, neg_lr, tiny):
    p = P.reshape(P.size)
    g = G.reshape(G.size)
    s = S.reshape(S.size)
    for i in range(p.size):
        gi = g[i] + wd * p[i] if wd != 0 else g[i]
        si = _ftz(alpha * s[i] + c * (gi * gi), tiny)
        s[i] = si
        p[i] = p[i] + gi / (math.sqrt(si) + eps) * neg_lr


@_jit
def rmsprop_momentum(P, G, S, B, alpha, c, eps, mu, wd, neg_lr, tiny):
    p = P.reshape(P.size)
    g = G.reshape(G.size)
    s = S.reshape(S.size)
    b = B.reshape(B.size)
    for i in range(p.size):
        gi = g[i] + wd * p[i] if wd != 0 else g[i]
        si = _ftz(alpha * s[i] + c * (gi * gi), tiny)
        s[i] = si
        bi = _ftz(mu * b[i] + gi / (math.sqrt(si) + eps), tiny)
        b[i] = bi
        p[i] = p[i] + neg_lr * bi


@_jit
def adagrad(P, G, H, eps, wd, neg_clr, tiny):  # h only grows: nothing to flush
    p = P.reshape(P.size)
    g = G.reshape(G.size)
    h = H.reshape(H.size)
    for i in range(p.size):
        gi = g[i] + wd * p[i] if wd != 0 else g[i]
        hi = h[i] + gi * gi
        h[i] = hi
        p[i] = p[i] + gi / (math.sqrt(hi) + eps) * neg_clr


# ------------------------------------------------------------------------------ hidden layers (NumPy fast path)
# nnarray.fast.numpy_numba: one pass where the generic step makes three, the same operations in the same order
# (the generic step: Z += b; H = maximum(Z, 0); H *= M — and h *= astype(H > 0); h *= M), so the values agree bit
# for bit. ReLU keeps NaN as NumPy's maximum does; the mask multiplies, so an infinite or NaN gradient gives NaN
# where H ≤ 0, as h · 0 does. The literal 0.0 is float64: a float32 value passes through float64 exactly, and a
# product of two float32 values is exact there, so its one rounding back to float32 is float32's own product.
@_jit
def bias_relu(Z, b, M, masked):  # M is read only when masked (the caller passes Z otherwise)
    n, m = Z.shape
    for i in range(n):
        for j in range(m):
            z = Z[i, j] + b[j]
            h = z if z > 0 or z != z else 0.0
            Z[i, j] = h * M[i, j] if masked else h


@_jit
def relu_mask(h, H, M, masked):  # M is read only when masked (the caller passes h otherwise)
    n, m = h.shape
    for i in range(n):
        for j in range(m):
            x = h[i, j]
            x = x if H[i, j] > 0 else x * 0
            h[i, j] = x * M[i, j] if masked else x
