"""Dropout on hidden layers: rate, scaling, reproducibility, off in evaluation, gradients with fixed masks,
parity across backends, checkpoints and resume, saved models, errors."""

import dataclasses

import numpy as np
import pytest

import nnarray as nn
from nnarray import functions as F
from nnarray.gradcheck import max_relative_error, numerical_gradient


def test_masks_have_the_rate_and_the_scale():
    net = nn.MLP([20, 500, 400, 300, 3], backend="numpy", seed=0, dropout=[0.3, 0.0, 0.5])
    masks = net.dropout_masks(np.random.default_rng(1), 1000)
    assert masks[1] is None
    for M, p in ((masks[0], 0.3), (masks[2], 0.5)):
        dropped = np.mean(M == 0.0)
        assert abs(dropped - p) < 0.004  # 3e5 or more draws: the standard error is below 1e-3
        assert np.all((M == 0.0) | (M == 1.0 / (1.0 - p)))
        assert abs(M.mean() - 1.0) < 0.01  # inverted dropout keeps the expected value


def _recording_forward(net, calls):
    forward = net.forward

    def recorded(X, masks=None, ops=None):
        calls.append(masks)
        return forward(X, masks, ops)

    net.forward = recorded


def _masks_of_an_epoch(net, Xd, Td, seed, batch_size, rank, size):
    """The masks each forward call of one epoch of rank ``rank`` of ``size`` got (a fake communicator)."""
    from nnarray.step import TrainStep  # noqa: PLC0415

    step = TrainStep(net, nn.SGD(1e-12), Xd, Td, "mean")
    step.mask_rng = np.random.default_rng(seed)
    calls = []
    _recording_forward(net, calls)
    comm = dataclasses.make_dataclass("C", ["rank", "size"])(rank, size)
    try:
        step.epoch(net.backend.asarray(np.arange(Xd.shape[0])), batch_size, comm=comm)
    finally:
        del net.forward
    return calls


def test_fit_drops_at_the_rate_in_training_only(blobs):
    X, t = blobs(n=600, n_in=12, seed=0)
    net = nn.MLP([12, 200, 3], backend="numpy", dtype="float64", seed=0, dropout=0.4)
    calls = []
    _recording_forward(net, calls)
    nn.fit(net, nn.SGD(0.1), X, t, epochs=2, batch_size=100, validation=(X, t))
    training = [m for m in calls if m is not None]
    # + one validation pass per epoch and the divergence guard's start loss, unmasked
    assert len(training) == 2 * 6 and len(calls) == 2 * 6 + 2 + 1
    dropped = np.mean(np.concatenate([nn.to_numpy(m[0]) for m in training]) == 0.0)
    assert abs(dropped - 0.4) < 0.01  # 240 000 draws
    assert all(tuple(m[0].shape) == (100, 200) for m in training)


def test_reproducible_from_the_seed_and_different_for_another(blobs):
    X, t = blobs(n=300, seed=2)

    def run(seed, dropout=0.5):
        net = nn.MLP([12, 16, 16, 3], backend="numpy", dtype="float64", seed=0, dropout=dropout)
        hist = nn.fit(net, nn.Adam(1e-2), X, t, epochs=3, batch_size=32, seed=seed)
        return net, hist

    (a, ha), (b, hb), (c, _), (d, _) = run(1), run(1), run(2), run(1, dropout=0.0)
    assert ha.train_loss == hb.train_loss
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert not np.array_equal(a.params["W1"], c.params["W1"])  # another seed, other masks
    assert not np.array_equal(a.params["W1"], d.params["W1"])  # dropout does something


def test_off_in_evaluation(blobs):
    X, t = blobs(n=200, seed=3)
    net = nn.MLP([12, 16, 3], backend="numpy", dtype="float64", seed=0, dropout=0.5)
    plain = nn.MLP([12, 16, 3], backend="numpy", dtype="float64", seed=0)
    np.testing.assert_array_equal(net.predict(X), plain.predict(X))
    np.testing.assert_array_equal(net.predict(X), net.predict(X))
    assert net.loss(X, t) == plain.loss(X, t) and net.accuracy(X, t) == plain.accuracy(X, t)
    assert nn.evaluate(net, X, t) == nn.evaluate(plain, X, t)


