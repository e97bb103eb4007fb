"""The training run as callbacks (nnarray.callbacks) and fit's checks before any work.

Every refusal names the argument, the expectation and the value, and comes before anything was trained or
written: the parameters are those of before, no callback saw an epoch, no file was left behind.
"""

import inspect
import math
import os
import sys

import numpy as np
import pytest

import nnarray as nn
from nnarray.callbacks import (
    Callback,
    DivergenceGuard,
    EarlyStopping,
    HistoryLogger,
    ModelCheckpoint,
    ProgressBar,
)


@pytest.fixture
def data():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 4))
    t = rng.integers(0, 3, size=200)
    return X, t


def _net():
    return nn.MLP([4, 16, 3], backend="numpy", dtype="float64", seed=0)


def _untouched(net, before):
    return all(np.array_equal(net.params[k], before[k]) for k in before)


def _refused(net, exc, match, *args, **kw):
    """fit raises ``exc`` matching ``match`` before any update and before any callback saw an epoch."""
    before = {k: v.copy() for k, v in net.params.items()}
    seen = []
    kw["callbacks"] = [*kw.get("callbacks", []), seen.append]
    with pytest.raises(exc, match=match):
        nn.fit(net, *args, **kw)
    assert _untouched(net, before) and seen == []


def test_fit_takes_at_most_twelve_parameters():
    assert len(inspect.signature(nn.fit).parameters) <= 12


# ------------------------------------------------------------------------------------------- preflight
def test_a_checkpoint_under_a_file_is_refused_before_training(data, tmp_path):
    (tmp_path / "afile").write_text("x")
    path = tmp_path / "afile" / "run" / "checkpoint.npz"
    _refused(_net(), NotADirectoryError, rf"ModelCheckpoint path: cannot write {path}: {tmp_path / 'afile'} is a file",
             nn.SGD(0.1), *data, epochs=2, callbacks=[ModelCheckpoint(path)])
    assert sorted(os.listdir(tmp_path)) == ["afile"]


