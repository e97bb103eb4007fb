"""Data-parallel training: the communicator protocol, a single-process default and MPI (+ NCCL).

The seed accumulates every image's ΔW, ΔB over the mini-batch by a **sum**. With P processes each
taking a contiguous share of the global batch, one all-reduce-sum of the per-process sums gives the
single-process batch gradient, so P processes reproduce one (up to the order of floating-point
additions). Everything a training loop needs from the other processes goes through a communicator:

================================  ======================================================================
``rank``, ``size``                this process's number (0..P−1) and the number of processes P
``local_rank``                    the rank among the processes on this host (selects the GPU)
``allreduce_sum(buf)``            element-wise sum over all ranks of a 1-D array, in place for NumPy and
                                  CuPy; returns the result (the same array there)
``bcast_array(buf, root=0)``      ``root``'s values into every rank's ``buf`` (in place for NumPy/CuPy)
``bcast_object(obj, root=0)``     ``root``'s picklable host object, returned on every rank
``barrier()``                     returns when every rank has called it
``abort(code=1)``                 ends every process of the job (never returns)
================================  ======================================================================

A communicator may also have ``device_id`` (the CUDA device its GPU collectives run on, or None) and
``close()`` (release what it holds before MPI shuts down); :class:`MPIComm` has both.

:class:`LocalComm` (one process: rank 0 of 1, every operation a no-op) is the default everywhere.
:class:`MPIComm` runs under ``mpiexec -n P`` through mpi4py (``pip install "nnarray[mpi]"``): NumPy
arrays go through MPI's buffer interface; CuPy arrays through NCCL (``cupy.cuda.nccl``), whose unique id
rank 0 creates and broadcasts over MPI, on the current CUDA stream, so the GPU path adds no host
synchronisation; without NCCL, CuPy arrays are staged through host memory.

:func:`allreduce_gradients` is the one call per training step: it packs every gradient into one flat
buffer (one all-reduce instead of one per parameter), reduces it and unpacks it. :func:`nnarray.fit` runs it
as the optimizer's first gradient hook (:class:`GradientAllReduce`) while it trains with P > 1.

:func:`abort_on_error` turns an exception on one rank into the end of the whole job instead of a hang
of the other ranks in their next collective; :func:`install_excepthook` does the same for an uncaught
exception, and is installed by the launcher path (``nnarray train --distributed``, or a script's own call),
never by a constructor. :func:`check_device` says when a net lives on another GPU than the communicator's.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import os
import sys
import time
import traceback
import warnings
import weakref
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Communicator",
    "LocalComm",
    "MPIComm",
    "MPIUnavailableError",
    "allreduce_gradients",
    "GradientAllReduce",
    "abort_on_error",
    "check_device",
    "get_comm",
    "install_excepthook",
]

INSTALL_HINT = 'pip install "nnarray[mpi]" (mpi4py and an MPI runtime from PyPI)'


class MPIUnavailableError(ImportError):
    """mpi4py (or the MPI library it loads) is missing; the message says how to install it."""


@runtime_checkable
class Communicator(Protocol):
    """What the training loop needs from the processes of a data-parallel job (see the module docstring)."""

    rank: int
    size: int
    local_rank: int

    def allreduce_sum(self, buf: Any) -> Any: ...

    def bcast_array(self, buf: Any, root: int = 0) -> Any: ...

    def bcast_object(self, obj: Any, root: int = 0) -> Any: ...

    def barrier(self) -> None: ...

    def abort(self, code: int = 1) -> None: ...


#: The attributes of the protocol, named in get_comm's error.
_PROTOCOL_MEMBERS = (
    *Communicator.__annotations__,
    *(n for n, v in vars(Communicator).items() if callable(v) and not n.startswith("_")),
)


class LocalComm:
    """The single-process communicator: rank 0 of 1; reductions and broadcasts return their input.

    >>> comm = LocalComm()
    >>> comm.rank, comm.size, comm.local_rank, comm.is_root
    (0, 1, 0, True)
    >>> comm.bcast_object({"seed": 3})
    {'seed': 3}
    """

    rank = 0
    size = 1
    local_rank = 0
    is_root = True
    name = "local"

    def allreduce_sum(self, buf):
        return buf

    def bcast_array(self, buf, root=0):
        _check_root(root, 1)
        return buf

    def bcast_object(self, obj, root=0):
        _check_root(root, 1)
        return obj

    def barrier(self):
        return None

    def abort(self, code=1):
        # Nothing else to end: leave like an uncaught SystemExit (runs atexit handlers).
        raise SystemExit(code)

    def __repr__(self):
        return "LocalComm()"


def _check_root(root, size):
    if not isinstance(root, int) or isinstance(root, bool) or not 0 <= root < size:
        raise ValueError(f"root: expected a rank in 0..{size - 1}, got {root!r}")


def _import_mpi():
    """``mpi4py.MPI``, or an :class:`MPIUnavailableError` naming the extra to install."""
    try:
        return importlib.import_module("mpi4py.MPI")
    except ImportError as exc:
        raise MPIUnavailableError(
            f"MPIComm needs mpi4py and an MPI library, which cannot be loaded here ({exc}). "
            f"Install them with: {INSTALL_HINT}; on a cluster, build mpi4py against the system MPI "
            "instead (pip install --no-binary mpi4py mpi4py)."
        ) from exc


class _Held:
    """What an :class:`MPIComm` must release before MPI shuts down: its host's (node) communicator and
    its NCCL communicator. Kept apart from the MPIComm so that a ``weakref.finalize`` can release it
    when the MPIComm is collected or at interpreter exit (Python's exit handlers run before mpi4py's
    ``MPI_Finalize``)."""

    def __init__(self, MPI, node):
        self.MPI = MPI
        self.node = node
        self.nccl = None

    def release(self, abandon=False):
        nccl, self.nccl = self.nccl, None
        if nccl is not None and abandon:
            nccl.abort()  # ncclCommAbort, for a job being torn down: waits for no other rank
        elif nccl is not None:
            nccl.destroy()  # ncclCommDestroy: collective over the ranks of this host
        node, self.node = self.node, None
        if node is not None and not abandon and not self.MPI.Is_finalized():
            node.Free()


class MPIComm:
    """A communicator over MPI (mpi4py), with NCCL for CuPy arrays.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm or None
        The MPI communicator; ``None`` means ``MPI.COMM_WORLD``.
    gpu : {"auto", True, False}
        ``"auto"``: when CuPy imports and sees CUDA devices, make device ``local_rank`` (modulo the
        device count) current for this process, so that a CuPy backend created afterwards computes
        on it. Create the MPIComm *before* ``get_backend("cupy")``. ``False`` leaves devices alone.
    nccl : {None, True, False}
        How CuPy arrays are reduced. ``None``: NCCL when ``cupy.cuda.nccl`` is available and the ranks
        of each host compute on distinct GPUs (told apart by their PCI bus ids, which also holds when
        ``CUDA_VISIBLE_DEVICES`` shows each rank one GPU as device 0; NCCL refuses two ranks on one GPU),
        else host staging. ``True`` requires NCCL; ``False`` always stages through host memory.

    Attributes
    ----------
    rank, size, local_rank, local_size : int
    device_id : int or None
        The CUDA device made current for this rank (``gpu``), else None.
    gpu_path : str or None
        ``"nccl"`` or ``"host-staged"`` once a CuPy array has been reduced or broadcast, else None.

    An uncaught exception on one rank leaves the others blocked in their next collective unless
    :func:`install_excepthook` was called (``nnarray train --distributed`` does). :meth:`close` releases
    the NCCL communicator; it also runs at interpreter exit, before MPI finalises.
    """

    name = "mpi"

    def __init__(self, comm=None, gpu="auto", nccl=None):
        if nccl not in (None, True, False):
            raise ValueError(f"nccl: expected None, True or False, got {nccl!r}")
        if gpu not in ("auto", True, False):
            raise ValueError(f"gpu: expected 'auto', True or False, got {gpu!r}")
        MPI = _import_mpi()
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        # The processes sharing this host's memory are the ones that may share its GPUs.
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = node.Get_rank()
        self.local_size = node.Get_size()
        self._held = _Held(MPI, node)
        self._finalizer = weakref.finalize(self, self._held.release)
        self._nccl_wanted = nccl
        self.gpu_path = None
        self.device_id = None
        if gpu:
            self.device_id = _select_gpu(self.local_rank, required=gpu is True)

    @property
    def is_root(self):
        return self.rank == 0

    def __repr__(self):
        return f"MPIComm(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"

    def close(self):
        """Destroy the NCCL communicator and free the host's communicator; idempotent.

        Every rank of a host must call it (NCCL's destroy waits for them), as at interpreter exit,
        where it runs by itself before MPI finalises. The MPIComm is unusable for CuPy arrays after.
        """
        self._finalizer()

    # ----------------------------------------------------------- collectives
    def allreduce_sum(self, buf):
        """Sum ``buf`` (a 1-D array: NumPy, CuPy, or any namespace via the host) over all ranks.

        NumPy and CuPy arrays are reduced in place and returned; other namespaces (array-api-strict,
        torch) go through a host copy and a new array of the same namespace is returned.
        """
        _check_flat(buf, "allreduce_sum")
        kind = _array_kind(buf)
        if kind == "numpy":
            self.comm.Allreduce(self._MPI.IN_PLACE, _contiguous(buf, "allreduce_sum"), op=self._MPI.SUM)
            return buf
        if kind == "cupy":
            if self._gpu_path() == "nccl":
                self._held.nccl.allReduce(
                    buf.data.ptr, buf.data.ptr, buf.size, _nccl_dtype(buf), self._nccl.NCCL_SUM, _current_stream_ptr()
                )
                return buf
            host = buf.get()  # host staging: one device->host copy, MPI, one host->device copy
            self.comm.Allreduce(self._MPI.IN_PLACE, host, op=self._MPI.SUM)
            buf.set(host)
            return buf
        return _via_host(buf, lambda h: self.comm.Allreduce(self._MPI.IN_PLACE, h, op=self._MPI.SUM))

    def bcast_array(self, buf, root=0):
        """Every rank's ``buf`` takes ``root``'s values (same shape and dtype on every rank)."""
        _check_root(root, self.size)
        kind = _array_kind(buf)
        if kind == "numpy":
            self.comm.Bcast(_contiguous(buf, "bcast_array"), root=root)
            return buf
        if kind == "cupy":
            if self._gpu_path() == "nccl":
                _contiguous_cupy(buf)
                self._held.nccl.bcast(buf.data.ptr, buf.size, _nccl_dtype(buf), root, _current_stream_ptr())
                return buf
            host = buf.get()
            self.comm.Bcast(host, root=root)
            buf.set(host)
            return buf
        return _via_host(buf, lambda h: self.comm.Bcast(h, root=root))

    def bcast_object(self, obj, root=0):
        """``root``'s ``obj`` (pickled), returned on every rank; what other ranks pass is ignored."""
        _check_root(root, self.size)
        return self.comm.bcast(obj, root=root)

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code=1):
        """End every process of the job with exit status ``code`` (``MPI_Abort``)."""
        sys.stdout.flush()
        sys.stderr.flush()
        self._finalizer.detach()
        self._held.release(abandon=True)  # NCCL's abort: the other ranks may be inside a collective
        # The launcher forwards each rank's output asynchronously and MPI_Abort kills every process at
        # once: give it a moment to pass on the traceback just written, or the user may never see why.
        time.sleep(0.25)
        self.comm.Abort(int(code))
        # Some MPI libraries return from MPI_Abort on the calling process once the launcher has been
        # told (MPICH's hydra did here); leave without unwinding so nothing reports the error twice.
        os._exit(int(code))

    # ------------------------------------------------------------------ GPU
    def _gpu_path(self):
        """Decide once, collectively, how CuPy arrays travel; create the NCCL communicator if so."""
        if self.gpu_path is not None:
            return self.gpu_path
        nccl, reason = _nccl_module()
        if reason is None and self._nccl_wanted is False:
            reason = "nccl=False"
        if self._held.node is None:
            reason = "the communicator was closed"
        else:  # every rank of the host takes part, whatever its own reason
            reason = _gpu_sharing(self._held.node, reason)
        # Every rank must take the same path: one rank without NCCL makes all of them stage.
        reasons = self.comm.allgather(reason)
        reason = next((r for r in reasons if r is not None), None)
        if reason is not None:
            if self._nccl_wanted is True:
                raise RuntimeError(f"MPIComm(nccl=True): NCCL cannot be used: {reason}")
            if self._nccl_wanted is None and self.rank == 0:
                warnings.warn(f"MPIComm: CuPy arrays are staged through host memory: {reason}", RuntimeWarning,
                              stacklevel=3)
            self.gpu_path = "host-staged"
            return self.gpu_path
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.comm.bcast(uid, root=0)
        self._nccl = nccl
        self._held.nccl = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.gpu_path = "nccl"
        return self.gpu_path


