"""Dask: lazy, chunked prediction and evaluation on data of many chunks; training refused with the reason."""

import numpy as np
import pytest

import nnarray as nn


@pytest.fixture(scope="module")
def trained():
    from conftest import make_blobs

    X, t = make_blobs(n=1200, n_in=12, n_classes=4, seed=5)
    net = nn.MLP([12, 16, 4], backend="numpy", dtype="float64", seed=3)
    nn.fit(net, nn.Adam(0.01), X, t, epochs=2, batch_size=50)
    return net, X, t


def test_predict_is_lazy_and_chunked(trained):
    import dask.array as da

    net, X, _ = trained
    lazy = net.to("dask")
    Xd = da.from_array(X, chunks=(250, 12))  # 5 chunks of rows
    Y = lazy.predict(Xd)
    assert isinstance(Y, da.Array)
    assert Y.chunks[0] == Xd.chunks[0]  # one output chunk per input chunk: nothing gathered in one piece
    np.testing.assert_allclose(Y.compute(), net.predict(X), rtol=1e-12, atol=1e-15)


def test_evaluate_and_accuracy_by_chunks(trained):
    import dask.array as da

    net, X, t = trained
    lazy = net.to("dask")
    Xd, td = da.from_array(X, chunks=(250, 12)), da.from_array(t, chunks=250)
    loss, acc = nn.evaluate(lazy, Xd, td, batch_size=400)
    ref_loss, ref_acc = nn.evaluate(net, X, t)
    assert loss == pytest.approx(ref_loss, rel=1e-12) and acc == ref_acc
    assert lazy.accuracy(Xd, td) == net.accuracy(X, t)


def test_training_on_dask_is_refused_with_the_reason(trained):
    net, X, t = trained
    lazy = net.to("dask")
    expected = r"net: a network on 'dask' cannot be trained: Dask arrays are lazy.*net\.to\('dask'\)"
    with pytest.raises(TypeError, match=expected):
        nn.fit(lazy, nn.SGD(0.1), X, t, epochs=1)
