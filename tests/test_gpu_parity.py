"""NumPy vs CuPy parity on a real GPU (marked ``gpu``; skipped, with the reason, without CUDA).

Identical initial weights and batches (drawn on the host). Tolerances from ARRAY_API_GUIDE.md:
float64 rtol 1e-10 after a few hundred steps; float32 rtol 1e-3, atol 1e-4·max|ref| after ≤100 steps
(ReLU units sitting at 0 may flip); one float32 forward/backward rtol 1e-4, atol 1e-5·scale.
"""

import os

import numpy as np
import pytest

import nnarray as nn

from conftest import HAS_CUPY_GPU, NO_GPU_REASON, blobs

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not HAS_CUPY_GPU, reason=NO_GPU_REASON)]


@pytest.fixture(autouse=True)
def tf32_off():
    # TF32 keeps ~10 mantissa bits in float32 matmuls and breaks every tolerance below.
    assert os.environ.get("CUPY_TF32", "0") in ("", "0"), "unset CUPY_TF32 for parity tests"


def _close(got, ref, rtol, atol_scale):
    got, ref = nn.to_numpy(got), nn.to_numpy(ref)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol_scale * max(np.max(np.abs(ref)), 1e-30))


@pytest.mark.parametrize("dtype,rtol,atol", [("float64", 1e-10, 1e-12), ("float32", 1e-4, 1e-5)])
def test_one_forward_backward(dtype, rtol, atol):
    X, t = blobs(n=128, n_in=64, n_classes=10, seed=0)
    nets = {b: nn.MLP([64, 256, 10], backend=b, dtype=dtype, seed=0) for b in ("numpy", "cupy")}
    assert nets["cupy"].backend.name == "cupy"
    A = {b: n.forward(n.backend.asarray(X, dtype=n.dtype))[0] for b, n in nets.items()}
    _close(A["cupy"], A["numpy"], rtol, atol)
    assert abs(nets["cupy"].loss(X, t) - nets["numpy"].loss(X, t)) <= (1e-12 if dtype == "float64" else 1e-5)
    g = {b: n.gradient(X, t) for b, n in nets.items()}
    for k in g["numpy"]:
        _close(g["cupy"][k], g["numpy"][k], rtol, atol)


@pytest.mark.parametrize("dtype,epochs,rtol,atol", [("float64", 3, 1e-10, 1e-10), ("float32", 1, 1e-3, 1e-4)])
def test_training_run(dtype, epochs, rtol, atol):
    X, t = blobs(n=2000, n_in=64, n_classes=10, seed=1)
    runs = {}
    for b in ("numpy", "cupy"):
        net = nn.MLP([64, 128, 10], backend=b, dtype=dtype, seed=3)
        # 100 steps per epoch: 300 steps in float64, 100 in float32.
        hist = nn.fit(net, nn.SGD(0.05), X, t, epochs=epochs, batch_size=20, seed=5)
        runs[b] = (net, hist)
    (n_np, h_np), (n_cp, h_cp) = runs["numpy"], runs["cupy"]
    np.testing.assert_allclose(h_cp.train_loss, h_np.train_loss, rtol=rtol)
    for k in n_np.params:
        _close(n_cp.params[k], n_np.params[k], rtol, atol)
    if dtype == "float64":
        assert h_cp.train_accuracy == h_np.train_accuracy
    else:
        assert abs(h_cp.train_accuracy[-1] - h_np.train_accuracy[-1]) <= 1 / X.shape[0] * 5


def test_fashion_mnist_test_accuracy_agrees():
    data = pytest.importorskip("nnarray.datasets")
    try:
        (X, t), (Xt, tt) = data.load_fashion_mnist(download=False)
    except FileNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST not available: {exc}")
    acc = {}
    for b in ("numpy", "cupy"):
        net = nn.MLP([784, 100, 10], backend=b, dtype="float64", seed=0)
        nn.fit(net, nn.SGD(0.1), X, t, epochs=1, batch_size=100, seed=0)
        acc[b] = net.accuracy(Xt, tt)
    assert abs(acc["cupy"] - acc["numpy"]) <= 1 / Xt.shape[0] + 1e-12, acc


def test_checkpoint_saved_on_gpu_loads_on_cpu(tmp_path):
    net = nn.MLP([8, 6, 3], backend="cupy", seed=0)
    nn.save(net, tmp_path / "m.npz")
    cpu = nn.load(tmp_path / "m.npz", backend="numpy")
    for k in net.params:
        np.testing.assert_array_equal(nn.to_numpy(cpu.params[k]), nn.to_numpy(net.params[k]))