def _nccl_module():
    """``(cupy.cuda.nccl, None)``, or ``(None, why it cannot be used)``."""
    try:
        from cupy.cuda import nccl  # noqa: PLC0415
    except ImportError as exc:
        return None, f"cupy.cuda.nccl cannot be imported ({exc})"
    if not getattr(nccl, "available", True):
        return None, "CuPy was built without NCCL"
    return nccl, None


def _gpu_sharing(node, reason):
    """``reason``, or why NCCL cannot run when two ranks of this host compute on one GPU.

    Collective over ``node`` (the ranks of one host): each rank gives the PCI bus id of its current CUDA
    device (or None when it has a reason of its own). Bus ids tell GPUs apart whatever each process's
    ``CUDA_VISIBLE_DEVICES`` numbering.
    """
    bus = None
    if reason is None:
        import cupy  # noqa: PLC0415

        bus = cupy.cuda.Device().pci_bus_id
    buses = node.allgather(bus)
    if reason is not None:
        return reason
    return _shared_gpu_reason(buses)


def _shared_gpu_reason(buses):
    """Why NCCL cannot run over ranks whose GPUs have the PCI bus ids ``buses`` (local rank -> id), or None.

    >>> _shared_gpu_reason(["0000:3B:00.0", "0000:5E:00.0"]) is None
    True
    >>> _shared_gpu_reason(["0000:3B:00.0", "0000:3B:00.0"])
    'local ranks 0 and 1 share the GPU at PCI bus 0000:3B:00.0 (NCCL needs a GPU of its own per rank)'
    """
    first = {}
    for r, bus in enumerate(buses):
        if bus is None:
            continue
        if bus in first:
            return (f"local ranks {first[bus]} and {r} share the GPU at PCI bus {bus} "
                    "(NCCL needs a GPU of its own per rank)")
        first[bus] = r
    return None


