"""Backend parity on the CPU: the same seeded run on NumPy, array-api-strict and torch.

This is the CPU form of "the two backends give the same results": identical initial weights and
batch order (both drawn on the host), a few hundred SGD steps, float64, rtol 1e-10.
"""

import numpy as np
import pytest

import nnarray as nn

from conftest import CPU_BACKENDS, blobs

RTOL = 1e-10


def _run(backend, dtype="float64", epochs=3, steps_per_epoch=100):
    X, t = blobs(n=2500, n_in=12, n_classes=4, seed=1)
    (X, t), (Xv, tv) = (X[:2000], t[:2000]), (X[2000:], t[2000:])
    net = nn.MLP([12, 32, 16, 4], backend=backend, dtype=dtype, seed=7)
    hist = nn.fit(net, nn.SGD(lr=0.05), X, t, epochs=epochs, batch_size=2000 // steps_per_epoch, seed=11, validation=(Xv, tv))
    return net, hist


@pytest.fixture(scope="module")
def reference():
    return _run("numpy")


@pytest.mark.parametrize("backend", [p for p in CPU_BACKENDS if p.values[0] != "numpy"])
def test_training_run_matches_numpy(backend, reference):
    ref_net, ref_hist = reference
    net, hist = _run(backend)
    assert net.backend.name == backend
    assert ref_hist.val_accuracy[-1] > 0.9, "the run must learn something for the comparison to mean much"
    # 300 SGD steps in all.
    np.testing.assert_allclose(hist.train_loss, ref_hist.train_loss, rtol=RTOL)
    np.testing.assert_allclose(hist.val_loss, ref_hist.val_loss, rtol=RTOL)
    assert hist.train_accuracy == ref_hist.train_accuracy
    assert hist.val_accuracy == ref_hist.val_accuracy
    for k, v in ref_net.params.items():
        got = nn.to_numpy(net.params[k])
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, nn.to_numpy(v), rtol=RTOL, atol=RTOL * np.max(np.abs(nn.to_numpy(v))))


def test_strict_on_a_non_default_device_keeps_everything_there():
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


@pytest.mark.parametrize("backend", [p for p in CPU_BACKENDS])
def test_float32_stays_float32(backend):
    X, t = blobs(n=100, n_in=12, n_classes=4, seed=1)  # float64 input data
    net = nn.MLP([12, 8, 4], backend=backend, dtype="float32", seed=0)
    grads = net.gradient(X, t)
    nn.fit(net, nn.SGD(0.1), X, t, epochs=1, batch_size=10)
    for d in (net.params, grads, {"Y": net.predict(X)}):
        for k, v in d.items():
            assert v.dtype == net.dtype, k


@pytest.mark.parametrize("version", ["2024.12", "2025.12"])
def test_runs_on_each_supported_revision_of_the_standard(version):
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
