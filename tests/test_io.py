"""Model files and training checkpoints: round trips, portability, atomic writes, clear errors."""

import os
import zipfile

import numpy as np
import pytest

import nnarray as nn


def _same_params(a, b):
    return a.keys() == b.keys() and all(np.array_equal(nn.to_numpy(a[k]), nn.to_numpy(b[k])) for k in a)


def test_save_load_round_trip(tmp_path):
    net = nn.MLP([6, 5, 4, 3], backend="numpy", dtype="float32", seed=2)
    path = tmp_path / "model.npz"
    nn.save(net, path)
    net2 = nn.load(path, backend="numpy")
    assert net2.layer_sizes == [6, 5, 4, 3] and net2.dtype_name == "float32"
    assert _same_params(net.params, net2.params)
    # Plain NumPy can read it too: a portable file with readable keys.
    with np.load(path) as z:
        assert {"W1", "b1", "W2", "b2", "W3", "b3"} <= set(z.files)


def test_load_onto_another_backend(tmp_path):
    net = nn.MLP([6, 5, 3], backend="numpy", dtype="float64", seed=2)
    nn.save(net, tmp_path / "m.npz")
    strict = nn.load(tmp_path / "m.npz", backend="array_api_strict")
    assert strict.backend.name == "array_api_strict"
    X = np.random.default_rng(0).random((4, 6))
    np.testing.assert_allclose(nn.to_numpy(strict.predict(X)), nn.to_numpy(net.predict(X)), rtol=1e-14)


def test_checkpoint_round_trip(tmp_path, blobs):
    X, t = blobs(n=200, seed=1)
    net = nn.MLP([12, 8, 3], backend="numpy", dtype="float64", seed=0)
    opt, rng = nn.SGD(0.1, momentum=0.9), np.random.default_rng(4)
    hist = nn.fit(net, opt, X, t, epochs=2, batch_size=32, seed=rng)
    nn.save_checkpoint(tmp_path / "ck.npz", net, opt, rng, hist, config={"lr": 0.1})
    ck = nn.load_checkpoint(tmp_path / "ck.npz", backend="numpy")
    assert ck["epoch"] == 2 and ck["config"] == {"lr": 0.1}
    assert ck["history"].to_dict() == hist.to_dict()
    assert _same_params(ck["net"].params, net.params)
    assert ck["opt"].momentum == 0.9 and _same_params(ck["opt"].velocity, opt.velocity)
    assert ck["rng"].bit_generator.state == rng.bit_generator.state
    # A checkpoint also loads as a model.
    assert _same_params(nn.load(tmp_path / "ck.npz").params, net.params)


def test_resume_equals_uninterrupted(tmp_path, blobs):
    X, t = blobs(n=300, seed=1)
    straight = nn.MLP([12, 8, 3], backend="numpy", dtype="float64", seed=0)
    nn.fit(straight, nn.SGD(0.1, momentum=0.5), X, t, epochs=4, batch_size=32, seed=8)

    net = nn.MLP([12, 8, 3], backend="numpy", dtype="float64", seed=0)
    opt, rng = nn.SGD(0.1, momentum=0.5), np.random.default_rng(8)
    hist = nn.fit(net, opt, X, t, epochs=2, batch_size=32, seed=rng)
    nn.save_checkpoint(tmp_path / "ck.npz", net, opt, rng, hist)
    del net, opt, rng
    ck = nn.load_checkpoint(tmp_path / "ck.npz", backend="numpy")
    nn.fit(ck["net"], ck["opt"], X, t, epochs=2, batch_size=32, seed=ck["rng"],
           options=nn.FitOptions(history=ck["history"]))
    for k, v in straight.params.items():
        np.testing.assert_allclose(nn.to_numpy(ck["net"].params[k]), nn.to_numpy(v), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "plain-npz", "missing-param"])
