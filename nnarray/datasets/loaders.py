"""Loaders for MNIST and Fashion-MNIST: find the four IDX files, download them if needed, read them.

Both datasets consist of four files (each may be gzip-compressed, with a ``.gz`` suffix)::

    train-images-idx3-ubyte   60000×28×28 uint8
    train-labels-idx1-ubyte   60000 uint8 in 0..9
    t10k-images-idx3-ubyte    10000×28×28 uint8
    t10k-labels-idx1-ubyte    10000 uint8 in 0..9

Lookup order (the first directory holding all four files wins):

1. the explicit ``data_dir`` argument (exclusive: if it lacks the files, they are downloaded into
   it when ``download=True``, otherwise that is an error);
2. ``$NNARRAY_DATA/<name>/``, then ``$NNARRAY_DATA`` itself;
3. the user cache ``$XDG_CACHE_HOME/nnarray/<name>/`` (default ``~/.cache/nnarray/<name>/``);
4. for Fashion-MNIST, the Debian package location ``/usr/share/datasets/fashion-mnist/``
   (``apt-get install dataset-fashion-mnist``); see :data:`SYSTEM_DIRS`.

``<name>`` is ``mnist`` or ``fashion-mnist``. If none has them and ``download=True``, the ``.gz``
files are downloaded from the usual mirrors (short timeout), checked against their published MD5
digests, and stored atomically in the user cache.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from pathlib import Path

import numpy as np

from .._files import atomic_write
from ..words import arg
from .errors import DatasetError, DatasetNotFoundError
from .idx import _read_idx

__all__ = [
    "FILES",
    "cache_dir",
    "find_dataset_dir",
    "load_fashion_mnist",
    "load_mnist",
]

#: The four file names (without ``.gz``) in (train images, train labels, test images, test labels) order.
FILES: tuple[str, str, str, str] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}

#: Download mirrors, tried in order; each holds the four ``.gz`` files.
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
}

#: Published MD5 digests of the downloadable ``.gz`` files. Only downloads are checked against
#: them: local copies (e.g. Debian's, which are recompressed) are validated by the IDX reader.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

#: System-wide directories searched last (after the user cache), per dataset. Module-level so that
#: tests can monkeypatch them; read at call time.
FASHION_MNIST_SYSTEM_DIRS: list[str] = ["/usr/share/datasets/fashion-mnist"]
MNIST_SYSTEM_DIRS: list[str] = []

#: Seconds before a download attempt gives up.
DOWNLOAD_TIMEOUT: float = 10.0

_IMAGE_SHAPE = (28, 28)
_NUM_CLASSES = 10


def _fetch(url: str, timeout: float) -> bytes:
    """Download ``url`` and return its content. The single network access point (tests patch it)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (fixed https/http URLs)
        return response.read()


class _DownloadFailed(Exception):
    """Every mirror failed for network reasons (offline, timeout, HTTP error)."""


