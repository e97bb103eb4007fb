"""Backend parity: the same seeded computation on NumPy, array-api-strict, PyTorch and CuPy.

Every backend starts from identical initial weights and sees the same batches (both drawn on the host),
so each must reproduce NumPy's results. Tolerances (../shared/ARRAY_API_GUIDE.md): float64 rtol 1e-10
after a few hundred SGD steps; float32 rtol 1e-3, atol 1e-4·max|ref| after ≤ 100 steps (ReLU units sitting
at 0 may flip between summation orders); one float32 forward/backward rtol 1e-4, atol 1e-5·scale. CuPy runs
are marked ``gpu`` (the ``backend`` fixture does it) and skipped, with the reason, without CUDA.
"""

import os

import numpy as np
import pytest

import nnarray as nn

RTOL = 1e-10


@pytest.fixture
def backend(other_backend):
    """Each test here compares a backend's run with NumPy's: every backend but NumPy itself."""
    return other_backend


@pytest.fixture(autouse=True)
def tf32_off():
    # TF32 keeps ~10 mantissa bits in float32 matmuls on CuPy and breaks every tolerance below.
    assert os.environ.get("CUPY_TF32", "0") in ("", "0"), "unset CUPY_TF32 for parity tests"


def _close(got, ref, rtol, atol_scale):
    got, ref = nn.to_numpy(got), nn.to_numpy(ref)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol_scale * max(np.max(np.abs(ref)), 1e-30))


def _run(blobs, backend, dtype="float64", epochs=3, steps_per_epoch=100):
    X, t = blobs(n=2500, n_in=12, n_classes=4, seed=1)
    (X, t), (Xv, tv) = (X[:2000], t[:2000]), (X[2000:], t[2000:])
    net = nn.MLP([12, 32, 16, 4], backend=backend, dtype=dtype, seed=7)
    hist = nn.fit(net, nn.SGD(lr=0.05), X, t, epochs=epochs, batch_size=2000 // steps_per_epoch, seed=11,
                  validation=(Xv, tv))
    return net, hist


@pytest.fixture(scope="module")
def reference(blobs):
    return _run(blobs, "numpy")


def test_training_run_matches_numpy(backend, reference, blobs):
    """300 SGD steps in float64 with validation: losses, accuracies and parameters as on NumPy."""
    ref_net, ref_hist = reference
    net, hist = _run(blobs, backend)
    assert net.backend.name == backend
    assert ref_hist.val_accuracy[-1] > 0.9, "the run must learn something for the comparison to mean much"
    np.testing.assert_allclose(hist.train_loss, ref_hist.train_loss, rtol=RTOL)
    np.testing.assert_allclose(hist.val_loss, ref_hist.val_loss, rtol=RTOL)
    assert hist.train_accuracy == ref_hist.train_accuracy
    assert hist.val_accuracy == ref_hist.val_accuracy
    for k, v in ref_net.params.items():
        got = nn.to_numpy(net.params[k])
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, nn.to_numpy(v), rtol=RTOL, atol=RTOL * np.max(np.abs(nn.to_numpy(v))))


def test_schedule_and_replaced_parameters_match_numpy(backend, blobs):
    """η changing every epoch, momentum, parameters replaced between two fit calls: 300 float64 steps as on NumPy."""
    X, t = blobs(n=1000, n_in=12, n_classes=4, seed=2)
    runs = {}
    for b in ("numpy", backend):
        net = nn.MLP([12, 32, 16, 4], backend=b, dtype="float64", seed=7)
        opt = nn.SGD(0.05, momentum=0.9)
        hist = nn.fit(net, opt, X, t, epochs=3, batch_size=20, seed=11, schedule=nn.schedules.Exponential(0.05, 0.7))
        net.params = {k: v * 0.5 for k, v in net.params.items()}
        hist = nn.fit(net, opt, X, t, epochs=3, batch_size=20, seed=12,
                      schedule=nn.schedules.Exponential(0.05, 0.7), options=nn.FitOptions(history=hist))
        runs[b] = (net, hist)
    (ref_net, ref_hist), (net, hist) = runs["numpy"], runs[backend]
    assert hist.lr == pytest.approx([0.05 * 0.7 ** (e - 1) for e in range(1, 7)])
    np.testing.assert_allclose(hist.train_loss, ref_hist.train_loss, rtol=RTOL)
    assert hist.train_accuracy == ref_hist.train_accuracy
    for k, v in ref_net.params.items():
        _close(net.params[k], v, RTOL, RTOL)


@pytest.mark.parametrize("dtype,rtol,atol", [("float64", 1e-10, 1e-12), ("float32", 1e-4, 1e-5)])
def test_one_forward_backward(backend, dtype, rtol, atol, blobs):
    X, t = blobs(n=128, n_in=64, n_classes=10, seed=0)
    nets = {b: nn.MLP([64, 256, 10], backend=b, dtype=dtype, seed=0) for b in ("numpy", backend)}
    assert nets[backend].backend.name == backend
    A = {b: n.forward(n.backend.asarray(X, dtype=n.dtype))[0] for b, n in nets.items()}
    _close(A[backend], A["numpy"], rtol, atol)
    assert abs(nets[backend].loss(X, t) - nets["numpy"].loss(X, t)) <= (1e-12 if dtype == "float64" else 1e-5)
    g = {b: n.gradient(X, t) for b, n in nets.items()}
    for k in g["numpy"]:
        _close(g[backend][k], g["numpy"][k], rtol, atol)


