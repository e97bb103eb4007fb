"""Backends: which array namespace (and device) the network computes with.

A :class:`Backend` bundles an Array API namespace ``xp`` with the device its arrays live on.
Every compute function in nnarray receives its namespace from a Backend (or from its arrays)
and never imports NumPy or CuPy itself, so one code path serves every backend.

:func:`get_backend` takes a library's name, any Array API namespace, or an array of one:

=====================  ===========================================================
``"numpy"``            NumPy on the host, through ``array_api_compat.numpy``
``"cupy"``             CuPy on the current CUDA device, through ``array_api_compat.cupy``
``"array_api_strict"`` the standard's reference namespace (conformance testing)
``"torch"``            PyTorch through ``array_api_compat.torch`` (CUDA if available, else CPU)
``"jax"``              ``jax.numpy`` on JAX's default device; float64 needs JAX's 64-bit mode
                       (``jax.config.update("jax_enable_x64", True)``), which nnarray never switches on
``"dask"``             Dask arrays through ``array_api_compat.dask.array``: lazy, chunked inference
                       (:func:`nnarray.fit` refuses them, see :func:`nnarray.train.fit`)
``"ndonnx"``           ndonnx, whose arrays may be symbolic: :func:`nnarray.export_onnx` runs the
                       network on them to write an ONNX model
``"auto"``             ``"cupy"`` when CuPy imports and a CUDA device answers, else ``"numpy"``
a namespace            ``get_backend(xp)`` for any namespace that implements the standard
                       (``numpy``, ``torch``, ``jax.numpy``, ``sparse``, ...; wrapped by array-api-compat
                       where it needs to be), on its default device unless ``device=`` says otherwise
an array               ``get_backend(x)``: ``x``'s namespace on ``x``'s device
=====================  ===========================================================

The default name comes from ``$NNARRAY_BACKEND``, else ``"auto"``. Several backends can be
used side by side in one process; nothing is selected globally.

What a library needs: the standard's 2024.12 revision or later (directly or through array-api-compat),
``__array_namespace_info__`` (the index dtype and the dtypes offered come from it), and a route to host
NumPy for saving and reporting (:func:`to_numpy`: DLPack, or one of the routes listed there).
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import array_api_compat

from .words import arg

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "BACKEND_NAMES",
    "get_backend",
    "cupy_available",
    "index_dtype",
    "to_numpy",
]

#: An array of one of the Array API libraries (the standard defines no static array type).
Array: TypeAlias = Any
#: An Array API namespace (``numpy``, ``array_api_strict``, ``array_api_compat.torch``, ...).
Namespace: TypeAlias = Any

BACKEND_NAMES = ("numpy", "cupy", "array_api_strict", "torch", "jax", "dask", "ndonnx", "auto")

#: The oldest revision of the standard the compute code is written for (it passes Python scalars to
#: ``maximum``, allowed from 2024.12 on).
MIN_API_VERSION = "2024.12"

#: Per library: the namespace module :func:`get_backend` imports for its name, and how to install it.
_NAMESPACES = {
    "numpy": ("array_api_compat.numpy", "pip install numpy"),
    "array_api_strict": ("array_api_strict", 'pip install array-api-strict (or "nnarray[test]")'),
    "torch": ("array_api_compat.torch", "pip install torch"),
    "jax": ("jax.numpy", 'pip install "jax[cpu]" (or "jax[cuda12]" for NVIDIA GPUs)'),
    "dask": ("array_api_compat.dask.array", 'pip install "dask[array]"'),
    "ndonnx": ("ndonnx", 'pip install "nnarray[onnx]"'),
}

#: What to do when a library lacks a dtype the network asks for (see :meth:`Backend.dtype`).
_DTYPE_HINTS = {
    "jax": "JAX offers float64 only in its 64-bit mode: call jax.config.update('jax_enable_x64', True) "
    "(or set JAX_ENABLE_X64=1) before creating any array, or use dtype='float32'",
}


class BackendUnavailableError(RuntimeError):
    """A known backend was asked for, but its library or its device is missing here."""


def library_name(xp: Namespace) -> str:
    """The short name of namespace ``xp``'s library: ``"numpy"`` for ``array_api_compat.numpy``,
    ``"jax"`` for ``jax.numpy``, ``"dask"`` for ``array_api_compat.dask.array``, ``"sparse"``, ...

    >>> import array_api_compat.numpy as xp
    >>> library_name(xp)
    'numpy'
    """
    name = getattr(xp, "__name__", None) or type(xp).__name__
    return name.removeprefix("array_api_compat.").split(".")[0]


def index_dtype(xp: Namespace, device: Any = None) -> Any:
    """The namespace's default index dtype on ``device`` (``int64`` on most libraries; ``int32`` on JAX
    outside its 64-bit mode), from the standard's inspection API; ``xp.int64`` for a namespace without it."""
    if hasattr(xp, "__array_namespace_info__"):
        return xp.__array_namespace_info__().default_dtypes(device=device)["indexing"]
    return xp.int64


