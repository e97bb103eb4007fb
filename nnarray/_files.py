"""Files: atomic writes (a crash or a full disk never leaves a half-written file in place of a good one) and
a safe reader of ``.npz`` archives (never unpickles)."""

from __future__ import annotations

import os
import tempfile
import zipfile

__all__ = ["atomic_write", "read_npz", "NpzError"]


class NpzError(ValueError):
    """A file is not a readable ``.npz`` archive; the message says why (callers add the path)."""


def read_npz(path) -> dict:
    """Every array of the ``.npz`` archive at ``path``, as host NumPy arrays; never unpickles.

    Raises :class:`NpzError` for a missing, truncated, corrupt or non-archive file.
    """
    import numpy as np  # noqa: PLC0415 -- host file I/O

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise NpzError("no such file")
    try:
        # Our own file handle: np.load(path) leaks its handle when the zip directory is corrupt.
        with open(path, "rb") as fh:
            z = np.load(fh, allow_pickle=False)
            if not hasattr(z, "files"):
                raise NpzError("a single .npy array, not an .npz archive")
            with z:
                return {k: z[k] for k in z.files}
    except NpzError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        # NumPy's own text for a non-archive advises allow_pickle=True, which would run code from the file.
        if "pickle" in str(exc):
            raise NpzError("not an .npz archive") from None
        raise NpzError(f"truncated or corrupt: {type(exc).__name__}: {exc}") from exc


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
