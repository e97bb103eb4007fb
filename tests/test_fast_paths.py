"""Fast paths against the generic Array API step they stand beside.

The NumPy fast path performs the generic step's operations with preallocated buffers, so the
results must be bit-identical, not merely close.
"""

import numpy as np
import pytest

import nnarray as nn
from nnarray.fast import make_step
from nnarray.fast.numpy_step import NumpyStep
from nnarray.train import GenericStep

from conftest import blobs


def _train(fast, sizes, dtype, reduction, momentum, lr, epochs=2, batch_size=32, n=500):
    X, t = blobs(n=n, n_in=sizes[0], n_classes=sizes[-1], seed=3)
    net = nn.MLP(sizes, backend="numpy", dtype=dtype, seed=1)
    hist = nn.fit(net, nn.SGD(lr, momentum=momentum), X, t, epochs=epochs, batch_size=batch_size, seed=2,
                  reduction=reduction, fast=fast)
    return net, hist


@pytest.mark.parametrize("sizes", [[12, 16, 3], [12, 16, 8, 3]], ids=["one-hidden", "two-hidden"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reduction,lr", [("mean", 0.1), ("sum", 0.003)])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_numpy_fast_path_is_bit_identical_to_the_generic_path(sizes, dtype, reduction, lr, momentum):
    # 500 samples in batches of 32: the last batch of each epoch has 20 rows.
    net_g, hist_g = _train(False, sizes, dtype, reduction, momentum, lr)
    net_f, hist_f = _train(True, sizes, dtype, reduction, momentum, lr)
    for k in net_g.params:
        assert np.array_equal(net_f.params[k], net_g.params[k]), k
    assert hist_f.train_loss == hist_g.train_loss
    assert hist_f.train_accuracy == hist_g.train_accuracy


def test_the_fast_path_is_chosen_automatically_and_can_be_switched_off(monkeypatch):
    X, t = blobs(n=50)
    net = nn.MLP([12, 8, 3], backend="numpy", seed=0)
    Xd, Td = net.backend.asarray(X, dtype=net.dtype), nn.functions.one_hot(net.xp, net.xp.asarray(t), 3, net.dtype)
    opt = nn.SGD(0.1)
    assert isinstance(make_step(net, opt, Xd, Td, "mean"), NumpyStep)
    assert type(make_step(net, opt, Xd, Td, "mean", fast=False)) is GenericStep
    monkeypatch.setenv("NNARRAY_FAST", "0")
    assert type(make_step(net, opt, Xd, Td, "mean")) is GenericStep
    assert isinstance(make_step(net, opt, Xd, Td, "mean", fast=True), NumpyStep)


def test_generic_path_where_no_fast_path_applies():
    X, t = blobs(n=50)
    strict = nn.MLP([12, 8, 3], backend="array_api_strict", seed=0)
    xp = strict.xp
    Xd = strict.backend.asarray(X, dtype=strict.dtype)
    Td = nn.functions.one_hot(xp, strict.backend.asarray(t, dtype=xp.int64), 3, strict.dtype)
    assert type(make_step(strict, nn.SGD(0.1), Xd, Td, "mean")) is GenericStep
    with pytest.raises(ValueError, match=r"fast: no fast path available here \(no fast path for backend 'array_api_strict'\)"):
        nn.fit(strict, nn.SGD(0.1), X, t, epochs=1, fast=True)

    class MySGD(nn.SGD):
        pass

    net = nn.MLP([12, 8, 3], backend="numpy", seed=0)
    Xn, Tn = net.backend.asarray(X, dtype=net.dtype), nn.functions.one_hot(net.xp, net.xp.asarray(t), 3, net.dtype)
    assert NumpyStep.unsupported(net, MySGD(0.1), Xn, Tn) == "optimizer MySGD (only nnarray.SGD)"
    net.params["W1"] = np.asfortranarray(net.params["W1"])
    assert "W1 is not a C-contiguous" in NumpyStep.unsupported(net, nn.SGD(0.1), Xn, Tn)
    assert type(make_step(net, nn.SGD(0.1), Xn, Tn, "mean")) is GenericStep