@dataclass(frozen=True)
class Backend:
    """An Array API namespace and the device the network's arrays live on.

    Attributes
    ----------
    name : str
        The library's short name (``"numpy"``, ``"cupy"``, ``"array_api_strict"``, ``"torch"``, ``"jax"``,
        ``"dask"``, ``"ndonnx"``, or that of any other namespace; never ``"auto"``).
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
        kind = getattr(self.device, "type", None) or getattr(self.device, "platform", None) or str(self.device)
        return str(kind) in ("cuda", "gpu")

    @property
    def index_dtype(self) -> Any:
        """The dtype of index and label arrays here (:func:`index_dtype`): int32 on JAX without 64-bit mode."""
        return index_dtype(self.xp, self.device)

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
        version = getattr(sys.modules.get(self.name), "__version__", None)
        return f"{self.name}{' ' + version if version else ''} ({self.device})"

    def asarray(self, x: Any, dtype: Any = None, copy: bool | None = None) -> Array:
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

    def dtype(self, name: str | Any) -> Any:
        """The namespace's dtype for ``name`` (``"float32"``, ``"float64"``) or a dtype object.

        A dtype the library does not offer on this device (the inspection API's ``dtypes()``) is refused
        with a TypeError saying what to do (float64 on JAX outside its 64-bit mode).
        """
        if isinstance(name, str):
            dt = getattr(self.xp, name, None)
            if dt is None:
                raise TypeError(f"dtype: unknown dtype name {name!r} for backend {self.name!r}")
            self._check_offered(name)
            return dt
        # NumPy dtype objects, np.float32 and the like: map through their name.
        nm = getattr(name, "name", None) or getattr(name, "__name__", None)
        if nm is not None and hasattr(self.xp, str(nm)):
            return self.dtype(str(nm))
        return name

    def _check_offered(self, name):
        if not hasattr(self.xp, "__array_namespace_info__"):
            return
        offered = self.xp.__array_namespace_info__().dtypes(device=self.device, kind=None)
        if name not in offered:
            hint = _DTYPE_HINTS.get(self.name, "use a dtype it offers")
            raise TypeError(
                f"dtype: backend {self.name!r} offers no {name} on {self.device} "
                f"(it offers {', '.join(sorted(offered))}); {hint}"
            )

    def __eq__(self, other):
        return isinstance(other, Backend) and self.name == other.name and str(self.device) == str(other.device)

    def __hash__(self):
        return hash((self.name, str(self.device)))


def _belongs_to(x: Any, be: Backend) -> bool:
    """True when ``x`` is an array of ``be``'s own namespace (array-api-compat's view of its library)."""
    if not array_api_compat.is_array_api_obj(x):
        return False
    return array_api_compat.array_namespace(x) is be.xp


def cupy_available() -> bool:
    """True when CuPy imports and at least one CUDA device answers (never raises)."""
    try:
        import cupy  # noqa: PLC0415

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDARuntimeError without a driver, ...
        return False


def _import_or_explain(module: str, backend: str, how: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {backend!r} needs the Python package {module.split('.')[0]!r}, which cannot be imported "
            f"here ({exc}). Install it with: {how}"
        ) from exc


def get_backend(name: str | Backend | Namespace | Array | None = None, device: Any = None) -> Backend:
    """Return the :class:`Backend` for ``name``: a library's name, a namespace, an array, or a Backend.

    Parameters
    ----------
    name : str or namespace or array or Backend or None
        One of ``BACKEND_NAMES`` (see the module docstring); any Array API namespace (``numpy``,
        ``jax.numpy``, ``array_api_strict``, ...); an array, whose namespace and device are taken; a Backend
        (returned as is unless ``device`` is given). ``None`` reads ``$NNARRAY_BACKEND`` and falls back to
        ``"auto"``.
    device : optional
        The device for the arrays, in the library's own terms (``torch.device("cuda:1")``, a JAX device,
        ...); default: the library's default device (for an array: its device).

    Raises
    ------
    ValueError
        For a name that is not one of ``BACKEND_NAMES``.
    TypeError
        For an object that is neither a name, a namespace nor an array.
    BackendUnavailableError
        When the backend's library is not installed, or CuPy finds no CUDA device; the message says how
        to install what is missing.

    Examples
    --------
    >>> be = get_backend("numpy")
    >>> be.name, be.device
    ('numpy', 'cpu')
    >>> import array_api_strict
    >>> get_backend(array_api_strict).name
    'array_api_strict'
    >>> get_backend("tensorflow")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: backend: unknown backend 'tensorflow' (from argument); expected one of numpy, ..., auto, ...
    """
    if isinstance(name, Backend):
        return name if device is None else Backend(name.name, name.xp, device)
    if name is None or isinstance(name, str):
        return _named_backend(name, device)
    if array_api_compat.is_array_api_obj(name):
        xp = array_api_compat.array_namespace(name)
        return _namespace_backend(xp, array_api_compat.device(name) if device is None else device)
    if callable(getattr(name, "asarray", None)):
        return _namespace_backend(_compat_namespace(name), device)
    raise TypeError(
        f"backend: expected a backend name ({', '.join(BACKEND_NAMES)}), an Array API namespace, an array "
        f"or a Backend, got {type(name).__name__}"
    )


def _compat_namespace(xp):
    """The namespace nnarray computes with for library namespace ``xp``: array-api-compat's wrapper where
    the library needs one (``numpy`` → ``array_api_compat.numpy``), else ``xp`` itself (as array-api-compat
    answers for an array ``xp`` makes)."""
    return array_api_compat.array_namespace(xp.asarray(0.0))


def _namespace_backend(xp, device):
    """A Backend for a (compat) namespace: its library's name, ``device`` or the namespace's default."""
    version = getattr(xp, "__array_api_version__", None)
    if version is None or version < MIN_API_VERSION:
        raise BackendUnavailableError(
            f"backend {library_name(xp)!r} implements the standard's {version} revision; nnarray needs "
            f"{MIN_API_VERSION} or later"
        )
    if device is None:
        device = _default_device(xp)
    return Backend(library_name(xp), xp, device)


def _default_device(xp):
    """The namespace's default device (inspection API), or where it puts a new array when that says None."""
    if hasattr(xp, "__array_namespace_info__"):
        device = xp.__array_namespace_info__().default_device()
        if device is not None:
            return device
    return array_api_compat.device(xp.asarray(0.0))


