"""nnarray.datasets.loaders and the dispatcher in nnarray.datasets: a directory's content checked, the lookup
order, not found and offline, downloads (mocked), the real Fashion-MNIST where installed."""

import gzip
import hashlib
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from dataset_fakes import fake_gz_blobs, no_tmp_left, write_fake_dataset
from nnarray import datasets
from nnarray.datasets import (
    DatasetError,
    DatasetNotFoundError,
    find_dataset_dir,
    load_fashion_mnist,
    load_mnist,
    loaders,
    write_idx,
)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = loaders.FILES


# ---------------------------------------------------------------------------------------------
# loaders: validation of a directory's content


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_load_from_data_dir(isolated, tmp_path, gz):
    arrays = write_fake_dataset(tmp_path / "d", n_train=12, n_test=5, gz=gz)
    (X, t), (Xt, tt) = load_mnist(data_dir=tmp_path / "d", download=False)
    assert X.shape == (12, 784) and X.dtype == np.float32
    assert Xt.shape == (5, 784) and tt.shape == (5,)
    assert t.dtype == np.int64 and tt.dtype == np.int64
    assert 0.0 <= X.min() and X.max() <= 1.0
    np.testing.assert_array_equal(X, arrays[FILES[0]].reshape(12, 784) / np.float32(255))
    np.testing.assert_array_equal(t, arrays[FILES[1]])
    (Xu, _), _ = load_mnist(data_dir=tmp_path / "d", download=False, normalize=False)
    assert Xu.dtype == np.uint8 and Xu.flags.writeable
    np.testing.assert_array_equal(Xu, arrays[FILES[0]].reshape(12, 784))
    assert isolated == []  # never touched the network


def test_mixed_raw_and_gzip_files(isolated, tmp_path):
    d = tmp_path / "d"
    write_fake_dataset(d, files=FILES[:2], gz=True)
    write_fake_dataset(d, files=FILES[2:], gz=False)
    (X, _), (Xt, _) = load_fashion_mnist(data_dir=d, download=False)
    assert X.shape == (12, 784) and Xt.shape == (5, 784)


def test_count_mismatch_names_both_files(isolated, tmp_path):
    d = tmp_path / "d"
    write_fake_dataset(d, n_train=12)
    write_idx(d / FILES[1], np.zeros(11, np.uint8))  # one label short
    with pytest.raises(DatasetError) as e:
        load_mnist(data_dir=d, download=False)
    msg = str(e.value)
    assert str(d / FILES[0]) in msg and str(d / FILES[1]) in msg
    assert "12 images" in msg and "11 labels" in msg


def test_wrong_image_size(isolated, tmp_path):
    d = tmp_path / "d"
    write_fake_dataset(d)
    write_idx(d / FILES[2], np.zeros((5, 8, 8), np.uint8))
    with pytest.raises(DatasetError) as e:
        load_mnist(data_dir=d, download=False)
    msg = str(e.value)
    assert str(d / FILES[2]) in msg and "expected N×28×28 uint8" in msg and "found 5×8×8 uint8" in msg


def test_labels_out_of_range(isolated, tmp_path):
    d = tmp_path / "d"
    write_fake_dataset(d, n_test=5)
    write_idx(d / FILES[3], np.array([0, 1, 2, 12, 3], np.uint8))
    with pytest.raises(DatasetError) as e:
        load_mnist(data_dir=d, download=False)
    msg = str(e.value)
    assert str(d / FILES[3]) in msg and "expected labels in 0..9" in msg and "found 12 at index 3" in msg


def test_corrupt_file_in_dataset_dir_is_reported(isolated, tmp_path):
    d = tmp_path / "d"
    write_fake_dataset(d, gz=True)
    p = d / (FILES[0] + ".gz")
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(DatasetError, match="corrupt gzip stream") as e:
        load_fashion_mnist(data_dir=d, download=False)
    assert str(p) in str(e.value)


# ---------------------------------------------------------------------------------------------
# lookup order


def test_lookup_order(isolated, tmp_path, monkeypatch):
    name = "fashion-mnist"
    explicit = tmp_path / "explicit"
    env_root = tmp_path / "envdata"
    env_named = env_root / name
    cache = tmp_path / "home" / ".cache" / "nnarray" / name
    system = tmp_path / "system"
    # A different train-set size in each place tells which one was read.
    for n, d in zip((11, 12, 13, 14, 15), (explicit, env_named, env_root, cache, system), strict=True):
        write_fake_dataset(d, n_train=n, gz=(n % 2 == 0))
    monkeypatch.setattr(loaders, "FASHION_MNIST_SYSTEM_DIRS", [str(system)])
    monkeypatch.setenv("NNARRAY_DATA", str(env_root))

    def n_train(**kw):
        (X, _), _ = load_fashion_mnist(download=False, **kw)
        return X.shape[0]

    assert find_dataset_dir(name, data_dir=explicit) == explicit
    assert n_train(data_dir=explicit) == 11  # data_dir beats everything
    assert find_dataset_dir(name) == env_named
    assert n_train() == 12  # $NNARRAY_DATA/<name>
    for p in env_named.glob(FILES[3] + "*"):
        p.unlink()  # an incomplete directory is skipped
    assert find_dataset_dir(name) == env_root
    assert n_train() == 13  # $NNARRAY_DATA itself
    monkeypatch.delenv("NNARRAY_DATA")
    assert find_dataset_dir(name) == cache
    assert n_train() == 14  # ~/.cache/nnarray/<name>
    for p in cache.iterdir():
        p.unlink()
    assert find_dataset_dir(name) == system
    assert n_train() == 15  # the system directory
    monkeypatch.setattr(loaders, "FASHION_MNIST_SYSTEM_DIRS", [])
    assert find_dataset_dir(name) is None
    assert find_dataset_dir("fashion_mnist", data_dir=tmp_path / "nowhere") is None
    assert isolated == []  # find_dataset_dir and download=False never fetch


