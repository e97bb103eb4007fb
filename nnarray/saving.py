"""Saving and loading: models (:func:`save` / :func:`load`) and training checkpoints.

Both are portable ``.npz`` files of host NumPy arrays plus a JSON header, so a network trained on a GPU
loads on a CPU-only machine. Files are written atomically: to a temporary file in the same directory,
flushed to disk, then renamed over the target, so an interrupted save never leaves a half-written file
and never destroys the previous good one.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ._files import NpzError, atomic_write, read_npz
from .backend import Backend, get_backend

if TYPE_CHECKING:
    from .history import History
    from .model import MLP
    from .optim import Optimizer

__all__ = [
    "save",
    "load",
    "save_checkpoint",
    "load_checkpoint",
    "save_history",
    "load_history",
    "save_history_csv",
    "CheckpointError",
    "atomic_write",
]

MODEL_FORMAT = "nnarray-model"
CHECKPOINT_FORMAT = "nnarray-checkpoint"
HISTORY_FORMAT = "nnarray-history"
# 2: optimizer state as "opt/<state name>/<key>" arrays and any optimizer type; 1 had SGD velocities only.
FORMAT_VERSION = 2


class CheckpointError(ValueError):
    """A model or checkpoint file is missing, truncated, corrupt or of another format."""


def _write_npz(path, header, arrays):
    """Write the header and numeric host arrays; anything else is refused before the file is touched, and
    NumPy is told never to pickle, so no file of pickled objects can be written."""
    for key, v in arrays.items():
        if not isinstance(v, np.ndarray) or v.dtype.kind not in "biuf":
            raise TypeError(
                f"save: {key!r} is not a numeric host array (got {type(v).__name__} of dtype "
                f"{getattr(v, 'dtype', '?')}); nothing was written to {os.fspath(path)}"
            )
    payload = {"__header__": np.asarray(json.dumps(header))}
    payload.update(arrays)
    atomic_write(path, lambda f: np.savez(f, allow_pickle=False, **payload))


def _read_npz(path, *formats):
    """The header and arrays of an nnarray file of one of ``formats`` (a :class:`CheckpointError` otherwise)."""
    path = os.fspath(path)
    try:
        files = read_npz(path)
    except NpzError as exc:
        if exc.kind == "missing":
            raise CheckpointError(f"{path}: no such file") from None
        raise CheckpointError(f"{path}: not a readable nnarray file ({exc})") from exc
    if "__header__" not in files:
        raise CheckpointError(f"{path}: an .npz file but not one written by nnarray (no header)")
    try:
        header = json.loads(str(files.pop("__header__")))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt header ({exc})") from exc
    fmt = header.get("format") if isinstance(header, dict) else None
    if fmt not in formats:
        hint = " (use load_checkpoint for training checkpoints)" if fmt == CHECKPOINT_FORMAT else ""
        raise CheckpointError(f"{path}: expected a {' or '.join(map(repr, formats))} file, got format {fmt!r}{hint}")
    if header.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer nnarray (format version {header['version']})")
    return header, files


def _model_header(net):
    return {"layer_sizes": net.layer_sizes, "dtype": net.dtype_name, "dropout": list(getattr(net, "dropout", []))}


def _net_from(header, arrays, path, backend, prefix=""):
    from .model import MLP  # noqa: PLC0415 -- model imports io-free modules only; avoid a cycle

    try:
        sizes, dtype = header["layer_sizes"], header["dtype"]
    except KeyError as exc:
        raise CheckpointError(f"{path}: header lacks {exc}") from None
    try:
        # A header without a dropout rate describes a network without dropout.
        net = MLP(sizes, backend=backend, dtype=dtype, seed=0, dropout=header.get("dropout") or 0.0)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt model header ({exc})") from None
    state = {}
    for k in net.params:
        if prefix + k not in arrays:
            raise CheckpointError(f"{path}: parameter {k!r} is missing")
        state[k] = arrays[prefix + k]
    try:
        net.load_state_dict(state)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return net


def save(net: MLP, path: str | os.PathLike[str]) -> None:
    """Write the model (parameters, layer sizes, dtype, dropout rates) to ``path`` as an ``.npz``, atomically."""
    header = {"format": MODEL_FORMAT, "version": FORMAT_VERSION, **_model_header(net)}
    _write_npz(path, header, net.state_dict())


def load(path: str | os.PathLike[str], backend: str | Backend | Any = None) -> MLP:
    """Read a model written by :func:`save` (or the model inside a checkpoint) onto ``backend``.

    ``backend`` is checked first (a name of :func:`~nnarray.backend.get_backend`, a Backend or None), so a wrong
    one is blamed as the argument it is, never as the file.
    """
    backend = get_backend(backend)
    path = os.fspath(path)
    header, arrays = _read_npz(path, MODEL_FORMAT, CHECKPOINT_FORMAT)
    prefix = ""
    if header["format"] == CHECKPOINT_FORMAT:  # the model inside a training checkpoint
        header, prefix = header.get("model", {}), "param/"
    return _net_from(header, arrays, path, backend, prefix)


def save_checkpoint(path: str | os.PathLike[str], net: MLP, opt: Optimizer, rng: np.random.Generator,
                    history: History, config: dict[str, Any] | None = None) -> None:
    """Write a training checkpoint: parameters, optimizer state, RNG state, history and run config.

    ``rng`` is the ``numpy.random.Generator`` that draws the epoch permutations; restoring its state
    makes a resumed run see exactly the batches an uninterrupted one would.
    """
    opt_state = opt.state_dict()
    arrays = {f"param/{k}": v for k, v in net.state_dict().items()}
    for name, per_key in opt_state.pop("state").items():
        arrays.update({f"opt/{name}/{k}": v for k, v in per_key.items()})
    header = {
        "format": CHECKPOINT_FORMAT,
        "version": FORMAT_VERSION,
        "model": _model_header(net),
        "optimizer": opt_state,
        "rng": rng.bit_generator.state,
        "history": history.to_dict(),
        "epoch": history.epoch[-1] if len(history) else 0,
        "config": config or {},
    }
    _write_npz(path, header, arrays)


def load_checkpoint(path: str | os.PathLike[str], backend: str | Backend | Any = None) -> dict[str, Any]:
    """Read a checkpoint. Returns a dict: ``net``, ``opt``, ``rng``, ``history``, ``epoch``, ``config``.

    ``backend`` is checked before the file is read, as in :func:`load`.
    """
    from .history import History  # noqa: PLC0415
    from .optim import from_state_dict  # noqa: PLC0415

    backend = get_backend(backend)  # a wrong backend is the argument's fault, not the file's
    path = os.fspath(path)
    header, arrays = _read_npz(path, CHECKPOINT_FORMAT)
    net = _net_from(header.get("model", {}), arrays, path, backend, prefix="param/")
    opt_header = dict(header.get("optimizer", {}))
    if header.get("version", 1) < 2:  # version 1: SGD only, hyperparameters flat, "velocity/<key>" arrays
        opt_header = {
            "type": opt_header.get("type", "SGD"),
            "hyperparameters": {"lr": opt_header.get("lr", 0.1), "momentum": opt_header.get("momentum", 0.0)},
            "state": {"velocity": {k[len("velocity/") :]: v for k, v in arrays.items() if k.startswith("velocity/")}},
        }
    else:
        state: dict[str, Any] = {}
        for key, v in arrays.items():
            if key.startswith("opt/"):
                name, _, k = key[len("opt/") :].partition("/")
                state.setdefault(name, {})[k] = v
        opt_header["state"] = state
    try:
        opt = from_state_dict(opt_header, backend=net.backend, dtype=net.dtype)
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: optimizer state: {exc}") from None
    try:
        rng = np.random.default_rng()
        rng.bit_generator.state = header["rng"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: corrupt RNG state ({exc})") from None
    try:
        history = History.from_dict(header.get("history", {}))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return {
        "net": net,
        "opt": opt,
        "rng": rng,
        "history": history,
        "epoch": int(header.get("epoch", 0)),
        "config": header.get("config", {}),
    }


def save_history(path: str | os.PathLike[str], history: History, meta: dict[str, Any] | None = None) -> None:
    """Write ``history`` as JSON (columns as in :class:`~nnarray.history.History`), atomically.

    ``meta``: extra JSON-ready entries (the run's config, the backend, a confusion matrix, ...).
    """
    doc = {"format": HISTORY_FORMAT, "version": FORMAT_VERSION, **(meta or {}), "history": history.to_dict()}
    text = json.dumps(doc, indent=1)
    atomic_write(path, lambda f: f.write(text.encode()))


def load_history(path: str | os.PathLike[str]) -> tuple[History, dict[str, Any]]:
    """Read a file written by :func:`save_history`: returns ``(history, meta)``."""
    from .history import History  # noqa: PLC0415

    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        if doc.get("format") != HISTORY_FORMAT:
            raise ValueError(f"expected format {HISTORY_FORMAT!r}, got {doc.get('format')!r}")
        history = History.from_dict(doc.pop("history"))
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{path}: not a readable nnarray history file ({exc})") from None
    doc.pop("format", None)
    doc.pop("version", None)
    return history, doc


def save_history_csv(path, history):
    """Write ``history`` as CSV (a header of the columns of :class:`~nnarray.history.History`, a row per epoch).

    Missing values (no validation set) are empty fields. For spreadsheets and ``pandas.read_csv``; the JSON
    file of :func:`save_history` remains the one :func:`load_history` reads.
    """
    import csv  # noqa: PLC0415
    import io as _io  # noqa: PLC0415

    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(history.KEYS)
    for record in history.records():
        writer.writerow(["" if record[k] is None else repr(record[k]) for k in history.KEYS])
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))
