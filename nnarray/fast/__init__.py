"""Backend-specific fast paths for the training step, beside the generic Array API step.

The generic :class:`nnarray.step.TrainStep` is the reference: written once against the standard, it runs
on every backend. A fast path subclasses it for one backend and replaces *how* the step is computed
(fused kernels, a captured CUDA graph), never the algorithm; it is tested against the generic step.
Importing this package registers the fast paths with :func:`nnarray.step.register_fast_path` (their modules
load lazily, on first use); :func:`nnarray.step.make_step` picks one. ``fit(fast=False)`` or
``$NNARRAY_FAST=0`` turns them off.

=========  =====================================================  ==========================================
backend    fast path                                              when
=========  =====================================================  ==========================================
cupy       :class:`~nnarray.fast.cupy_graph.CupyGraphStep`        experimental: only with ``fit(fast=True)``
                                                                  until it has passed its parity tests on a
                                                                  GPU (``cupy_graph.VALIDATED``); SGD, small
                                                                  layers only
jax        :class:`~nnarray.fast.jax_jit.JaxJitStep`              by default (``fast=None``): the generic
                                                                  step traced by ``jax.jit``; every
                                                                  optimizer without gradient hooks
numpy      :class:`~nnarray.fast.numpy_numba.NumbaStep`           by default with the ``numba`` extra: the
                                                                  generic step, its hidden layers'
                                                                  elementwise passes one compiled loop each
torch      :class:`~nnarray.fast.torch_cpu.TorchCpuStep`          by default on the CPU with the ``numba``
                                                                  extra: MKL's products in
                                                                  ``torch.nn.Linear``'s layout, Numba's
                                                                  loops on the tensors' memory, SGD's
                                                                  update folded into the products
=========  =====================================================  ==========================================

A buffered NumPy step (preallocated ``out=`` arrays, a second copy of the step) did not gain enough to stay
(docs/speed.md); the Numba step only swaps the elementwise functions (:meth:`nnarray.MLP.forward`'s ``ops``).
"""

from __future__ import annotations

import importlib

from ..step import register_fast_path

__all__: list = []


def _lazy(module, cls):
    """A loader of ``cls`` from ``nnarray.fast.<module>``, imported on first use (CuPy's compiler, JAX, Numba's
    kernels and torch load only for the backend that needs them)."""
    return lambda: getattr(importlib.import_module(f"{__name__}.{module}"), cls)


register_fast_path("cupy", _lazy("cupy_graph", "CupyGraphStep"))
register_fast_path("jax", _lazy("jax_jit", "JaxJitStep"))
register_fast_path("numpy", _lazy("numpy_numba", "NumbaStep"))
register_fast_path("torch", _lazy("torch_cpu", "TorchCpuStep"))
