"""Backend-specific fast paths for the training step, beside the generic Array API path.

The generic :class:`nnarray.train.GenericStep` is the reference: written once against the standard,
it runs on every backend. A fast path computes the same mini-batch step for one backend with that
backend's own tools (preallocated buffers and ``out=`` on NumPy) and is tested against the generic
path (bit-identical on NumPy). :func:`make_step` picks one automatically; ``fit(fast=False)`` or
``$NNARRAY_FAST=0`` turns them off.

=========  =====================================  ==========================================
backend    fast path                              when
=========  =====================================  ==========================================
numpy      :class:`~nnarray.fast.numpy_step.NumpyStep`  plain SGD or momentum, writeable C-contiguous arrays
cupy       :class:`~nnarray.fast.cupy_graph.CupyGraphStep`  experimental: only with ``fit(fast=True)`` until
                                                      it has passed its parity tests on a GPU
                                                      (``cupy_graph.VALIDATED``); small layers only
=========  =====================================  ==========================================
"""

from __future__ import annotations

import os

__all__ = ["make_step", "fast_path_for", "fast_enabled_by_env"]


def fast_enabled_by_env() -> bool:
    """False when ``$NNARRAY_FAST`` is ``0``/``false``/``no``/``off``."""
    return os.environ.get("NNARRAY_FAST", "1").strip().lower() not in ("0", "false", "no", "off")


def fast_path_for(net, opt, Xd, Td, batch_size=None, explicit=False):
    """The fast-path class that can run this training, or ``(None, reason)``.

    ``explicit``: the caller asked for a fast path (``fit(fast=True)``), which also admits experimental ones.
    """
    if net.backend.name == "numpy":
        from .numpy_step import NumpyStep  # noqa: PLC0415

        reason = NumpyStep.unsupported(net, opt, Xd, Td)
        return (NumpyStep, None) if reason is None else (None, reason)
    if net.backend.name == "cupy":
        from . import cupy_graph  # noqa: PLC0415

        reason = cupy_graph.CupyGraphStep.unsupported(net, opt, Xd, Td)
        if reason is None and not explicit:
            if not cupy_graph.VALIDATED:
                reason = "the CuPy graph path is experimental until validated on a GPU (use fast=True)"
            elif batch_size is not None and cupy_graph.CupyGraphStep.too_large(net, batch_size):
                reason = "layers too large for the graph path's own GEMM kernel; cuBLAS is faster"
        return (cupy_graph.CupyGraphStep, None) if reason is None else (None, reason)
    return None, f"no fast path for backend {net.backend.name!r}"


def make_step(net, opt, Xd, Td, reduction, fast=None, batch_size=None):
    """The step object ``fit`` uses for each mini-batch: a fast path when allowed, else the generic one."""
    from ..train import GenericStep  # noqa: PLC0415 -- train imports this module

    if fast is False or (fast is None and not fast_enabled_by_env()):
        return GenericStep(net, opt, Xd, Td, reduction)
    cls, reason = fast_path_for(net, opt, Xd, Td, batch_size, explicit=fast is True)
    if cls is None:
        if fast is True:
            raise ValueError(f"fast: no fast path available here ({reason}); use fast=None or False")
        return GenericStep(net, opt, Xd, Td, reduction)
    return cls(net, opt, Xd, Td, reduction)
