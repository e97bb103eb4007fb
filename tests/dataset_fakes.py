"""Fake MNIST-family files for the tests of nnarray.datasets (these machines are offline)."""

import hashlib
from pathlib import Path

import numpy as np

from nnarray.datasets import (
    loaders,
    write_idx,
)

FILES = loaders.FILES



def write_fake_dataset(directory, n_train=12, n_test=5, gz=False, seed=0, files=FILES):
    """Write a tiny MNIST-like dataset (28×28 uint8 images, labels 0..9) into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {
        FILES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        FILES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        FILES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        FILES[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }
    for base in files:
        write_idx(directory / (base + (".gz" if gz else "")), arrays[base], gzip=gz)
    return arrays


def fake_gz_blobs(tmp_path, n_train=12, n_test=5):
    """The bytes of the four fake ``.gz`` files and their MD5s, as a mirror would serve them."""
    src = tmp_path / "mirror"
    arrays = write_fake_dataset(src, n_train, n_test, gz=True)
    blobs = {base + ".gz": (src / (base + ".gz")).read_bytes() for base in FILES}
    md5 = {name: hashlib.md5(blob).hexdigest() for name, blob in blobs.items()}
    return blobs, md5, arrays


def no_tmp_left(directory):
    return [p.name for p in Path(directory).iterdir() if p.name.endswith(".tmp")] == []
