"""nnarray.datasets.idx and .errors: the IDX reader and writer, damaged files, the error hierarchy."""

import gzip

import numpy as np
import pytest

from dataset_fakes import no_tmp_left
from nnarray.datasets import (
    DatasetError,
    DatasetNotFoundError,
    read_idx,
    write_idx,
)

# ---------------------------------------------------------------------------------------------
# IDX reader and writer


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
)
def test_idx_round_trip(tmp_path, dtype, gz):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((3, 4, 5)) * 50).astype(dtype)
    p = write_idx(tmp_path / "a.idx", a, gzip=gz)
    assert (p.read_bytes()[:2] == b"\x1f\x8b") == gz
    b = read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    assert b.shape == (3, 4, 5)
    np.testing.assert_array_equal(a, b)
    assert b.flags.writeable
    assert no_tmp_left(tmp_path)


def test_idx_header_is_big_endian_mnist_layout(tmp_path):
    p = write_idx(tmp_path / "labels", np.array([1, 2, 3], dtype=np.uint8))
    assert p.read_bytes() == bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 1, 2, 3])
    p = write_idx(tmp_path / "f", np.array([1.0], dtype=np.float32))
    assert p.read_bytes() == bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + np.array([1.0], ">f4").tobytes()


def test_gzip_detected_by_content_not_name(tmp_path):
    a = np.arange(10, dtype=np.uint8)
    gz_without_suffix = write_idx(tmp_path / "labels-idx1-ubyte", a, gzip=True)
    raw_with_suffix = write_idx(tmp_path / "labels-idx1-ubyte.gz", a, gzip=False)
    np.testing.assert_array_equal(read_idx(gz_without_suffix), a)
    np.testing.assert_array_equal(read_idx(raw_with_suffix), a)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_truncated_idx(tmp_path, gz):
    p = tmp_path / "train-images-idx3-ubyte"
    raw = bytes([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5]) + bytes(50)  # 60 bytes declared
    p.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DatasetError) as e:
        read_idx(p)
    msg = str(e.value)
    assert str(p) in msg
    assert "truncated IDX file" in msg
    assert "header says 3×4×5 uint8 = 60 data bytes, found 50" in msg


def test_trailing_bytes(tmp_path):
    p = write_idx(tmp_path / "x", np.zeros((2, 3), np.int16))
    p.write_bytes(p.read_bytes() + b"abc")
    with pytest.raises(DatasetError) as e:
        read_idx(p)
    msg = str(e.value)
    assert str(p) in msg
    assert "trailing bytes" in msg
    assert "header says 2×3 int16 = 12 data bytes, found 15 (3 extra)" in msg


def test_wrong_magic(tmp_path):
    p = tmp_path / "notidx"
    p.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x07")
    with pytest.raises(DatasetError) as e:
        read_idx(p)
    msg = str(e.value)
    assert str(p) in msg and "not an IDX file" in msg
    assert "expected magic number 00 00" in msg and "found 01 02 08 01" in msg


def test_wrong_type_code(tmp_path):
    p = tmp_path / "badtype"
    p.write_bytes(bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(DatasetError) as e:
        read_idx(p)
    msg = str(e.value)
    assert str(p) in msg and "unknown IDX type code" in msg and "found 0x0A" in msg
    assert "0x08 (uint8)" in msg


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "expected a 4-byte magic number"),
        (bytes([0, 0, 8]), "found 3 bytes"),
        (bytes([0, 0, 8, 0]), "expected at least 1 dimension, found 0"),
        (bytes([0, 0, 8, 3, 0, 0, 0, 1]), "header declares 3 dimensions = 16 header bytes, found 8"),
    ],
)
def test_bad_header(tmp_path, content, expected):
    p = tmp_path / "hdr"
    p.write_bytes(content)
    with pytest.raises(DatasetError, match=expected) as e:
        read_idx(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "crc"])
def test_corrupt_gzip(tmp_path, damage):
    p = write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.arange(3000, dtype=np.int32), gzip=True)
    blob = p.read_bytes()
    if damage == "truncated":
        blob = blob[: len(blob) // 2]
    elif damage == "corrupt":
        blob = blob[:12] + bytes(b ^ 0xFF for b in blob[12:40]) + blob[40:]
    else:
        blob = blob[:-8] + bytes(8)  # CRC32 and size trailer zeroed
    p.write_bytes(blob)
    with pytest.raises(DatasetError) as e:
        read_idx(p)
    msg = str(e.value)
    assert str(p) in msg and "corrupt gzip stream" in msg
    assert e.value.__cause__ is not None


def test_error_hierarchy():
    assert issubclass(DatasetError, ValueError)
    assert issubclass(DatasetNotFoundError, DatasetError)
    assert issubclass(DatasetNotFoundError, FileNotFoundError)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


@pytest.mark.parametrize(
    "array, match",
    [
        (np.arange(3, dtype=np.int64), "cannot write dtype int64"),
        (np.array([True]), "cannot write dtype bool"),
        (np.uint8(3), "0-D array"),
    ],
)
def test_write_idx_rejects(tmp_path, array, match):
    with pytest.raises(ValueError, match=match):
        write_idx(tmp_path / "w", array)
    assert list(tmp_path.iterdir()) == []


def test_write_idx_accepts_big_endian_input(tmp_path):
    a = np.arange(6, dtype=">i4").reshape(2, 3)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "be", a)), a)
