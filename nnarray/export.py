"""ONNX export from the network's own forward code: :func:`export_onnx`.

ndonnx's arrays may be *symbolic*: an input of an ONNX graph, with a shape such as ``("N", n_in)`` and no
value. Every operation on one records an ONNX node instead of computing. :func:`export_onnx` moves the
parameters to ndonnx (constants of the graph), runs :meth:`nnarray.MLP.forward` — the same code that trains
and predicts on every backend, no second copy of the network — and the softmax of
:func:`nnarray.functions.softmax` on a symbolic X, and writes the recorded graph: input ``"X"`` (N, n_in) of
the network's dtype with a dynamic batch dimension N, output ``"Y"`` (N, C), the class probabilities that
:meth:`nnarray.MLP.predict` returns. Any ONNX runtime (onnxruntime, ...) then runs it without nnarray.

Needs the ``onnx`` extra: ``pip install "nnarray[onnx]"`` (ndonnx and onnx).
"""

from __future__ import annotations

import importlib
import importlib.util
import os

from . import functions as F
from ._files import atomic_write
from .backend import get_backend

__all__ = ["export_onnx", "ONNX_INPUT", "ONNX_OUTPUT"]

#: Names of the exported graph's input (X, (N, n_in)) and output (Y, (N, C) class probabilities).
ONNX_INPUT, ONNX_OUTPUT = "X", "Y"


def _require_onnx_extra():
    """ndonnx and onnx, or an ImportError naming the ``onnx`` extra (checked before any work)."""
    missing = [m for m in ("ndonnx", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"export_onnx needs {' and '.join(missing)}, which cannot be imported here; "
            'install the onnx extra: pip install "nnarray[onnx]"'
        )
    return importlib.import_module("ndonnx")


def export_onnx(net, path):
    """Write ``net`` as an ONNX model at ``path`` (atomically) and return ``path``.

    The graph is :meth:`~nnarray.MLP.forward` followed by the softmax, recorded on ndonnx's symbolic arrays
    (see the module docstring): input ``"X"`` (N, n_in), output ``"Y"`` (N, C) = ``net.predict(X)``, for
    any N, in the network's dtype. The network may live on any backend (its parameters are read back to
    the host once); dropout is a training-only operation and is not part of the graph.

    >>> import nnarray as nn, onnxruntime as ort, numpy as np, tempfile, os
    >>> net = nn.MLP([4, 8, 3], backend="numpy", seed=0)
    >>> path = nn.export_onnx(net, os.path.join(tempfile.mkdtemp(), "net.onnx"))
    >>> X = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    >>> Y = ort.InferenceSession(path).run(None, {"X": X})[0]
    >>> Y.shape, bool(np.allclose(Y, net.predict(X), rtol=1e-5, atol=1e-6))
    ((5, 3), True)
    """
    from .model import MLP  # noqa: PLC0415 -- model imports backend-level modules only

    if not isinstance(net, MLP):
        raise TypeError(f"net: expected an nnarray MLP, got {type(net).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}")
    ndx = _require_onnx_extra()
    symbolic = net.to(get_backend("ndonnx"))  # the parameters become constants of the graph
    X = ndx.argument(shape=("N", net.n_in), dtype=symbolic.dtype)
    A, _ = symbolic.forward(X)
    Y = F.softmax(symbolic.xp, A)
    model = ndx.build({ONNX_INPUT: X}, {ONNX_OUTPUT: Y})
    data = model.SerializeToString()
    atomic_write(path, lambda f: f.write(data))
    return path
