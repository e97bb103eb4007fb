"""Files: atomic writes (a crash or a full disk never leaves a half-written file in place of a good one) and
a safe reader of ``.npz`` archives (never unpickles)."""

from __future__ import annotations

import os
import tempfile
import zipfile

__all__ = ["atomic_write", "read_npz", "NpzError", "check_writable"]


class NpzError(ValueError):
    """A file is not a readable ``.npz`` archive; the message says why (callers add the path).

    ``kind`` says which case it is, for callers that word it their way: ``"missing"`` (no such file),
    ``"npy"`` (a single ``.npy`` array), ``"not-npz"`` (another kind of file), ``"objects"`` (an array of
    Python objects, which would need unpickling) or ``"corrupt"`` (a damaged or truncated archive).
    """

    def __init__(self, message, kind="corrupt"):
        super().__init__(message)
        self.kind = kind


ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip member, an empty zip
NPY_MAGIC = b"\x93NUMPY"


def read_npz(path: str | os.PathLike[str]) -> dict:
    """Every array of the ``.npz`` archive at ``path``, as host NumPy arrays; never unpickles.

    The file's first bytes say what it is before NumPy reads it, and each member's header says its dtype
    before its data are read. Raises :class:`NpzError` for a missing, truncated, corrupt or non-archive file.
    """
    import numpy as np  # noqa: PLC0415 -- host file I/O

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise NpzError("no such file", "missing")
    with open(path, "rb") as fh:  # our own handle: np.load(path) leaks its handle when the zip directory is corrupt
        magic = fh.read(6)
        if magic == NPY_MAGIC:
            raise NpzError("a single .npy array, not an .npz archive", "npy")
        if magic[:4] not in ZIP_MAGIC:
            raise NpzError("not an .npz archive", "not-npz")
        fh.seek(0)
        try:
            with np.load(fh, allow_pickle=False) as z:
                return {k: _member(z, k) for k in z.files}
        except NpzError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
            raise NpzError(f"truncated or corrupt: {type(exc).__name__}: {exc}") from exc


def _member(z, key):
    """Array ``key`` of the open archive ``z``, refused (before reading its data) if it holds Python objects."""
    import numpy as np  # noqa: PLC0415

    with z.zip.open(key + ".npy") as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _shape, _fortran, dtype = read_header(f)
    if dtype.hasobject:
        raise NpzError(f"array {key!r} has dtype object (Python objects, which are read only by unpickling); "
                       "save numbers, e.g. with .astype(float)", "objects")
    return z[key]


def check_writable(path, name):
    """Refuse, before any work, a ``path`` that cannot be written: its folder under a file, or not writable.

    The folder need not exist yet (it is made when the file is written); its nearest existing ancestor must
    be a folder in which a file can be made — tried with a temporary file, removed at once, since permission
    bits alone do not say it (a read-only mount, an administrator). Raises :class:`OSError` naming ``name``.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{name}: cannot write the file {path}: it is a folder")
    folder = os.path.dirname(path)
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"{name}: cannot write {path}: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".nnarray-write-test.", dir=existing)
    except OSError as exc:
        raise PermissionError(f"{name}: cannot write into {existing} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)
    return path


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
