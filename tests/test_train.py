"""Training behaviour: it learns, it is reproducible, it reports what it did."""

import numpy as np
import pytest

import nnarray as nn


def test_learns_a_synthetic_problem_to_a_stated_accuracy(blobs):
    X, t = blobs(n=3000, n_in=20, n_classes=5, seed=0, dtype=np.float32)
    Xv, tv = blobs(n=1000, n_in=20, n_classes=5, seed=0, dtype=np.float32)
    Xv, tv = Xv[:1000], tv[:1000]
    net = nn.MLP([20, 64, 5], backend="numpy", seed=0)
    hist = nn.fit(net, nn.SGD(0.1), X[:2000], t[:2000], epochs=10, batch_size=50, seed=0,
                  validation=(X[2000:], t[2000:]))
    assert hist.train_loss[-1] < 0.5 * hist.train_loss[0]
    assert hist.val_accuracy[-1] >= 0.95
    assert net.accuracy(X[2000:], t[2000:]) == pytest.approx(hist.val_accuracy[-1])


def test_learns_a_nonlinear_problem_with_two_hidden_layers():
    """XOR-like quadrants: impossible for a linear model, easy for the network."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(2000, 2))
    t = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(np.int64)
    net = nn.MLP([2, 32, 32, 2], backend="numpy", dtype="float64", seed=1)
    nn.fit(net, nn.SGD(0.1, momentum=0.9), X, t, epochs=30, batch_size=50, seed=0)
    assert net.accuracy(X, t) >= 0.95


def test_seeds_convention_sum_trains_too(blobs):
    X, t = blobs(n=1000, n_in=10, n_classes=3, seed=4)
    net = nn.MLP([10, 16, 3], backend="numpy", seed=0)
    hist = nn.fit(net, nn.SGD(0.001), X, t, epochs=5, batch_size=100, reduction="sum")
    assert hist.train_accuracy[-1] > 0.9


def test_same_seed_gives_an_identical_history_twice(blobs):
    X, t = blobs(n=500, seed=2)

    def run():
        net = nn.MLP([12, 16, 3], backend="numpy", dtype="float32", seed=5)
        h = nn.fit(net, nn.SGD(0.1), X, t, epochs=3, batch_size=32, seed=9, validation=(X, t))
        return h, net

    (h1, n1), (h2, n2) = run(), run()
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch", "samples"):
        assert h1[key] == h2[key], key
    for k in n1.params:
        assert np.array_equal(nn.to_numpy(n1.params[k]), nn.to_numpy(n2.params[k]))


def test_different_seed_gives_a_different_run(blobs):
    X, t = blobs(n=500, seed=2)
    a = nn.fit(nn.MLP([12, 16, 3], seed=5, backend="numpy"), nn.SGD(0.1), X, t, epochs=1, batch_size=32, seed=1)
    b = nn.fit(nn.MLP([12, 16, 3], seed=5, backend="numpy"), nn.SGD(0.1), X, t, epochs=1, batch_size=32, seed=2)
    assert a.train_loss != b.train_loss


def test_history_contents_and_partial_last_batch(blobs):
    X, t = blobs(n=105, seed=3)
    hist = nn.fit(nn.MLP([12, 8, 3], backend="numpy", seed=0), nn.SGD(0.1), X, t, epochs=2, batch_size=50)
    assert hist.epoch == [1, 2] and len(hist) == 2
    assert hist.samples == [105, 105]  # 50 + 50 + 5: the last partial batch is trained on
    assert all(s > 0 for s in hist.seconds)
    assert hist.val_accuracy == [None, None]
    with pytest.raises(KeyError, match="no column 'loss'"):
        hist["loss"]
    assert nn.History.from_dict(hist.to_dict()).to_dict() == hist.to_dict()


def test_two_runs_of_two_epochs_with_a_carried_generator_equal_four_epochs(blobs):
    X, t = blobs(n=300, seed=3)
    net_a = nn.MLP([12, 8, 3], backend="numpy", dtype="float64", seed=0)
    ha = nn.fit(net_a, nn.SGD(0.1, momentum=0.5), X, t, epochs=4, batch_size=32, seed=3)
    net_b = nn.MLP([12, 8, 3], backend="numpy", dtype="float64", seed=0)
    opt, rng = nn.SGD(0.1, momentum=0.5), np.random.default_rng(3)
    hb = nn.fit(net_b, opt, X, t, epochs=2, batch_size=32, seed=rng)
    hb = nn.fit(net_b, opt, X, t, epochs=2, batch_size=32, seed=rng, options=nn.FitOptions(history=hb))
    assert hb.epoch == [1, 2, 3, 4]
    assert hb.train_loss == ha.train_loss
    for k in net_a.params:
        assert np.array_equal(nn.to_numpy(net_a.params[k]), nn.to_numpy(net_b.params[k]))


def test_fit_does_not_modify_the_callers_data(blobs):
    X, t = blobs(n=200, seed=3)
    X0, t0 = X.copy(), t.copy()
    X.setflags(write=False)
    nn.fit(nn.MLP([12, 8, 3], backend="numpy", dtype="float64", seed=0), nn.SGD(0.1), X, t, epochs=1, batch_size=16)
    assert np.array_equal(X, X0) and np.array_equal(t, t0)


def test_callback_and_progress_hooks(blobs):
    X, t = blobs(n=400, seed=3)
    seen, progress = [], []

    class Progress(nn.callbacks.Callback):
        log_every = 5

        def on_batches(self, run, done, n_batches, read_loss):
            progress.append((done, n_batches, read_loss()))

    nn.fit(nn.MLP([12, 8, 3], backend="numpy", seed=0), nn.SGD(0.1), X, t, epochs=2, batch_size=20,
           callbacks=[seen.append, Progress()])
    assert [r["epoch"] for r in seen] == [1, 2]
    assert [p[0] for p in progress] == [5, 10, 15, 20] * 2 and all(p[1] == 20 for p in progress)
    assert all(np.isfinite(p[2]) and p[2] > 0 for p in progress)
    assert progress[3][2] == pytest.approx(seen[0]["train_loss"], rel=1e-5)


def test_evaluate_matches_loss_and_accuracy(blobs):
    X, t = blobs(n=300, seed=6)
    net = nn.MLP([12, 8, 3], backend="numpy", dtype="float64", seed=0)
    loss, acc = nn.evaluate(net, X, t, batch_size=64)
    assert loss == pytest.approx(net.loss(X, t), rel=1e-12)
    assert acc == pytest.approx(net.accuracy(X, t))


def test_a_callback_stops_training_after_the_epoch_and_every_callback_still_runs(blobs):
    X, t = blobs(n=200, seed=3)
    seen = []

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise nn.StopTraining

    hist = nn.fit(nn.MLP([12, 8, 3], backend="numpy", seed=0), nn.SGD(0.1), X, t, epochs=10, batch_size=50,
                  callbacks=[stop_after_two, seen.append])
    assert hist.epoch == [1, 2] and [r["epoch"] for r in seen] == [1, 2]


def test_divergence_restores_the_optimizers_state_too(blobs):
    X, t = blobs(n=200, seed=3)
    X = X * 50
    net = nn.MLP([12, 16, 3], backend="numpy", dtype="float32", seed=0)
    opt = nn.SGD(1e-4, momentum=0.9)
    nn.fit(net, opt, X, t, epochs=1, batch_size=20)
    opt.lr = 1e4  # (SGD rescales its velocities v = −η·b to the new η)
    velocity = {k: v.copy() for k, v in opt.velocity.items()}
    params = {k: v.copy() for k, v in net.params.items()}
    with pytest.raises(nn.TrainingDivergedError):
        nn.fit(net, opt, X, t, epochs=2, batch_size=20)
    for k in params:
        assert np.array_equal(net.params[k], params[k]) and np.array_equal(opt.velocity[k], velocity[k]), k
    assert all(np.all(np.isfinite(v)) for v in opt.velocity.values())


def test_bad_callbacks_and_schedules_are_refused_before_training(blobs):
    X, t = blobs(n=50, seed=3)
    net = nn.MLP([12, 8, 3], backend="numpy", seed=0)
    with pytest.raises(TypeError, match="callbacks: expected callables or Callback objects, got int"):
        nn.fit(net, nn.SGD(0.1), X, t, callbacks=[print, 3])
    with pytest.raises(TypeError, match="schedule: expected a schedule"):
        nn.fit(net, nn.SGD(0.1), X, t, schedule=0.1)