def _select_gpu(local_rank, required=False):
    """Make CUDA device ``local_rank`` (modulo the count) current; its id, or None without CuPy/CUDA."""
    if importlib.util.find_spec("cupy") is None:
        if required:
            raise RuntimeError("MPIComm(gpu=True): CuPy is not installed")
        return None
    try:
        import cupy  # noqa: PLC0415

        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver: CUDARuntimeError
        if required:
            raise RuntimeError(f"MPIComm(gpu=True): no CUDA device answers ({exc})") from exc
        return None
    if count == 0:
        return None
    dev = local_rank % count
    cupy.cuda.Device(dev).use()
    return dev


def install_excepthook(comm):
    """Make an uncaught exception on this rank end the whole job (``comm.abort(1)``), with its traceback
    prefixed by the rank, instead of leaving the other ranks blocked in their next collective.

    For the launcher path: ``nnarray train --distributed`` calls it; a script run under ``mpiexec`` calls
    it once after creating its communicator. With one process the previous hook runs unchanged. Returns
    the previous ``sys.excepthook``.
    """
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if comm.size == 1:
            previous(exc_type, exc, tb)
            return
        _report(comm, exc_type, exc, tb)
        comm.abort(1)

    sys.excepthook = hook
    return previous


def _report(comm, exc_type, exc, tb):
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    prefix = f"[rank {comm.rank}/{comm.size}] "
    sys.stderr.write(
        prefix + "aborting the job after an exception on this rank:\n"
        + "".join(prefix + line + "\n" for line in text.rstrip("\n").split("\n"))
    )
    sys.stderr.flush()