@pytest.mark.parametrize("dtype,epochs,rtol,atol", [("float64", 3, 1e-10, 1e-10), ("float32", 1, 1e-3, 1e-4)])
def test_training_run_64_to_10(backend, dtype, epochs, rtol, atol, blobs):
    X, t = blobs(n=2000, n_in=64, n_classes=10, seed=1)
    runs = {}
    for b in ("numpy", backend):
        net = nn.MLP([64, 128, 10], backend=b, dtype=dtype, seed=3)
        # 100 steps per epoch: 300 steps in float64, 100 in float32.
        hist = nn.fit(net, nn.SGD(0.05), X, t, epochs=epochs, batch_size=20, seed=5)
        runs[b] = (net, hist)
    (n_np, h_np), (n_b, h_b) = runs["numpy"], runs[backend]
    np.testing.assert_allclose(h_b.train_loss, h_np.train_loss, rtol=rtol)
    for k in n_np.params:
        _close(n_b.params[k], n_np.params[k], rtol, atol)
    if dtype == "float64":
        assert h_b.train_accuracy == h_np.train_accuracy
    else:
        assert abs(h_b.train_accuracy[-1] - h_np.train_accuracy[-1]) <= 1 / X.shape[0] * 5


def test_fashion_mnist_test_accuracy_agrees(backend):
    try:
        (X, t), (Xt, tt) = nn.datasets.load_fashion_mnist(download=False)
    except nn.datasets.DatasetError as exc:
        pytest.skip(f"Fashion-MNIST not available: {exc}")
    if backend != "cupy":  # the CPU backends are slow in float64; 120 steps still test the whole path
        X, t = X[:12000], t[:12000]
    acc = {}
    for b in ("numpy", backend):
        net = nn.MLP([784, 100, 10], backend=b, dtype="float64", seed=0)
        nn.fit(net, nn.SGD(0.1), X, t, epochs=1, batch_size=100, seed=0)
        acc[b] = net.accuracy(Xt, tt)
    assert acc["numpy"] > 0.75
    assert abs(acc[backend] - acc["numpy"]) <= 1 / Xt.shape[0] + 1e-12, acc


def test_model_saved_on_any_backend_loads_on_numpy(backend, tmp_path):
    net = nn.MLP([8, 6, 3], backend=backend, seed=0)
    nn.save(net, tmp_path / "m.npz")
    cpu = nn.load(tmp_path / "m.npz", backend="numpy")
    for k in net.params:
        np.testing.assert_array_equal(nn.to_numpy(cpu.params[k]), nn.to_numpy(net.params[k]))


def test_float32_stays_float32(backend, blobs):
    X, t = blobs(n=100, n_in=12, n_classes=4, seed=1)  # float64 input data
    net = nn.MLP([12, 8, 4], backend=backend, dtype="float32", seed=0)
    grads = net.gradient(X, t)
    nn.fit(net, nn.SGD(0.1), X, t, epochs=1, batch_size=10)
    for d in (net.params, grads, {"Y": net.predict(X)}):
        for k, v in d.items():
            assert v.dtype == net.dtype, k


def test_strict_on_a_non_default_device_keeps_everything_there(blobs):
    """array-api-strict's "device1" catches any array created on the default device by mistake."""
    import array_api_strict as xps

    be = nn.Backend("array_api_strict", xps, xps.Device("device1"))
    X, t = blobs(n=200, n_in=12, n_classes=4, seed=1)
    net = nn.MLP([12, 8, 4], backend=be, dtype="float32", seed=0)
    nn.fit(net, nn.SGD(0.1), X, t, epochs=1, batch_size=50, validation=(X, t))
    for k, v in net.params.items():
        assert v.device == xps.Device("device1"), k
        assert v.dtype == xps.float32, k  # no silent upcast
    assert net.predict(X).device == xps.Device("device1")


@pytest.mark.parametrize("version", ["2024.12", "2025.12"])
def test_runs_on_each_supported_revision_of_the_standard(version, blobs):
    import array_api_strict as xps

    X, t = blobs(n=200, n_in=12, n_classes=4, seed=1)
    with xps.ArrayAPIStrictFlags(api_version=version):
        net = nn.MLP([12, 8, 4], backend="array_api_strict", dtype="float64", seed=0)
        hist = nn.fit(net, nn.SGD(0.1), X, t, epochs=2, batch_size=50, validation=(X, t))
        probs = nn.to_numpy(net.predict(X))
    ref = nn.MLP([12, 8, 4], backend="numpy", dtype="float64", seed=0)
    ref_hist = nn.fit(ref, nn.SGD(0.1), X, t, epochs=2, batch_size=50, validation=(X, t))
    np.testing.assert_allclose(hist.train_loss, ref_hist.train_loss, rtol=RTOL)
    np.testing.assert_allclose(probs, nn.to_numpy(ref.predict(X)), rtol=RTOL)


def test_older_revisions_are_refused_clearly():
    import array_api_strict as xps

    with xps.ArrayAPIStrictFlags(api_version="2023.12"):
        with pytest.raises(nn.BackendUnavailableError, match=r"2023\.12 revision; nnarray needs 2024\.12 or later"):
            nn.get_backend("array_api_strict")
