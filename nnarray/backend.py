"""Backends: which array namespace (and device) the network computes with.

A :class:`Backend` bundles an Array API namespace ``xp`` with the device its arrays live on.
Every compute function in nnarray receives its namespace from a Backend (or from its arrays)
and never imports NumPy or CuPy itself, so one code path serves every backend.

Names understood by :func:`get_backend`:

=====================  ===========================================================
``"numpy"``            NumPy on the host, through ``array_api_compat.numpy``
``"cupy"``             CuPy on the current CUDA device, through ``array_api_compat.cupy``
``"array_api_strict"`` the standard's reference namespace (conformance testing)
``"torch"``            PyTorch through ``array_api_compat.torch`` (CUDA if available, else CPU)
``"auto"``             ``"cupy"`` when CuPy imports and a CUDA device answers, else ``"numpy"``
=====================  ===========================================================

The default name comes from ``$NNARRAY_BACKEND``, else ``"auto"``. Several backends can be
used side by side in one process; nothing is selected globally.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any

import array_api_compat

from .words import arg

__all__ = ["Backend", "BackendUnavailableError", "BACKEND_NAMES", "get_backend", "cupy_available", "to_numpy"]

BACKEND_NAMES = ("numpy", "cupy", "array_api_strict", "torch", "auto")

#: The oldest revision of the standard the compute code is written for (it passes Python scalars to
#: ``maximum``, allowed from 2024.12 on).
MIN_API_VERSION = "2024.12"


class BackendUnavailableError(RuntimeError):
    """A known backend was asked for, but its library or its device is missing here."""


@dataclass(frozen=True)
class Backend:
    """An Array API namespace and the device the network's arrays live on.

    Attributes
    ----------
    name : str
        ``"numpy"``, ``"cupy"``, ``"array_api_strict"`` or ``"torch"`` (never ``"auto"``).
    xp : module
        The namespace every compute function uses (``xp.matmul``, ``xp.exp``, ...).
    device : object
        The device passed as ``device=`` whenever an array is created.
    """

    name: str
    xp: Any = field(repr=False)
    device: Any = None

    @property
    def is_gpu(self) -> bool:
        """True when the arrays live on a CUDA device."""
        if self.name == "cupy":
            return True
        return self.name == "torch" and getattr(self.device, "type", str(self.device)) == "cuda"

    def describe(self) -> str:
        """A one-line human description, e.g. ``"cupy (NVIDIA H200, device 0)"``."""
        if self.name == "cupy":
            import cupy  # noqa: PLC0415 -- description only, never in compute code

            dev = cupy.cuda.Device()
            props = cupy.cuda.runtime.getDeviceProperties(dev.id)
            gpu = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            return f"cupy {cupy.__version__} ({gpu}, device {dev.id})"
        if self.name == "numpy":
            import numpy  # noqa: PLC0415

            return f"numpy {numpy.__version__} (host CPU)"
        if self.name == "torch":
            import torch  # noqa: PLC0415

            return f"torch {torch.__version__} ({self.device})"
        return f"{self.name} ({self.device})"

    def asarray(self, x, dtype=None, copy=None):
        """Move ``x`` (host NumPy or this backend's array) onto this backend, as ``dtype``.

        ``copy=None`` copies only when needed (so a host float32 array on NumPy is used as is);
        ``copy=True`` always returns a new array that shares no memory with ``x``.
        """
        xp = self.xp
        if not _belongs_to(x, self):
            # Foreign arrays go through the host: CuPy refuses implicit conversion of other
            # devices' arrays, and host NumPy input is what every namespace's asarray accepts.
            x = to_numpy(x)
        if dtype is None:
            return xp.asarray(x, device=self.device, copy=copy)
        return xp.asarray(x, dtype=dtype, device=self.device, copy=copy)

    def dtype(self, name) -> Any:
        """The namespace's dtype for ``name`` (``"float32"``, ``"float64"``) or a dtype object."""
        if isinstance(name, str):
            try:
                return getattr(self.xp, name)
            except AttributeError:
                raise TypeError(f"dtype: unknown dtype name {name!r} for backend {self.name!r}") from None
        # NumPy dtype objects, np.float32 and the like: map through their name.
        nm = getattr(name, "name", None) or getattr(name, "__name__", None)
        if nm is not None and hasattr(self.xp, str(nm)):
            return getattr(self.xp, str(nm))
        return name

    def __eq__(self, other):
        return isinstance(other, Backend) and self.name == other.name and str(self.device) == str(other.device)

    def __hash__(self):
        return hash((self.name, str(self.device)))


def _belongs_to(x, be: Backend) -> bool:
    try:
        ns = array_api_compat.array_namespace(x)
    except TypeError:
        return False
    if be.name == "numpy":
        return array_api_compat.is_numpy_namespace(ns)
    if be.name == "cupy":
        return array_api_compat.is_cupy_namespace(ns)
    if be.name == "torch":
        return array_api_compat.is_torch_namespace(ns)
    if be.name == "array_api_strict":
        return array_api_compat.is_array_api_strict_namespace(ns)
    return False


def cupy_available() -> bool:
    """True when CuPy imports and at least one CUDA device answers (never raises)."""
    try:
        import cupy  # noqa: PLC0415

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDARuntimeError without a driver, ...
        return False


def _import_or_explain(module: str, backend: str, how: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {backend!r} needs the Python package {module.split('.')[0]!r}, which cannot be imported "
            f"here ({exc}). Install it with: {how}"
        ) from exc


def get_backend(name: str | Backend | None = None) -> Backend:
    """Return the :class:`Backend` called ``name``.

    Parameters
    ----------
    name : {"numpy", "cupy", "array_api_strict", "torch", "auto"} or Backend or None
        ``None`` reads ``$NNARRAY_BACKEND`` and falls back to ``"auto"``. A Backend is returned as is.

    Raises
    ------
    ValueError
        For a name that is not one of the above.
    BackendUnavailableError
        When the backend's library is not installed, or CuPy finds no CUDA device; the message says how
        to install what is missing.

    Examples
    --------
    >>> be = get_backend("numpy")
    >>> be.name, be.device
    ('numpy', 'cpu')
    >>> get_backend("jax")
    Traceback (most recent call last):
    ...
    ValueError: backend: unknown backend 'jax' (from argument); expected one of numpy, cupy, array_api_strict, torch, auto
    """
    if isinstance(name, Backend):
        return name
    source = "argument"
    if name is None:
        name = os.environ.get("NNARRAY_BACKEND") or "auto"
        source = "$NNARRAY_BACKEND" if os.environ.get("NNARRAY_BACKEND") else "default"
    if not isinstance(name, str):
        raise TypeError(f"backend: expected a backend name (str) or a Backend, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key == "strict":
        key = "array_api_strict"
    if key not in BACKEND_NAMES:
        raise ValueError(
            f"backend: unknown backend {name!r} (from {source}); expected one of {', '.join(BACKEND_NAMES)}"
        )
    if key == "auto":
        key = "cupy" if cupy_available() else "numpy"

    if key == "numpy":
        xp = importlib.import_module("array_api_compat.numpy")
        return Backend("numpy", xp, "cpu")
    if key == "cupy":
        cupy = _import_or_explain("cupy", "cupy", 'pip install "nnarray[cuda12]" (or "nnarray[cuda13]" for CUDA 13)')
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            raise BackendUnavailableError(
                f"backend 'cupy': CuPy {cupy.__version__} is installed but no CUDA device answers ({exc}). "
                f"Check the NVIDIA driver (nvidia-smi), or use {arg('backend', repr('numpy'))}."
            ) from exc
        if count == 0:
            raise BackendUnavailableError(
                f"backend 'cupy': CuPy is installed but finds no CUDA device; use {arg('backend', repr('numpy'))}."
            )
        xp = importlib.import_module("array_api_compat.cupy")
        return Backend("cupy", xp, cupy.cuda.Device())
    if key == "array_api_strict":
        xp = _import_or_explain("array_api_strict", "array_api_strict", 'pip install array-api-strict (or "nnarray[test]")')
        version = xp.get_array_api_strict_flags()["api_version"]
        if version < MIN_API_VERSION:
            raise BackendUnavailableError(
                f"backend 'array_api_strict' is set to the standard's {version} revision; nnarray needs "
                f"{MIN_API_VERSION} or later (array_api_strict.set_array_api_strict_flags(api_version={MIN_API_VERSION!r}))"
            )
        return Backend("array_api_strict", xp, xp.Device("CPU_DEVICE"))
    # torch
    torch = _import_or_explain("torch", "torch", "pip install torch")
    xp = importlib.import_module("array_api_compat.torch")
    return Backend("torch", xp, torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def to_numpy(x):
    """A host NumPy copy (or view) of ``x`` from any backend. For reporting, saving and tests."""
    import numpy as np  # noqa: PLC0415 -- host conversion, not compute

    if array_api_compat.is_numpy_array(x):
        return x
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if isinstance(x, (list, tuple, int, float)):
        return np.asarray(x)
    try:
        return np.from_dlpack(x)
    except Exception:
        return np.asarray(x)
