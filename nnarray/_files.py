"""Files: atomic writes (a crash or a full disk never leaves a half-written file in place of a good one) and
a safe reader of ``.npz`` archives (never unpickles)."""

from __future__ import annotations

import os
import tempfile
import zipfile

__all__ = ["atomic_write", "read_npz", "NpzError"]


class NpzError(ValueError):
    """A file is not a readable ``.npz`` archive; the message says why (callers add the path).

    ``kind`` says it for code: ``"missing"``, ``"npy"`` (a single ``.npy`` array), ``"objects"`` (an array
    of Python objects, never unpickled), ``"not-npz"`` or ``"corrupt"``.
    """

    def __init__(self, message, kind="corrupt"):
        super().__init__(message)
        self.kind = kind


_ZIP_MAGIC = b"PK"
_NPY_MAGIC = b"\x93NUMPY"


def read_npz(path) -> dict:
    """Every array of the ``.npz`` archive at ``path``, as host NumPy arrays; never unpickles.

    Raises :class:`NpzError` for a missing, truncated, corrupt or non-archive file, and for an archive holding
    an array of Python objects (dtype object), which only unpickling could read.
    """
    import numpy as np  # noqa: PLC0415 -- host file I/O

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise NpzError("no such file", "missing")
    try:
        # Our own file handle: np.load(path) leaks its handle when the zip directory is corrupt.
        with open(path, "rb") as fh:
            magic = fh.read(len(_NPY_MAGIC))
            fh.seek(0)
            if magic == _NPY_MAGIC:
                raise NpzError("a single .npy array, not an .npz archive", "npy")
            if not magic.startswith(_ZIP_MAGIC):  # NumPy would try to unpickle it (and advise allow_pickle=True)
                raise NpzError("no zip signature", "not-npz")
            with np.load(fh, allow_pickle=False) as z:
                return {k: _member(z, k) for k in z.files}
    except NpzError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise NpzError(f"truncated or corrupt: {type(exc).__name__}: {exc}", "corrupt") from exc


def _member(z, key):
    """Array ``key`` of the open archive ``z``, after reading its header: an object array is refused by name."""
    import numpy as np  # noqa: PLC0415 -- host file I/O

    names = z.zip.namelist()
    member = key if key in names else key + ".npy"
    with z.zip.open(member) as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _shape, _order, dtype = read_header(f)
    if dtype.hasobject:
        raise NpzError(
            f"array {key!r} holds Python objects (dtype {dtype}), which nnarray never unpickles; "
            "expected numeric arrays (e.g. X.astype(numpy.float32), t.astype(numpy.int64))",
            "objects",
        )
    return z[key]


def atomic_write(path, write):
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