def test_system_dir_is_not_searched_for_mnist(isolated, tmp_path, monkeypatch):
    write_fake_dataset(tmp_path / "system")
    monkeypatch.setattr(loaders, "FASHION_MNIST_SYSTEM_DIRS", [str(tmp_path / "system")])
    assert find_dataset_dir("fashion-mnist") == tmp_path / "system"
    assert find_dataset_dir("mnist") is None


def test_xdg_cache_home(isolated, tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    write_fake_dataset(xdg / "nnarray" / "mnist", n_train=17)
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    assert loaders.cache_dir("mnist") == xdg / "nnarray" / "mnist"
    assert find_dataset_dir("mnist") == xdg / "nnarray" / "mnist"
    assert load_mnist(download=False)[0][0].shape == (17, 784)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, per the XDG spec
    assert loaders.cache_dir("mnist") == tmp_path / "home" / ".cache" / "nnarray" / "mnist"


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown dataset"):
        find_dataset_dir("cifar10")
    with pytest.raises(ValueError, match="unknown dataset 'cifar10'"):
        datasets.load("cifar10")


def test_load_dispatcher(isolated, tmp_path):
    write_fake_dataset(tmp_path / "d", n_train=13)
    for name in ("mnist", "fashion-mnist", "fashion_mnist", "Fashion-MNIST"):
        (X, t), (Xt, tt) = datasets.load(name, data_dir=tmp_path / "d", download=False)
        assert X.shape == (13, 784) and tt.shape == (5,)
    (X, t), _ = datasets.load("digits")
    assert X.shape[1] == 64


# ---------------------------------------------------------------------------------------------
# not found / offline


def test_offline_error_message_fashion(isolated, tmp_path, monkeypatch):
    system = tmp_path / "no-system-dir"
    monkeypatch.setattr(loaders, "FASHION_MNIST_SYSTEM_DIRS", [str(system)])
    with pytest.raises(DatasetNotFoundError) as e:
        load_fashion_mnist()
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "data_dir" in msg and "NNARRAY_DATA" in msg
    assert str(tmp_path / "home" / ".cache" / "nnarray" / "fashion-mnist") in msg  # searched dirs listed
    assert str(system) in msg
    assert "Temporary failure in name resolution" in msg  # why the download failed
    for base in FILES:
        assert base in msg
    # it tried the mirror, with a short timeout, and stopped at the first unreachable file
    assert len(isolated) == len(loaders.MIRRORS["fashion-mnist"])
    assert all(timeout <= 30 for _, timeout in isolated)
    assert isinstance(e.value, FileNotFoundError)


def test_offline_error_message_mnist(isolated):
    with pytest.raises(DatasetNotFoundError) as e:
        load_mnist()
    msg = str(e.value)
    assert "MNIST not found" in msg and "data_dir" in msg and "NNARRAY_DATA" in msg
    assert "load_fashion_mnist" in msg and "load_digits" in msg  # offline alternatives
    assert [url for url, _ in isolated] == [m + FILES[0] + ".gz" for m in loaders.MIRRORS["mnist"]]


def test_not_found_without_download(isolated, monkeypatch):
    monkeypatch.setenv("NNARRAY_DATA", "/nonexistent/nnarray-data")
    with pytest.raises(DatasetNotFoundError) as e:
        load_mnist(download=False)
    msg = str(e.value)
    assert "download=False" in msg and "/nonexistent/nnarray-data/mnist" in msg
    assert isolated == []


def test_explicit_data_dir_lacking_files(isolated, tmp_path):
    d = tmp_path / "partial"
    write_fake_dataset(d, files=FILES[:3])
    with pytest.raises(DatasetNotFoundError) as e:
        load_fashion_mnist(data_dir=d, download=False)
    msg = str(e.value)
    assert str(d) in msg and "lacks " + FILES[3] in msg and "apt-get install dataset-fashion-mnist" in msg
    with pytest.raises(DatasetNotFoundError, match="downloading them into it failed"):
        load_fashion_mnist(data_dir=d, download=True)
    assert [url for url, _ in isolated] == [m + FILES[3] + ".gz" for m in loaders.MIRRORS["fashion-mnist"]]


# ---------------------------------------------------------------------------------------------
# downloads (mocked)


def test_mocked_download_to_cache(isolated, tmp_path, monkeypatch):
    blobs, md5, arrays = fake_gz_blobs(tmp_path, n_train=16, n_test=6)
    monkeypatch.setitem(loaders.CHECKSUMS, "mnist", md5)
    fetched = []

    def fetch(url, timeout):
        fetched.append(url)
        if url.startswith(loaders.MIRRORS["mnist"][0]):  # first mirror down: falls back to the second
            raise urllib.error.URLError("connection refused")
        return blobs[url.rsplit("/", 1)[1]]

    monkeypatch.setattr(loaders, "_fetch", fetch)
    (X, t), (Xt, tt) = load_mnist()
    assert X.shape == (16, 784) and Xt.shape == (6, 784)
    np.testing.assert_array_equal(t, arrays[FILES[1]])
    cache = tmp_path / "home" / ".cache" / "nnarray" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(base + ".gz" for base in FILES)
    for name, blob in blobs.items():
        assert (cache / name).read_bytes() == blob
    assert len(fetched) == 8
    # Found in the cache next time: no download.
    fetched.clear()
    load_mnist()
    assert fetched == [] and find_dataset_dir("mnist") == cache


def test_mocked_download_into_data_dir_only_missing_files(isolated, tmp_path, monkeypatch):
    blobs, md5, _ = fake_gz_blobs(tmp_path, n_train=12, n_test=5)
    monkeypatch.setitem(loaders.CHECKSUMS, "fashion-mnist", md5)
    d = tmp_path / "mine"
    write_fake_dataset(d, files=FILES[:2])
    fetched = []
    monkeypatch.setattr(loaders, "_fetch", lambda url, timeout: fetched.append(url) or blobs[url.rsplit("/", 1)[1]])
    (X, _), (Xt, _) = load_fashion_mnist(data_dir=d)
    assert X.shape == (12, 784) and Xt.shape == (5, 784)
    assert sorted(u.rsplit("/", 1)[1] for u in fetched) == sorted(b + ".gz" for b in FILES[2:])
    assert no_tmp_left(d)


def test_checksum_mismatch_leaves_nothing(isolated, tmp_path, monkeypatch):
    blobs, md5, _ = fake_gz_blobs(tmp_path)
    monkeypatch.setitem(loaders.CHECKSUMS, "mnist", md5)
    wrong = gzip.compress(b"not the file you asked for")
    monkeypatch.setattr(loaders, "_fetch", lambda url, timeout: wrong)
    with pytest.raises(DatasetError) as e:
        load_mnist()
    assert not isinstance(e.value, DatasetNotFoundError)
    msg = str(e.value)
    cache = tmp_path / "home" / ".cache" / "nnarray" / "mnist"
    assert str(cache / (FILES[0] + ".gz")) in msg
    assert "checksum mismatch" in msg
    assert md5[FILES[0] + ".gz"] in msg and hashlib.md5(wrong).hexdigest() in msg
    assert not cache.exists() or list(cache.iterdir()) == []  # no file, no partial .tmp


def test_published_checksums_table():
    for name in ("mnist", "fashion-mnist"):
        assert set(loaders.CHECKSUMS[name]) == {base + ".gz" for base in FILES}
        assert all(len(h) == 32 for h in loaders.CHECKSUMS[name].values())
    assert loaders.CHECKSUMS["mnist"]["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert loaders.CHECKSUMS["fashion-mnist"]["train-images-idx3-ubyte.gz"] == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"


# ---------------------------------------------------------------------------------------------
# the real Fashion-MNIST (Debian package dataset-fashion-mnist)

needs_fashion = pytest.mark.skipif(
    not all((FASHION_DIR / (b + ".gz")).is_file() or (FASHION_DIR / b).is_file() for b in FILES),
    reason="apt-get install dataset-fashion-mnist",
)


@pytest.fixture(scope="module")
def fashion():
    return load_fashion_mnist(data_dir=FASHION_DIR, download=False)


@needs_fashion
def test_real_fashion_mnist(fashion):
    (X, t), (Xt, tt) = fashion
    assert X.shape == (60000, 784) and Xt.shape == (10000, 784)
    assert X.dtype == np.float32 and Xt.dtype == np.float32
    assert t.dtype == np.int64 and tt.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert Xt.min() >= 0.0 and Xt.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(t, minlength=10), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(tt, minlength=10), np.full(10, 1000))


@needs_fashion
def test_real_fashion_mnist_found_by_default_lookup(isolated, monkeypatch):
    monkeypatch.setattr(loaders, "FASHION_MNIST_SYSTEM_DIRS", [str(FASHION_DIR)])
    assert find_dataset_dir("fashion-mnist") == FASHION_DIR
