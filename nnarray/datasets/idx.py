"""Reading and writing the IDX file format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number ``00 00 <type> <ndim>``, then ``ndim`` big-endian
uint32 dimension sizes, then ``prod(dims)`` big-endian items of the type given by the
type code. Files may be gzip-compressed; compression is detected from the gzip magic
bytes ``1f 8b``, never from the file name.

=========  ============
type code  NumPy dtype
=========  ============
0x08       uint8
0x09       int8
0x0B       int16 (big-endian)
0x0C       int32 (big-endian)
0x0D       float32 (big-endian)
0x0E       float64 (big-endian)
=========  ============
"""

from __future__ import annotations

import gzip as _gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from .._files import atomic_write
from .errors import DatasetError

__all__ = ["IDX_TYPES", "read_idx", "write_idx"]

#: IDX type code -> big-endian NumPy dtype.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}

_GZIP_MAGIC = b"\x1f\x8b"


def _type_name(dtype: np.dtype) -> str:
    return dtype.newbyteorder("=").name


def _shape_str(dims: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in dims) if len(dims) else "scalar"


def _known_codes() -> str:
    return ", ".join(f"0x{c:02X} ({_type_name(d)})" for c, d in IDX_TYPES.items())


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped if it starts with the gzip magic bytes."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except IsADirectoryError as e:
        raise DatasetError(f"{path}: expected an IDX file, found a directory") from e
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return _gzip.decompress(raw)
    except (EOFError, zlib.error, _gzip.BadGzipFile) as e:
        raise DatasetError(
            f"{path}: corrupt gzip stream ({len(raw)} compressed bytes): expected a complete gzip "
            f"file, found {type(e).__name__}: {e} (truncated or damaged download? delete it and fetch it again)"
        ) from e


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a NumPy array.

    Parameters
    ----------
    path : str or path-like
        The file. Gzip compression is detected from the content, not the name.

    Returns
    -------
    numpy.ndarray
        A writeable array of shape ``dims`` (e.g. ``(60000, 28, 28)`` for MNIST training
        images, ``(60000,)`` for its labels) in native byte order, with the dtype of the
        file's type code (``uint8`` for MNIST).

    Raises
    ------
    DatasetError
        The file is not a valid IDX file: bad magic number, unknown type code, zero
        dimensions, truncated header or data, trailing bytes, or a corrupt gzip stream.
        The message names the file, what was expected and what was found.
    FileNotFoundError
        The file does not exist.
    """
    return _read_idx(path, writeable=True)


def _read_idx(path: str | os.PathLike, writeable: bool) -> np.ndarray:
    """:func:`read_idx`; with ``writeable=False`` a uint8 result may be a read-only view (no copy)."""
    path = Path(path)
    data = _read_bytes(path)
    n = len(data)
    if n < 4:
        raise DatasetError(
            f"{path}: truncated IDX file: expected a 4-byte magic number (00 00 <type> <ndim>), found {n} bytes"
        )
    if data[0] != 0 or data[1] != 0:
        raise DatasetError(
            f"{path}: not an IDX file: expected magic number 00 00 <type> <ndim>, "
            f"found {data[:4].hex(' ')}"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise DatasetError(
            f"{path}: unknown IDX type code: expected one of {_known_codes()}, found 0x{code:02X}"
        )
    if ndim == 0:
        raise DatasetError(f"{path}: bad IDX header: expected at least 1 dimension, found 0")
    header = 4 + 4 * ndim
    if n < header:
        raise DatasetError(
            f"{path}: truncated IDX file: header declares {ndim} dimensions = {header} header bytes, found {n}"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    found = n - header
    if found != expected:
        what = "truncated IDX file" if found < expected else "trailing bytes in IDX file"
        extra = "" if found < expected else f" ({found - expected} extra)"
        raise DatasetError(
            f"{path}: {what}: header says {_shape_str(dims)} {_type_name(dtype)} = "
            f"{expected} data bytes, found {found}{extra}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    if dtype.itemsize == 1 and not writeable:
        return arr
    # Native byte order and writeable (frombuffer over bytes is read-only): one copy.
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray, gzip: bool = False) -> Path:
    """Write ``array`` as an IDX file, atomically (temporary file + ``os.replace``).

    Parameters
    ----------
    path : str or path-like
        Destination file; its directory must exist.
    array : array_like
        At least 1-D, of dtype uint8, int8, int16, int32, float32 or float64 (cast int64
        labels to uint8 first), each dimension < 2**32.
    gzip : bool
        Gzip-compress the file (deterministically: no timestamp in the header).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    arr = np.asarray(array)
    native = arr.dtype.newbyteorder("=")
    if native not in _CODES:
        raise ValueError(
            f"{path}: cannot write dtype {arr.dtype} as IDX: expected one of "
            f"{', '.join(_type_name(d) for d in IDX_TYPES.values())}"
        )
    if arr.ndim < 1 or arr.ndim > 255:
        raise ValueError(f"{path}: cannot write a {arr.ndim}-D array as IDX: expected 1 to 255 dimensions")
    if any(d >= 2**32 for d in arr.shape):
        raise ValueError(f"{path}: cannot write shape {arr.shape} as IDX: each dimension must be < 2**32")
    code = _CODES[native]
    blob = (
        bytes([0, 0, code, arr.ndim])
        + np.asarray(arr.shape, dtype=">u4").tobytes()
        + np.ascontiguousarray(arr, dtype=IDX_TYPES[code]).tobytes()
    )
    if gzip:
        blob = _gzip.compress(blob, mtime=0)
    atomic_write(path, lambda f: f.write(blob))
    return path