def test_a_checkpoint_where_nothing_can_be_written_is_refused_before_training(data):
    # /proc takes no new files, not even from the administrator (permission bits would not say it)
    _refused(_net(), PermissionError, r"HistoryLogger path: cannot write into /proc \(",
             nn.SGD(0.1), *data, callbacks=[HistoryLogger(csv="/proc/nnarray-test/history.csv")])


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="the administrator writes into read-only folders")
def test_a_checkpoint_in_a_read_only_folder_is_refused_before_training(data, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _refused(_net(), PermissionError, rf"ModelCheckpoint path: cannot write into {ro}",
                 nn.SGD(0.1), *data, callbacks=[ModelCheckpoint(ro / "ck.npz")])
    finally:
        ro.chmod(0o755)


def test_a_metric_the_run_will_not_have_is_refused_before_training(data):
    _refused(_net(), ValueError, r"EarlyStopping monitor: 'val_accuracy' needs validation data .*got none",
             nn.SGD(0.1), *data, callbacks=[EarlyStopping("val_accuracy")])
    with pytest.raises(ValueError, match=r"monitor: expected one of 'epoch', 'train_loss', .*got 'accuracy'"):
        EarlyStopping("accuracy")


def test_a_progress_bar_without_tqdm_is_refused_with_the_install_command(data, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    _refused(_net(), ImportError,
             r'ProgressBar needs tqdm, which is not installed; install it with: pip install "nnarray\[scripts\]"',
             nn.SGD(0.1), *data, callbacks=[ProgressBar()])


def test_a_callback_preflight_may_refuse_the_run(data):
    class Refuse(Callback):
        def preflight(self, run):
            raise ValueError(f"refused: epochs {run.first_epoch}..{run.last_epoch} of {run.n_batches} batches")

    _refused(_net(), ValueError, r"refused: epochs 1..3 of 10 batches", nn.SGD(0.1), *data, epochs=3, batch_size=20,
             callbacks=[Refuse()])


@pytest.mark.parametrize("options, match", [
    (dict(shuffle=False),
     r"options: expected nnarray.FitOptions\(shuffle=..., history=..., fast=..., comm=...\), got dict"),
    (nn.FitOptions(history=[1, 2]), r"options.history: expected a History, got list"),
])
def test_bad_options_name_the_argument(data, options, match):
    _refused(_net(), TypeError, match, nn.SGD(0.1), *data, options=options)


# ------------------------------------------------------------------------------------------- divergence
def test_a_loss_far_beyond_its_start_stops_training_and_keeps_the_last_good_epoch(data):
    """--lr far too large keeps the loss finite (7e9 here) for a while: NaN alone would not stop it."""
    X, t = data
    net = _net()
    nn.fit(net, nn.SGD(0.1), X, t, epochs=1, batch_size=20)
    good = {k: v.copy() for k, v in net.params.items()}
    hist = nn.History()
    hist.append(epoch=1)
    with pytest.raises(nn.TrainingDivergedError,
                       match=r"diverged in epoch 2: the training loss became [0-9.e+]+, above [0-9.]+ "
                             r"\(its start [0-9.]+ "
                             r"\+ 10·log 3, the bound of DivergenceGuard\(factor=10.0\)\).*end of epoch 1.*lr=30"):
        nn.fit(net, nn.SGD(30.0), X, t, epochs=3, batch_size=20, options=nn.FitOptions(history=hist))
    assert _untouched(net, good) and len(hist) == 1


def test_the_bound_is_start_plus_factor_log_c_and_none_allows_any_finite_loss(data):
    X, t = data
    guard = DivergenceGuard(factor=2.0)
    run = nn.callbacks.FitRun(_net(), nn.SGD(0.1), nn.History(), None, None, 1, 200, 20, False, None)
    run.start_loss = 1.5
    assert guard.bound(run) == pytest.approx(1.5 + 2 * math.log(3))
    assert guard.check(run, 1, 1.5 + 2 * math.log(3) - 1e-9) is None
    assert "above" in guard.check(run, 1, 1.5 + 2 * math.log(3) + 1e-9)
    assert DivergenceGuard(factor=None).check(run, 1, 1e300) is None
    assert "nan" in DivergenceGuard(factor=None).check(run, 1, float("nan"))
    hist = nn.fit(_net(), nn.SGD(10.0), X, t, epochs=3, batch_size=20, callbacks=[DivergenceGuard(factor=None)])
    assert max(hist.train_loss) > 12  # the run the default guard stops, allowed through
    with pytest.raises(ValueError, match=r"factor: expected a positive number, got -1"):
        DivergenceGuard(factor=-1)


# ------------------------------------------------------------------------------------------- callbacks
def test_early_stopping_stops_where_patience_ends_and_a_resumed_run_stops_alike(data):
    X, t = data
    stop = EarlyStopping("train_loss", patience=2, min_delta=10.0)  # no epoch improves by 10
    hist = nn.fit(_net(), nn.SGD(0.1), X, t, epochs=10, batch_size=20, callbacks=[stop])
    assert hist.epoch == [1, 2, 3] and stop.stopped_epoch == 3 and stop.best_epoch == 1 and stop.wait == 2
    # Two epochs, then resumed: the history is replayed, so it stops at epoch 3 as well.
    net, opt, rng = _net(), nn.SGD(0.1), np.random.default_rng(0)
    h = nn.fit(net, opt, X, t, epochs=2, batch_size=20, seed=rng)
    stop2 = EarlyStopping("train_loss", patience=2, min_delta=10.0)
    h = nn.fit(net, opt, X, t, epochs=8, batch_size=20, seed=rng, callbacks=[stop2], options=nn.FitOptions(history=h))
    assert h.epoch == [1, 2, 3] and stop2.stopped_epoch == 3


def test_early_stopping_rules_differ_on_ties():
    keras, sk = EarlyStopping("val_accuracy", patience=2), EarlyStopping("val_accuracy", patience=2, rule="sklearn")
    for es in (keras, sk):
        es.update(0.5, 1)
        es.update(0.5, 2)  # a tie: no improvement for Keras, "at least min_delta = 0 better" for scikit-learn
    assert (keras.wait, sk.wait) == (1, 0) and keras.best_epoch == sk.best_epoch == 1


def test_restore_best_weights_gives_back_the_best_epoch(data):
    X, t = data
    net = _net()
    stop = EarlyStopping("val_loss", patience=100, restore_best_weights=True)
    snapshots = {}

    def keep(record):
        snapshots[record["epoch"]] = {k: v.copy() for k, v in net.params.items()}

    hist = nn.fit(net, nn.SGD(3.0), X, t, epochs=6, batch_size=20, validation=(X, t), callbacks=[keep, stop])
    best = int(np.argmin(hist.val_loss)) + 1
    assert stop.best_epoch == best and _untouched(net, snapshots[best])


def test_model_checkpoint_every_epoch_resumes_and_best_follows_the_metric(data, tmp_path):
    X, t = data
    net = _net()
    every, best = ModelCheckpoint(tmp_path / "ck.npz"), ModelCheckpoint(tmp_path / "best.npz", monitor="val_accuracy")
    saved = []
    hist = nn.fit(net, nn.SGD(0.1, momentum=0.9), X, t, epochs=4, batch_size=20, validation=(X[:50], t[:50]),
                  callbacks=[every, best, lambda r: saved.append(best.saved)])
    ck = nn.load_checkpoint(tmp_path / "ck.npz")
    assert ck["epoch"] == 4 and ck["history"].epoch == hist.epoch and every.saved_epoch == 4
    first_best = hist.val_accuracy.index(max(hist.val_accuracy)) + 1
    assert best.best_epoch == first_best and best.best == max(hist.val_accuracy)
    assert saved == [a > max([-1.0] + hist.val_accuracy[:i]) for i, a in enumerate(hist.val_accuracy)]
    assert nn.load(tmp_path / "best.npz").layer_sizes == [4, 16, 3]
    assert sorted(os.listdir(tmp_path)) == ["best.npz", "ck.npz"], "atomic writes leave no temporary files"


def test_history_logger_writes_json_and_csv_after_every_epoch(data, tmp_path):
    X, t = data
    rows = []
    logger = HistoryLogger(json=tmp_path / "h.json", csv=tmp_path / "h.csv", meta=lambda: {"run": "test"})
    nn.fit(_net(), nn.SGD(0.1), X, t, epochs=2, batch_size=50,
           callbacks=[logger, lambda r: rows.append(len((tmp_path / "h.csv").read_text().splitlines()))])
    hist, meta = nn.load_history(tmp_path / "h.json")
    assert hist.epoch == [1, 2] and meta["run"] == "test" and rows == [2, 3]
    with pytest.raises(ValueError, match="HistoryLogger: expected a json= or csv= path, got neither"):
        HistoryLogger()


def test_hooks_run_in_order_and_train_end_says_how_it_ended(data):
    X, t = data
    calls = []

    class Spy(Callback):
        log_every = 4

        def preflight(self, run):
            calls.append("preflight")

        def on_train_begin(self, run):
            calls.append(("begin", run.first_epoch, run.last_epoch, run.start_loss > 0))

        def on_epoch_begin(self, run, epoch):
            calls.append(("epoch", epoch, run.opt.lr))

        def on_batches(self, run, done, n_batches, read_loss):
            calls.append(("batches", done, n_batches))

        def on_epoch_end(self, run, record):
            calls.append(("end", record["epoch"]))
            run.stop_training = record["epoch"] == 2

        def on_train_end(self, run):
            calls.append(("train_end", run.outcome))

    nn.fit(_net(), nn.SGD(0.1), X, t, epochs=5, batch_size=20, schedule=nn.schedules.Exponential(0.1, 0.5),
           callbacks=[Spy()])
    assert calls == ["preflight", ("begin", 1, 5, True),
                     ("epoch", 1, 0.1), ("batches", 4, 10), ("batches", 8, 10), ("batches", 10, 10), ("end", 1),
                     ("epoch", 2, 0.05), ("batches", 4, 10), ("batches", 8, 10), ("batches", 10, 10), ("end", 2),
                     ("train_end", "stopped")]


def test_a_progress_bar_cut_short_in_its_constructor_is_deleted_quietly():
    """Ctrl-C or SIGTERM inside tqdm's constructor leaves a bar without its attributes; tqdm's own __del__ then
    raises (Python prints the traceback at exit, under the command's clean interruption message)."""
    tqdm = pytest.importorskip("tqdm.auto", reason="the scripts extra (tqdm)").tqdm
    from nnarray.callbacks import _bar_class  # noqa: PLC0415

    half_made = object.__new__(tqdm)
    half_made.disable = False  # the constructor got that far, not as far as the bar's position
    with pytest.raises(AttributeError, match="pos"):
        tqdm.__del__(half_made)
    bar_class = _bar_class()
    assert issubclass(bar_class, tqdm) and _bar_class() is bar_class
    half_made = object.__new__(bar_class)
    half_made.disable = False
    bar_class.__del__(half_made)  # no exception