def _named_backend(name, device):
    source = "argument"
    if name is None:
        name = os.environ.get("NNARRAY_BACKEND") or "auto"
        source = "$NNARRAY_BACKEND" if os.environ.get("NNARRAY_BACKEND") else "default"
    key = name.strip().lower().replace("-", "_")
    if key == "strict":
        key = "array_api_strict"
    if key not in BACKEND_NAMES:
        raise ValueError(
            f"backend: unknown backend {name!r} (from {source}); expected one of {', '.join(BACKEND_NAMES)}, "
            "or an Array API namespace (get_backend(xp)) or an array of one"
        )
    if key == "auto":
        key = "cupy" if cupy_available() else "numpy"
    if key == "cupy":
        return _cupy_backend(device)
    module, how = _NAMESPACES[key]
    xp = _import_or_explain(module, key, how)
    if key == "torch" and device is None:
        torch = importlib.import_module("torch")
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "array_api_strict":
        version = xp.get_array_api_strict_flags()["api_version"]
        if version < MIN_API_VERSION:
            raise BackendUnavailableError(
                f"backend 'array_api_strict' is set to the standard's {version} revision; nnarray needs "
                f"{MIN_API_VERSION} or later "
                f"(array_api_strict.set_array_api_strict_flags(api_version={MIN_API_VERSION!r}))"
            )
    return _namespace_backend(xp, device)