def test_gradient_with_fixed_masks_matches_central_differences():
    rng = np.random.default_rng(4)
    X, t = rng.normal(size=(7, 5)), rng.integers(0, 3, size=7)
    net = nn.MLP([5, 8, 6, 3], backend="numpy", dtype="float64", seed=1, dropout=[0.5, 0.25])
    # Non-zero biases: a row whose units are all dropped would otherwise sit on ReLU's kink (Z = b = 0).
    net.load_state_dict({k: v + (0.1 * rng.normal(size=v.shape) if k[0] == "b" else 0.0)
                         for k, v in net.state_dict().items()})
    masks = net.dropout_masks(np.random.default_rng(5), 7)
    assert all(np.any(M == 0.0) for M in masks)
    xp = net.xp
    A, Hs = net.forward(net.backend.asarray(X), masks)
    a, _, _ = F.softmax_cross_entropy(xp, A, F.one_hot(xp, net.backend.asarray(t), 3, net.dtype), "mean")
    analytic = net.backward(a, Hs, masks)
    numeric = numerical_gradient(net, X, t, masks=masks)
    assert max_relative_error(analytic, numeric) < 1e-7
    # The masks matter: without them the central differences disagree.
    assert max_relative_error(analytic, numerical_gradient(net, X, t)) > 1e-3


def _train(backend, X, t, epochs=3):
    net = nn.MLP([12, 16, 8, 3], backend=backend, dtype="float64", seed=0, dropout=[0.5, 0.2])
    hist = nn.fit(net, nn.SGD(0.1, momentum=0.9), X, t, epochs=epochs, batch_size=25, seed=6, validation=(X, t))
    return net, hist


def test_same_masks_and_results_on_every_backend(other_backend, blobs):
    """float64 training with dropout on array_api_strict, torch, jax (and cupy on a GPU): equal to NumPy's to 1e-10."""
    X, t = blobs(n=200, seed=5)
    ref, ref_hist = _train("numpy", X, t)
    net, hist = _train(other_backend, X, t)
    for k, v in ref.params.items():
        got = nn.to_numpy(net.params[k])
        assert np.max(np.abs(got - v)) <= 1e-10 * np.max(np.abs(v)), k
    np.testing.assert_allclose(hist.train_loss, ref_hist.train_loss, rtol=1e-10)


def test_resume_from_a_checkpoint_draws_the_masks_of_an_uninterrupted_run(tmp_path, blobs):
    X, t = blobs(n=200, seed=5)
    straight, h_straight = _train("numpy", X, t, epochs=4)
    net = nn.MLP([12, 16, 8, 3], backend="numpy", dtype="float64", seed=0, dropout=[0.5, 0.2])
    opt, rng = nn.SGD(0.1, momentum=0.9), np.random.default_rng(6)
    hist = nn.fit(net, opt, X, t, epochs=2, batch_size=25, seed=rng, validation=(X, t))
    nn.save_checkpoint(tmp_path / "ck.npz", net, opt, rng, hist)
    ck = nn.load_checkpoint(tmp_path / "ck.npz", backend="numpy")
    assert ck["net"].dropout == [0.5, 0.2]
    h = nn.fit(ck["net"], ck["opt"], X, t, epochs=2, batch_size=25, seed=ck["rng"], validation=(X, t),
               options=nn.FitOptions(history=ck["history"]))
    assert h.train_loss == h_straight.train_loss
    for k, v in straight.params.items():
        np.testing.assert_array_equal(ck["net"].params[k], v)


def test_saved_models_keep_the_rates(tmp_path):
    net = nn.MLP([4, 6, 5, 2], backend="numpy", seed=0, dropout=[0.25, 0.5])
    nn.save(net, tmp_path / "m.npz")
    assert nn.load(tmp_path / "m.npz").dropout == [0.25, 0.5]
    assert net.to("array_api_strict").dropout == [0.25, 0.5]
    assert "dropout=[0.25, 0.5]" in repr(net) and "dropout" not in repr(nn.MLP([4, 6, 2], backend="numpy"))


def test_models_saved_before_dropout_load_without_it(tmp_path):
    """A header without "dropout" (files of earlier versions) means no dropout."""
    import json  # noqa: PLC0415

    net = nn.MLP([4, 6, 2], backend="numpy", seed=0)
    header = {"format": "nnarray-model", "version": 2, "layer_sizes": [4, 6, 2], "dtype": "float32"}
    arrays = {"__header__": np.asarray(json.dumps(header))}
    arrays.update(net.state_dict())
    np.savez(tmp_path / "old.npz", **arrays)
    assert nn.load(tmp_path / "old.npz").dropout == [0.0]


def test_data_parallel_shares_take_rows_of_the_global_batchs_masks(blobs):
    """With P ranks each rank trains its rows with the masks the one-process run gives those rows."""

    X, t = blobs(n=50, seed=1)
    net = nn.MLP([12, 9, 3], backend="numpy", dtype="float64", seed=0, dropout=0.5)
    Xd, Td = net.backend.asarray(X), F.one_hot(net.xp, net.backend.asarray(t), 3, net.dtype)
    seen = {}
    for rank, size in ((0, 1), (0, 2), (1, 2)):
        calls = _masks_of_an_epoch(net, Xd, Td, 3, 20, rank, size)
        seen[rank, size] = [nn.to_numpy(m[0]) for m in calls]
    one = seen[0, 1]
    for b, M in enumerate(one):
        h = M.shape[0] // 2
        np.testing.assert_array_equal(seen[0, 2][b], M[:h])
        np.testing.assert_array_equal(seen[1, 2][b], M[h:])