@contextlib.contextmanager
def abort_on_error(comm, collective=()):
    """End the whole job when the body raises on this rank (the others would wait for it forever).

    Exceptions of the types in ``collective`` are raised on every rank at the same point by design
    (e.g. divergence detected from all-reduced metrics) and propagate normally; so do all exceptions
    when ``comm.size == 1``. Otherwise the traceback is printed with the rank and ``comm.abort(1)``
    ends every process.
    """
    try:
        yield
    except BaseException as exc:
        if comm.size == 1 or isinstance(exc, collective) or (isinstance(exc, SystemExit) and exc.code in (0, None)):
            raise
        _report(comm, type(exc), exc, exc.__traceback__)
        comm.abort(1)
        raise  # only reached by communicators whose abort returns


def get_comm(comm=None):
    """``comm`` itself, or :class:`LocalComm` for None; checks that it speaks the :class:`Communicator` protocol."""
    if comm is None:
        return LocalComm()
    if not isinstance(comm, Communicator):
        missing = [a for a in _PROTOCOL_MEMBERS if not hasattr(comm, a)]
        raise TypeError(
            "comm: expected a communicator (nnarray.distributed.MPIComm, LocalComm or another implementation of "
            f"nnarray.distributed.Communicator); {type(comm).__name__} lacks {', '.join(missing)}"
        )
    return comm