def _canonical(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    if key not in _TITLES:
        raise ValueError(f"unknown dataset {name!r}: expected 'mnist' or 'fashion-mnist'")
    return key


def _system_dirs(name: str) -> list[Path]:
    dirs = FASHION_MNIST_SYSTEM_DIRS if name == "fashion-mnist" else MNIST_SYSTEM_DIRS
    return [Path(d) for d in dirs]


def cache_dir(name: str) -> Path:
    """The user cache directory of a dataset: ``$XDG_CACHE_HOME/nnarray/<name>`` or ``~/.cache/nnarray/<name>``.

    ``XDG_CACHE_HOME`` is used only if it is set to an absolute path (as the XDG spec says).
    """
    name = _canonical(name)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "nnarray" / name


def _locate(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """Which of the four files ``directory`` holds (raw preferred over ``.gz``), and which it lacks."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for base in FILES:
        for candidate in (directory / base, directory / (base + ".gz")):
            if candidate.is_file():
                found[base] = candidate
                break
        else:
            missing.append(base)
    return found, missing


def _candidates(name: str) -> list[tuple[str, Path | None, str]]:
    """The searched locations after ``data_dir``, in order: (label, directory or None, note)."""
    out: list[tuple[str, Path | None, str]] = []
    env = os.environ.get("NNARRAY_DATA", "")
    if env:
        root = Path(env).expanduser()
        out.append((f"$NNARRAY_DATA/{name}", root / name, ""))
        out.append(("$NNARRAY_DATA", root, ""))
    else:
        out.append(("$NNARRAY_DATA", None, "not set"))
    out.append(("user cache", cache_dir(name), ""))
    for d in _system_dirs(name):
        out.append(("system", d, ""))
    return out


def find_dataset_dir(name: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The directory holding all four files of ``name`` (``"mnist"`` or ``"fashion-mnist"``), or None.

    With ``data_dir`` given, only that directory is considered. Otherwise ``$NNARRAY_DATA/<name>``,
    ``$NNARRAY_DATA``, the user cache and (Fashion-MNIST) the system directories are searched in
    that order. Never downloads.
    """
    name = _canonical(name)
    d: Path | None
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        return d if not _locate(d)[1] else None
    for _label, d, _note in _candidates(name):
        if d is not None and not _locate(d)[1]:
            return d
    return None


def _describe(d: Path) -> str:
    if not d.exists():
        return "does not exist"
    if not d.is_dir():
        return "not a directory"
    found, missing = _locate(d)
    if not found:
        return "holds none of the files"
    return "lacks " + ", ".join(missing)


def _how_to(name: str) -> str:
    lines = ["To get the files, do one of:"]
    if name == "fashion-mnist":
        lines.append(
            "  - apt-get install dataset-fashion-mnist   "
            "(Debian/Ubuntu: puts them in /usr/share/datasets/fashion-mnist/)"
        )
    lines += [
        f"  - put the four files (gzipped or not) in a directory DIR and pass {arg('data_dir', 'DIR')}, "
        f"or set NNARRAY_DATA=DIR (DIR/{name}/ works too)",
        f"  - {arg('download', 'True', 'call with download=True')} on a machine with internet access: they are "
        f"downloaded once to {cache_dir(name)}",
    ]
    if name == "mnist":
        lines.append(
            f"  - offline alternatives: {arg('dataset', 'fashion-mnist', 'nnarray.datasets.load_fashion_mnist()')} "
            "(apt-get install dataset-fashion-mnist) "
            f"or {arg('dataset', 'digits', 'nnarray.datasets.load_digits()')} (scikit-learn's bundled 8×8 digits)"
        )
    return "\n".join(lines)


def _files_line() -> str:
    return "needed files: " + ", ".join(FILES) + " (each optionally gzipped, with .gz)"


def _download(name: str, dest: Path, missing: list[str]) -> None:
    """Download the ``.gz`` files of ``missing`` into ``dest``, verifying each MD5 before storing it.

    Raises DatasetError on a checksum mismatch (nothing stored), _DownloadFailed when every mirror
    failed for network reasons.
    """
    for base in missing:
        fname = base + ".gz"
        target = dest / fname
        expected = CHECKSUMS[name][fname]
        errors: list[str] = []
        mismatch: tuple[str, str, int] | None = None
        for mirror in MIRRORS[name]:
            url = mirror + fname
            try:
                blob = _fetch(url, DOWNLOAD_TIMEOUT)
            except (OSError, ValueError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts
                errors.append(f"{url}: {type(e).__name__}: {e}")
                continue
            actual = hashlib.md5(blob, usedforsecurity=False).hexdigest()
            if actual != expected:
                mismatch = (url, actual, len(blob))
                continue
            dest.mkdir(parents=True, exist_ok=True)
            atomic_write(target, lambda f, data=blob: f.write(data))
            break
        else:
            if mismatch is not None:
                url, actual, size = mismatch
                raise DatasetError(
                    f"{target}: checksum mismatch: expected md5 {expected}, found {actual} "
                    f"({size} bytes downloaded from {url}); nothing was saved"
                )
            raise _DownloadFailed("; ".join(errors) or "no mirror configured")


def _resolve(name: str, data_dir: str | os.PathLike | None, download: bool) -> dict[str, Path]:
    """Paths of the four files, downloading them if allowed and needed."""
    title = _TITLES[name]
    d: Path | None
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        found, missing = _locate(d)
        if not missing:
            return found
        problem = f"{title}: {arg('data_dir', repr(str(d)))} {_describe(d)}"
        if not download:
            raise DatasetNotFoundError(
                f"{problem} ({arg('download', 'False')}, so nothing was fetched).\n{_files_line()}\n{_how_to(name)}"
            )
        try:
            _download(name, d, missing)
        except _DownloadFailed as e:
            raise DatasetNotFoundError(
                f"{problem}, and downloading them into it failed (offline?): {e}\n{_files_line()}\n{_how_to(name)}"
            ) from None
        return _locate(d)[0]

    candidates = _candidates(name)
    for _label, d, _note in candidates:
        if d is not None:
            found, missing = _locate(d)
            if not missing:
                return found
    cache = cache_dir(name)
    searched = "\n".join(
        f"  - {label}: {d}  ({_describe(d)})" if d is not None else f"  - {label}: {note}"
        for label, d, note in candidates
    )
    head = (f"{title} not found: no searched directory holds all four files.\n{_files_line()}\n"
            f"Searched, in order:\n{searched}\n")
    if not download:
        raise DatasetNotFoundError(f"{head}Download not attempted ({arg('download', 'False')}).\n{_how_to(name)}")
    try:
        _download(name, cache, _locate(cache)[1])
    except _DownloadFailed as e:
        raise DatasetNotFoundError(
            f"{head}Downloading to {cache} failed (offline?): {e}\n{_how_to(name)}"
        ) from None
    return _locate(cache)[0]


def _read_split(images_path: Path, labels_path: Path, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    images = _read_idx(images_path, writeable=not normalize)  # normalize=True copies to float32 anyway
    labels = _read_idx(labels_path, writeable=False)  # astype(int64) below copies
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != _IMAGE_SHAPE:
        raise DatasetError(
            f"{images_path}: expected N×28×28 uint8 images, found "
            f"{'×'.join(map(str, images.shape))} {images.dtype}"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DatasetError(
            f"{labels_path}: expected a 1-D array of integer labels, found "
            f"{'×'.join(map(str, labels.shape))} {labels.dtype}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"image/label count mismatch: {images_path} has {images.shape[0]} images but "
            f"{labels_path} has {labels.shape[0]} labels; expected the same number"
        )
    bad = np.flatnonzero((labels < 0) | (labels >= _NUM_CLASSES))
    if bad.size:
        raise DatasetError(
            f"{labels_path}: expected labels in 0..{_NUM_CLASSES - 1}, found {labels[bad[0]]} at index "
            f"{bad[0]} ({bad.size} of {labels.size} labels out of range)"
        )
    X = images.reshape(images.shape[0], -1)
    if normalize:
        X = X.astype(np.float32)
        np.divide(X, np.float32(255), out=X)
    return X, labels.astype(np.int64)


def _load(
    name: str, data_dir: str | os.PathLike | None, download: bool, normalize: bool
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    paths = _resolve(name, data_dir, download)
    train = _read_split(paths[FILES[0]], paths[FILES[1]], normalize)
    test = _read_split(paths[FILES[2]], paths[FILES[3]], normalize)
    return train, test


def load_mnist(
    data_dir: str | os.PathLike | None = None, download: bool = True, normalize: bool = True
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load MNIST handwritten digits.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Directory holding the four files. If given, it is the only place looked at (files missing
        there are downloaded into it when ``download`` is true). If None, ``$NNARRAY_DATA/mnist``,
        ``$NNARRAY_DATA`` and ``~/.cache/nnarray/mnist`` are searched, then the files are
        downloaded to the cache if ``download`` is true.
    download : bool
        Allow downloading missing files (MD5-checked).
    normalize : bool
        Return images as float32 in [0, 1] (pixel / 255); if false, keep uint8 in 0..255.

    Returns
    -------
    (X_train, t_train), (X_test, t_test)
        Host NumPy arrays: ``X_train`` (60000, 784) float32, ``t_train`` (60000,) int64 in 0..9,
        ``X_test`` (10000, 784), ``t_test`` (10000,).

    Raises
    ------
    DatasetNotFoundError
        No directory holds the files and they could not be downloaded; the message lists the
        directories searched and how to get the files.
    DatasetError
        A file is corrupt, a download's checksum is wrong, counts of images and labels differ, or
        labels are out of range.
    """
    return _load("mnist", data_dir, download, normalize)


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None, download: bool = True, normalize: bool = True
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load Fashion-MNIST (Zalando's 28×28 clothing images, 10 classes), same format as MNIST.

    Searched as :func:`load_mnist` does (with ``fashion-mnist`` as the sub-directory name), plus,
    after the user cache, the Debian package location ``/usr/share/datasets/fashion-mnist/``
    (``apt-get install dataset-fashion-mnist``), which works offline.

    Returns
    -------
    (X_train, t_train), (X_test, t_test)
        ``X_train`` (60000, 784) float32 in [0, 1] (uint8 if ``normalize=False``), ``t_train``
        (60000,) int64 in 0..9, ``X_test`` (10000, 784), ``t_test`` (10000,).
    """
    return _load("fashion-mnist", data_dir, download, normalize)