def test_damaged_files_give_a_clear_error(tmp_path, damage):
    net = nn.MLP([4, 3, 2], backend="numpy", seed=0)
    path = tmp_path / "m.npz"
    nn.save(net, path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
        match = r"m\.npz: not a readable nnarray file \(truncated or corrupt"
    elif damage == "garbage":
        path.write_bytes(b"hello" * 100)
        match = r"not a readable nnarray file"
    elif damage == "empty":
        path.write_bytes(b"")
        match = r"not a readable nnarray file"
    elif damage == "plain-npz":
        np.savez(path, W1=np.zeros((4, 3)))
        match = r"not one written by nnarray"
    else:
        with zipfile.ZipFile(path) as z:
            keep = {n: z.read(n) for n in z.namelist() if n != "W2.npy"}
        with zipfile.ZipFile(path, "w") as z:
            for n, b in keep.items():
                z.writestr(n, b)
        match = r"parameter 'W2' is missing"
    with pytest.raises(nn.CheckpointError, match=match):
        nn.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(nn.CheckpointError, match=r"nope\.npz: no such file"):
        nn.load(tmp_path / "nope.npz")


def test_a_failed_save_never_replaces_a_good_file(tmp_path, monkeypatch):
    net = nn.MLP([4, 3, 2], backend="numpy", seed=0)
    path = tmp_path / "m.npz"
    nn.save(net, path)
    good = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        nn.save(nn.MLP([4, 3, 2], backend="numpy", seed=1), path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["m.npz"], "no temporary file may be left behind"


@pytest.mark.parametrize("backend", ["array_api_strict", pytest.param("torch", marks=pytest.mark.torch)])
def test_checkpoint_from_another_backend_loads_on_numpy(tmp_path, backend, blobs):
    """Files hold host arrays only: what was trained elsewhere (GPU included) loads on a CPU-only machine."""
    X, t = blobs(n=100, seed=1)
    net = nn.MLP([12, 8, 3], backend=backend, dtype="float32", seed=0)
    opt, rng = nn.SGD(0.1, momentum=0.9), np.random.default_rng(0)
    hist = nn.fit(net, opt, X, t, epochs=1, batch_size=20, seed=rng)
    nn.save_checkpoint(tmp_path / "ck.npz", net, opt, rng, hist)
    ck = nn.load_checkpoint(tmp_path / "ck.npz", backend="numpy")
    assert ck["net"].backend.name == "numpy" and ck["opt"].velocity["W1"].dtype == np.float32
    assert _same_params(ck["net"].params, net.params)
    assert ck["net"].accuracy(X, t) == pytest.approx(net.accuracy(X, t))


def test_version_1_checkpoints_still_load(tmp_path, blobs):
    """Files written before optimizers owned a generic state: SGD with "velocity/<key>" arrays."""
    import json

    X, t = blobs(n=100, seed=1)
    net, opt = nn.MLP([12, 8, 3], backend="numpy", dtype="float64", seed=0), nn.SGD(0.1, momentum=0.9)
    hist = nn.fit(net, opt, X, t, epochs=1, batch_size=32)
    arrays = {f"param/{k}": v for k, v in net.state_dict().items()}
    arrays.update({f"velocity/{k}": v for k, v in opt.velocity.items()})
    header = {"format": "nnarray-checkpoint", "version": 1, "model": {"layer_sizes": [12, 8, 3], "dtype": "float64"},
              "optimizer": {"type": "SGD", "lr": 0.1, "momentum": 0.9},
              "rng": np.random.default_rng(3).bit_generator.state,
              "history": {k: v for k, v in hist.to_dict().items() if k != "lr"}, "epoch": 1, "config": {}}
    np.savez(tmp_path / "v1.npz", __header__=np.asarray(json.dumps(header)), **arrays)
    ck = nn.load_checkpoint(tmp_path / "v1.npz")
    assert ck["opt"].momentum == 0.9 and _same_params(ck["opt"].velocity, opt.velocity)
    assert ck["history"].lr == [None] and ck["epoch"] == 1


def _npy_bytes(a):
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.mark.parametrize("write, kind, message", [
    (lambda p: p.write_text("hello"), "not-npz", "not an .npz archive"),
    (lambda p: p.write_bytes(_npy_bytes(np.zeros(3))), "npy", "a single .npy array, not an .npz archive"),
    (lambda p: np.savez(p, X_train=np.array([{"a": 1}, None], dtype=object)), "objects",
     "array 'X_train' has dtype object (Python objects, which are read only by unpickling)"),
    (lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00" * 40), "corrupt", "truncated or corrupt"),
])
def test_the_npz_reader_decides_by_the_files_bytes_not_by_messages(tmp_path, write, kind, message):
    """What a file is comes from its first bytes and each member's header, read before NumPy loads data."""
    from nnarray._files import NpzError, read_npz

    path = tmp_path / "f.npz"
    write(path)
    with pytest.raises(NpzError) as exc:
        read_npz(path)
    assert exc.value.kind == kind and message in str(exc.value)
    with pytest.raises(nn.datasets.DatasetError, match=str(path)):
        nn.datasets.load_file(path)
    with pytest.raises(nn.CheckpointError, match=str(path)):
        nn.load(path)