def check_device(comm, backend):
    """Raise a ValueError when ``backend``'s arrays live on another CUDA device than ``comm``'s collectives.

    ``comm.device_id`` (None or absent: no device of its own) is the GPU the communicator's rank made
    current; a net created before the communicator, or on another device, would reduce its gradients on
    the wrong GPU. Host backends are never refused.
    """
    want = getattr(comm, "device_id", None)
    have = _cuda_index(backend)
    if want is None or have is None or want == have:
        return
    raise ValueError(
        f"net: its arrays are on CUDA device {have}, but the communicator of rank {comm.rank} runs on device "
        f"{want}; create the MPIComm before get_backend('{backend.name}') and the net, so that they use its device"
    )


def _cuda_index(backend):
    """The CUDA device number of ``backend``'s arrays, or None for a host backend."""
    if not backend.is_gpu:
        return None
    index = getattr(backend.device, "id", None)  # cupy.cuda.Device
    if index is None:
        index = getattr(backend.device, "index", None)  # torch.device("cuda", i)
    if index is None:  # torch.device("cuda"): the current device
        import torch  # noqa: PLC0415 -- a device number, not compute

        index = torch.cuda.current_device()
    return index


def allreduce_gradients(grads, comm, xp):
    """Sum every gradient over all ranks with ONE all-reduce of one packed buffer.

    Parameters
    ----------
    grads : dict
        Parameter name -> gradient array (ΔW⁽ˡ⁾ of shape (n_in, n_out), ΔB⁽ˡ⁾ of shape (n_out,)), each
        this rank's sum (or share of the mean) over its rows of the global batch; one dtype.
    comm : communicator
    xp : namespace of the arrays

    Returns
    -------
    dict with the same keys and shapes: the sums over all ranks. With one process the input dict
    itself (nothing to reduce). On the GPU path everything stays on the device, in stream order.

    >>> import array_api_compat.numpy as xp
    >>> g = {"W1": xp.ones((2, 3)), "b1": xp.zeros((3,))}
    >>> allreduce_gradients(g, LocalComm(), xp) is g
    True
    """
    if comm.size == 1:
        return grads
    keys = list(grads)
    if not keys:
        return grads
    shapes = [tuple(grads[k].shape) for k in keys]
    flat = xp.concat([xp.reshape(grads[k], (-1,)) for k in keys])
    flat = comm.allreduce_sum(flat)
    out = {}
    offset = 0
    for k, shape in zip(keys, shapes, strict=True):
        n = math.prod(shape)
        out[k] = xp.reshape(flat[offset : offset + n], shape)
        offset += n
    return out