def _cupy_backend(device):
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
    return Backend("cupy", xp, cupy.cuda.Device() if device is None else device)


# Routes from a library's arrays to host NumPy, tried in this order (the first whose test matches):
#
#   library        test                         route                         why not the standard's DLPack
#   CuPy           is_cupy_array                x.get()                       NumPy cannot import CUDA memory
#   PyTorch        is_torch_array               x.detach().cpu().numpy()      DLPack refuses tensors needing grad
#   ndonnx         is_ndonnx_array              x.unwrap_numpy()              ndonnx exports no DLPack; symbolic
#                                                                             arrays have no value (ValueError)
#   Dask           is_dask_array                x.compute()                   lazy: computes the graph, by chunks
#   pydata sparse  is_pydata_sparse_array       x.todense()                   no dense buffer to share
#   JAX            is_jax_array                 jax.device_get(x)             works from a GPU too; DLPack to the
#                                                                             host would need a cross-device export
#   the rest       has __dlpack__               numpy.from_dlpack(x, device="cpu", copy=None)
#                                                (array-api-strict, ...): the standard's route; ``device="cpu"``
#                                                asks the producer for a host copy when x is on an accelerator
#
# NumPy arrays are returned as they are. Anything else is refused with a TypeError naming its library; so is
# a result that is not numeric (so that no library's array becomes a file of pickled objects).
_HOST_ROUTES = (
    (array_api_compat.is_cupy_array, lambda x: x.get()),
    (array_api_compat.is_torch_array, lambda x: x.detach().cpu().numpy()),
    (array_api_compat.is_ndonnx_array, lambda x: _ndonnx_to_host(x)),
    (array_api_compat.is_dask_array, lambda x: x.compute()),
    (array_api_compat.is_pydata_sparse_array, lambda x: x.todense()),
    (array_api_compat.is_jax_array, lambda x: _jax_to_host(x)),
)


def to_numpy(x: Array) -> Any:
    """A host NumPy copy (or view) of ``x`` from any backend, of a numeric or boolean dtype (NumPy input as is).

    For reporting, saving and tests. Python scalars and sequences become NumPy arrays. See the table of
    routes above; an array with none raises TypeError naming its library.
    """
    import numpy as np  # noqa: PLC0415 -- host conversion, not compute

    if isinstance(x, (list, tuple, int, float, bool)):
        return np.asarray(x)
    if array_api_compat.is_numpy_array(x):
        return x  # as given (sklearn's label arrays may be of dtype object)
    route = next((to_host for test, to_host in _HOST_ROUTES if test(x)), None)
    if route is None and hasattr(x, "__dlpack__"):
        route = _from_dlpack
    if route is None:
        raise TypeError(
            f"to_numpy: no route from {_library_of(x)} arrays ({type(x).__module__}.{type(x).__name__}) to host "
            "NumPy: they implement no DLPack (__dlpack__) and nnarray knows no conversion of their own"
        )
    out = route(x)
    if not isinstance(out, np.ndarray) or out.dtype.kind not in "biufc":
        raise TypeError(
            f"to_numpy: {_library_of(x)} gave no numeric host array for a {type(x).__name__} "
            f"(got {type(out).__name__} of dtype {getattr(out, 'dtype', '?')})"
        )
    return out


def _ndonnx_to_host(x):
    try:
        return x.unwrap_numpy()
    except ValueError as exc:  # a symbolic array (an input of a graph being built): no value exists
        raise TypeError(f"to_numpy: this ndonnx array has no value to read back (a symbolic array?): {exc}") from exc


def _jax_to_host(x):
    import jax  # noqa: PLC0415 -- only for JAX's own arrays

    return jax.device_get(x)


def _from_dlpack(x):
    import numpy as np  # noqa: PLC0415

    return np.from_dlpack(x, device="cpu", copy=None)


def _library_of(x: Any) -> str:
    if array_api_compat.is_array_api_obj(x):
        return library_name(array_api_compat.array_namespace(x))
    return type(x).__module__.split(".")[0]
