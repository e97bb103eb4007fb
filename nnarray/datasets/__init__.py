"""Datasets for nnarray: MNIST, Fashion-MNIST (IDX files, gzip or raw) and scikit-learn's 8×8 digits.

Every loader returns ``(X_train, t_train), (X_test, t_test)`` as host NumPy arrays: X float32 in
[0, 1] of shape (N, D), t int64 class labels of shape (N,).

>>> from nnarray import datasets
>>> (X, t), (X_test, t_test) = datasets.load("digits")
>>> X.shape, X.dtype, t.dtype
((1438, 64), dtype('float32'), dtype('int64'))

MNIST and Fashion-MNIST files are looked up in ``data_dir``, ``$NNARRAY_DATA``, the user cache
and (Fashion-MNIST) ``/usr/share/datasets/fashion-mnist/`` (``apt-get install dataset-fashion-mnist``),
then downloaded if allowed; see :mod:`nnarray.datasets.loaders`.
"""

from __future__ import annotations

import os

from ..words import arg
from .digits import load_digits
from .errors import DatasetError, DatasetNotFoundError
from .files import check_file_record, file_record, load_csv, load_file, load_npz
from .idx import read_idx, write_idx
from .loaders import find_dataset_dir, load_fashion_mnist, load_mnist

__all__ = [
    "check_file_record",
    "choose",
    "DatasetError",
    "DatasetNotFoundError",
    "file_record",
    "find_dataset_dir",
    "load",
    "load_csv",
    "load_digits",
    "load_file",
    "load_fashion_mnist",
    "load_mnist",
    "load_npz",
    "read_idx",
    "write_idx",
]

NAMES = ("mnist", "fashion-mnist", "digits")


def load(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> tuple:
    """Load a dataset by name: ``"mnist"``, ``"fashion-mnist"`` (or ``"fashion_mnist"``) or ``"digits"``.

    ``data_dir`` and ``download`` are passed to :func:`load_mnist` / :func:`load_fashion_mnist`;
    ``"digits"`` ignores them (it ships with scikit-learn).

    Returns
    -------
    (X_train, t_train), (X_test, t_test)
        float32 (N, 784) images in [0, 1] and int64 (N,) labels (for digits, (N, 64)).
    """
    key = str(name).strip().lower().replace("_", "-")
    if key == "mnist":
        return load_mnist(data_dir=data_dir, download=download)
    if key == "fashion-mnist":
        return load_fashion_mnist(data_dir=data_dir, download=download)
    if key == "digits":
        return load_digits()
    raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(NAMES)}")


def choose(name: str = "auto", data_dir: str | os.PathLike | None = None) -> tuple[str, tuple, str]:
    """Resolve a dataset choice and load it: returns ``(name, data, why)``.

    ``"auto"`` takes MNIST when its files are found or can be downloaded, else a local Fashion-MNIST, else
    scikit-learn's 8×8 digits; ``why`` says in words which was taken and why (the training command prints it).
    With an explicit ``data_dir``, ``"auto"`` looks there only (MNIST, downloaded into it if possible, then
    Fashion-MNIST) and never falls back to the digits: a wrong directory is an error, not a different dataset.
    Any other name is loaded as :func:`load` does.
    """
    if name != "auto":
        return name, load(name, data_dir=data_dir), arg("dataset", name, f"{name!r} asked for")
    where = find_dataset_dir("mnist", data_dir)
    if where is not None:
        return "mnist", load("mnist", data_dir=data_dir), f"MNIST found in {where}"
    where = find_dataset_dir("fashion-mnist", data_dir)
    if data_dir is not None and where is not None:  # the user's directory holds it: take it, do not download MNIST
        data = load("fashion-mnist", data_dir=data_dir, download=False)
        return "fashion-mnist", data, f"Fashion-MNIST found in {where}"
    try:
        return "mnist", load("mnist", data_dir=data_dir, download=True), "MNIST downloaded"
    except DatasetError as exc:
        mnist_error = exc
    if data_dir is not None:
        raise DatasetNotFoundError(
            f"{arg('data_dir', repr(os.fspath(data_dir)))} holds neither MNIST nor Fashion-MNIST "
            "(the four IDX files of either), and MNIST could not be downloaded into it. "
            f"Nothing else is tried when a directory is given.\n{mnist_error}"
        )
    if where is not None:
        data = load("fashion-mnist", data_dir=data_dir, download=False)
        return "fashion-mnist", data, f"MNIST not found and not downloadable; Fashion-MNIST found in {where}"
    try:
        digits = load("digits")
    except ImportError:
        raise DatasetNotFoundError(
            "no dataset available: MNIST and Fashion-MNIST were not found and MNIST could not be downloaded, and the "
            "last fallback, scikit-learn's 8x8 digits, needs scikit-learn. Get Fashion-MNIST with "
            "`apt-get install dataset-fashion-mnist`, put MNIST's files in $NNARRAY_DATA, "
            "or pip install scikit-learn.\n"
            f"{mnist_error}"
        ) from None
    return "digits", digits, "neither MNIST nor Fashion-MNIST available; scikit-learn's 8x8 digits"
