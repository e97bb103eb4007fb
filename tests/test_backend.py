"""Backend selection: names, the environment default, and several backends side by side."""

import numpy as np
import pytest

import nnarray as nn


@pytest.mark.parametrize("name", ["numpy", "array_api_strict"])
def test_named_backends(name):
    be = nn.get_backend(name)
    assert be.name == name
    x = be.asarray(np.arange(3.0), dtype=be.dtype("float32"))
    assert x.dtype == be.xp.float32
    np.testing.assert_array_equal(nn.to_numpy(x), [0.0, 1.0, 2.0])


def test_auto_picks_numpy_without_a_gpu():
    if nn.cupy_available():
        assert nn.get_backend("auto").name == "cupy"
    else:
        assert nn.get_backend("auto").name == "numpy"


def test_environment_variable_gives_the_default(monkeypatch):
    monkeypatch.setenv("NNARRAY_BACKEND", "array_api_strict")
    assert nn.get_backend().name == "array_api_strict"
    assert nn.MLP([3, 2]).backend.name == "array_api_strict"
    monkeypatch.delenv("NNARRAY_BACKEND")
    assert nn.get_backend().name in ("numpy", "cupy")


def test_backends_side_by_side_in_one_process():
    a = nn.MLP([5, 4, 3], backend="numpy", dtype="float64", seed=1)
    b = nn.MLP([5, 4, 3], backend="array_api_strict", dtype="float64", seed=1)
    for k in a.params:
        assert np.array_equal(nn.to_numpy(a.params[k]), nn.to_numpy(b.params[k]))
    X = np.random.default_rng(0).random((4, 5))
    np.testing.assert_allclose(nn.to_numpy(a.predict(X)), nn.to_numpy(b.predict(X)), rtol=1e-14)


def test_he_initialisation():
    net = nn.MLP([784, 300, 10], backend="numpy", dtype="float64", seed=0)
    W1, W2 = nn.to_numpy(net.params["W1"]), nn.to_numpy(net.params["W2"])
    assert W1.shape == (784, 300) and W2.shape == (300, 10)
    assert W1.std() == pytest.approx(np.sqrt(2 / 784), rel=0.02)
    assert W2.std() == pytest.approx(np.sqrt(2 / 300), rel=0.1)
    assert abs(W1.mean()) < 0.01 * W1.std() * 10
    assert not np.any(nn.to_numpy(net.params["b1"])) and not np.any(nn.to_numpy(net.params["b2"]))
    # The float32 network from the same seed holds the same weights, rounded.
    net32 = nn.MLP([784, 300, 10], backend="numpy", dtype="float32", seed=0)
    np.testing.assert_array_equal(nn.to_numpy(net32.params["W1"]), W1.astype(np.float32))


def test_network_moves_between_backends():
    a = nn.MLP([5, 4, 3], backend="numpy", seed=1)
    b = a.to("array_api_strict")
    assert b.backend.name == "array_api_strict" and b.dtype_name == "float32"
    for k in a.params:
        assert np.array_equal(nn.to_numpy(a.params[k]), nn.to_numpy(b.params[k]))


def test_backend_arrays_as_input():
    """X and t already on the backend are used as they are."""
    be = nn.get_backend("array_api_strict")
    X = be.asarray(np.random.default_rng(0).random((6, 5)), dtype=be.xp.float64)
    t = be.asarray(np.array([0, 1, 2, 0, 1, 2]), dtype=be.xp.int64)
    net = nn.MLP([5, 4, 3], backend=be, dtype="float64", seed=1)
    assert 0.0 <= net.accuracy(X, t) <= 1.0
    nn.fit(net, nn.SGD(0.1), X, t, epochs=1, batch_size=3)


@pytest.mark.torch
def test_torch_backend_on_the_cpu():
    be = nn.get_backend("torch")
    assert be.name == "torch"
    net = nn.MLP([5, 4, 3], backend=be, dtype="float64", seed=1)
    import torch

    assert isinstance(net.params["W1"], torch.Tensor) and net.params["W1"].dtype == torch.float64