class GradientAllReduce:
    """Optimizer gradient hook (:meth:`nnarray.optim.Optimizer.add_hook`): :func:`allreduce_gradients` over ``comm``.

    Each rank's gradients (its rows' share of the global batch) become their sum over all ranks, the
    single-process gradient, before the optimizer's rule runs. :func:`nnarray.fit` adds it first, so that
    every other hook (a clip, an L2 term) sees the global gradient, and removes it when training ends.
    ``xp`` is the gradients' namespace.
    """

    def __init__(self, comm, xp):
        self.comm, self.xp = comm, xp

    def __call__(self, params, grads):
        return allreduce_gradients(grads, self.comm, self.xp)

    def __repr__(self):
        return f"GradientAllReduce(rank {self.comm.rank} of {self.comm.size})"


# ------------------------------------------------------------------ helpers
def _array_kind(buf):
    import array_api_compat  # noqa: PLC0415

    if array_api_compat.is_numpy_array(buf):
        return "numpy"
    if array_api_compat.is_cupy_array(buf):
        return "cupy"
    return "other"


def _check_flat(buf, what):
    shape = getattr(buf, "shape", None)
    if shape is None or len(shape) != 1:
        raise ValueError(f"{what}: expected a 1-D array (pack arrays with allreduce_gradients), got shape {shape}")


def _contiguous(buf, what):
    if not buf.flags.c_contiguous or not buf.flags.writeable:
        raise ValueError(f"{what}: the buffer must be a writeable, C-contiguous array (it is reduced in place)")
    return buf


def _contiguous_cupy(buf):
    if not buf.flags.c_contiguous:
        raise ValueError("the CuPy buffer must be C-contiguous (it is reduced in place)")


def _nccl_dtype(buf):
    from cupy.cuda import nccl  # noqa: PLC0415

    _contiguous_cupy(buf)
    codes = {
        "float16": nccl.NCCL_FLOAT16,
        "float32": nccl.NCCL_FLOAT32,
        "float64": nccl.NCCL_FLOAT64,
        "int32": nccl.NCCL_INT32,
        "int64": nccl.NCCL_INT64,
    }
    try:
        return codes[buf.dtype.name]
    except KeyError:
        raise TypeError(f"NCCL all-reduce: unsupported dtype {buf.dtype.name}") from None


def _current_stream_ptr():
    import cupy  # noqa: PLC0415

    return cupy.cuda.get_current_stream().ptr


def _via_host(buf, op):
    """Run the MPI ``op`` on a host copy of ``buf`` (any namespace) and return an array like ``buf``."""
    import array_api_compat  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415 -- host staging, not compute

    from .backend import to_numpy  # noqa: PLC0415

    host = np.ascontiguousarray(to_numpy(buf)).copy()
    op(host)
    xp = array_api_compat.array_namespace(buf)
    return xp.asarray(host, device=array_api_compat.device(buf))