def _masks_batch_by_batch(net, rng, n):
    """The reference: each batch's masks drawn by their own calls, u in float64, M/(1 − p) made in float64
    and cast to the compute dtype (how masks were made before they were drawn for many batches at once)."""
    return [None if p == 0.0 else ((rng.random((n, w)) >= p) * (1.0 / (1.0 - p))).astype(net.dtype_name)
            for w, p in zip(net.layer_sizes[1:-1], net.dropout, strict=True)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_masks_drawn_for_many_batches_equal_the_batch_by_batch_masks(dtype):
    net = nn.MLP([5, 7, 6, 8, 2], backend="numpy", dtype=dtype, seed=0, dropout=[0.3, 0.0, 0.5])
    rows = [4, 4, 4, 3]
    bufs = net.draw_dropout(np.random.default_rng(9), rows)
    ref_rng = np.random.default_rng(9)
    r = 0
    for n in rows:
        for M, R in zip(bufs, _masks_batch_by_batch(net, ref_rng, n), strict=True):
            if R is None:
                assert M is None
                continue
            assert M.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(M[r : r + n], R)
        r += n
    assert bufs[0].shape == (15, 7) and bufs[2].shape == (15, 8)


@pytest.mark.parametrize("buffer_bytes", [1, 100, 2**20])  # a buffer per batch, per two batches, per epoch
@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_epoch_masks_are_the_batch_by_batch_masks_on_every_backend_and_rank_count(backend, monkeypatch,
                                                                                 buffer_bytes, ranks):
    """One buffer per epoch (or per few batches), sent once: the same values as one draw per batch, and each
    rank's share is its rows of the global batch's masks."""
    from nnarray import step as step_mod  # noqa: PLC0415

    monkeypatch.setattr(step_mod, "MASK_BUFFER_BYTES", buffer_bytes)
    X, t = np.zeros((23, 3)), np.zeros(23, dtype=np.int64)
    net = nn.MLP([3, 3, 2, 2], backend=backend, dtype="float32", seed=0, dropout=[0.5, 0.25])
    Xd, Td = net.backend.asarray(X, dtype=net.dtype), F.one_hot(net.xp, net.backend.asarray(t), 2, net.dtype)
    ref_rng = np.random.default_rng(4)
    reference = [_masks_batch_by_batch(net, ref_rng, min(5, 23 - s)) for s in range(0, 23, 5)]
    for rank in range(ranks):
        calls = _masks_of_an_epoch(net, Xd, Td, 4, 5, rank, ranks)
        assert len(calls) == len(reference)
        for got, want in zip(calls, reference, strict=True):
            n = want[0].shape[0]
            lo, hi = n * rank // ranks, n * (rank + 1) // ranks
            for M, R in zip(got, want, strict=True):
                np.testing.assert_array_equal(nn.to_numpy(M), R[lo:hi])


@pytest.mark.parametrize(
    "dropout,error,match",
    [
        (1.0, ValueError, r"dropout: expected a probability in \[0, 1\), got 1.0"),
        (-0.1, ValueError, r"dropout: expected a probability in \[0, 1\), got -0.1"),
        ("0.5", TypeError, r"dropout: expected a probability in \[0, 1\), got '0.5'"),
        (True, TypeError, r"dropout: expected a probability"),
        ([0.5], ValueError, r"dropout: expected one rate per hidden layer \(2\), got 1: \[0.5\]"),
        ([0.5, 1.5], ValueError, r"dropout\[1\]: expected a probability in \[0, 1\), got 1.5"),
    ],
)
def test_bad_rates_name_the_argument(dropout, error, match):
    with pytest.raises(error, match=match):
        nn.MLP([4, 5, 5, 2], backend="numpy", dropout=dropout)


def test_no_hidden_layer_no_dropout():
    with pytest.raises(ValueError, match="dropout: the network has no hidden layer"):
        nn.MLP([4, 2], backend="numpy", dropout=0.5)
    assert nn.MLP([4, 2], backend="numpy", dropout=0.0).dropout == []


def test_the_cupy_graph_step_steps_aside_for_dropout(monkeypatch):
    from nnarray.fast import cupy_graph  # noqa: PLC0415

    monkeypatch.setattr(cupy_graph, "VALIDATED", True)
    net = nn.MLP([4, 3, 2], backend="numpy", seed=0, dropout=0.5)
    net.backend = dataclasses.replace(net.backend, name="cupy")
    reason = cupy_graph.CupyGraphStep.unsupported(net, nn.SGD(0.1), np.zeros((5, 4)), np.zeros((5, 2)), batch_size=5)
    assert reason is not None and "dropout" in reason
