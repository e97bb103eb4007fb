"""ONNX export (nnarray.export_onnx, ``nnarray export``): onnxruntime's output equals ``net.predict``."""

import importlib.util

import numpy as np
import pytest

import nnarray as nn
from nnarray.cli import main


def _run_onnx(path, X):
    import onnxruntime as ort

    return ort.InferenceSession(str(path)).run(None, {"X": X})[0]


def _assert_same(Y, ref):
    """float32: within 1e-5 of the largest value, and the same most probable class in every row."""
    ref = nn.to_numpy(ref)
    assert Y.shape == ref.shape and Y.dtype == ref.dtype
    assert np.max(np.abs(Y - ref)) <= 1e-5 * np.max(np.abs(ref))
    np.testing.assert_array_equal(np.argmax(Y, axis=1), np.argmax(ref, axis=1))


@pytest.fixture(scope="module")
def trained(blobs_module):
    X, t = blobs_module
    net = nn.MLP([20, 32, 16, 5], backend="numpy", seed=0, dropout=0.2)
    nn.fit(net, nn.SGD(0.1, momentum=0.9), X[:1000], t[:1000], epochs=2, batch_size=50)
    return net


@pytest.fixture(scope="module")
def blobs_module():
    from conftest import make_blobs

    X, t = make_blobs(n=10000, n_in=20, n_classes=5, seed=3)
    return X.astype(np.float32), t


def test_onnxruntime_equals_predict_on_1_and_10000_rows(tmp_path, trained, blobs_module):
    X, _ = blobs_module
    path = nn.export_onnx(trained, tmp_path / "net.onnx")
    for rows in (X[:1], X):
        _assert_same(_run_onnx(path, rows), trained.predict(rows))


def test_the_batch_dimension_is_dynamic_and_the_output_is_probabilities(tmp_path, trained):
    import onnx

    model = onnx.load(str(nn.export_onnx(trained, tmp_path / "net.onnx")))
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "X" and out.name == "Y"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and dims[1].dim_value == 20
    Y = _run_onnx(tmp_path / "net.onnx", np.zeros((3, 20), np.float32))
    np.testing.assert_allclose(Y.sum(axis=1), 1.0, rtol=1e-6)


def test_a_net_trained_on_jax_exports_the_same(tmp_path, blobs_module, jax_x64):
    X, t = blobs_module
    net = nn.MLP([20, 16, 5], backend="jax", seed=1)
    nn.fit(net, nn.Adam(0.01), X[:500], t[:500], epochs=1, batch_size=50)
    path = nn.export_onnx(net, tmp_path / "jax.onnx")
    _assert_same(_run_onnx(path, X), net.predict(X))


def test_float64_models_export_as_float64(tmp_path):
    net = nn.MLP([6, 4, 3], backend="numpy", dtype="float64", seed=0)
    X = np.random.default_rng(0).random((7, 6))
    Y = _run_onnx(nn.export_onnx(net, tmp_path / "f64.onnx"), X)
    np.testing.assert_allclose(Y, net.predict(X), rtol=1e-12)


def test_missing_extra_is_named(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ndonnx" else real(name, *a))
    with pytest.raises(ImportError, match=r'export_onnx needs ndonnx.*pip install "nnarray\[onnx\]"'):
        nn.export_onnx(nn.MLP([3, 2], backend="numpy"), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(TypeError, match=r"net: expected an nnarray MLP, got str"):
        nn.export_onnx("net.npz", tmp_path / "x.onnx")
    with pytest.raises(TypeError, match=r"path: expected a file path, got int"):
        nn.export_onnx(nn.MLP([3, 2], backend="numpy"), 3)


def test_command_exports_a_run(tmp_path, trained, blobs_module, capsys):
    X, _ = blobs_module
    run = tmp_path / "run"
    run.mkdir()
    nn.save(trained, run / "best.npz")
    assert main(["export", str(run)]) == 0
    assert "wrote" in capsys.readouterr().out
    _assert_same(_run_onnx(run / "best.onnx", X[:10]), trained.predict(X[:10]))
    assert main(["export", str(run / "best.npz"), "--out", str(tmp_path / "other.onnx")]) == 0
    assert (tmp_path / "other.onnx").is_file()


def test_command_reports_a_missing_run(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert "error:" in capsys.readouterr().err
