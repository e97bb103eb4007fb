"""The learning curve stays readable for a diverging run (log loss axis) and marks the best epoch."""

import pytest

import nnarray as nn

pytest.importorskip("matplotlib")
from nnarray.plots import best_epoch, plot_learning_curve  # noqa: E402


def _history(train_loss, val_accuracy=None):
    h = nn.History()
    for e, loss in enumerate(train_loss, start=1):
        va = None if val_accuracy is None else val_accuracy[e - 1]
        h.append(epoch=e, train_loss=loss, train_accuracy=0.5, val_loss=None if va is None else loss, val_accuracy=va,
                 lr=0.1, seconds=1.0, samples=10)
    return h


def test_a_diverging_run_gets_a_log_loss_axis(tmp_path):
    h = _history([2.3, 40.0, 9e5, 4e15], [0.3, 0.2, 0.1, 0.1])
    drawn = plot_learning_curve(h, tmp_path / "lc.png")
    assert drawn == {"best_epoch": 1, "log_loss_axis": True}
    assert (tmp_path / "lc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_ordinary_run_keeps_a_linear_axis_and_marks_the_best_epoch(tmp_path):
    h = _history([0.9, 0.5, 0.4, 0.35], [0.80, 0.86, 0.86, 0.85])
    assert best_epoch(h) == 2  # the first of ties, as best.npz
    assert plot_learning_curve(h, tmp_path / "lc.png") == {"best_epoch": 2, "log_loss_axis": False}
    assert plot_learning_curve(h, tmp_path / "lc.png", best=4)["best_epoch"] == 4


def test_without_validation_nothing_is_marked(tmp_path):
    info = plot_learning_curve(_history([1.0, 0.5]), tmp_path / "lc.png")
    assert info == {"best_epoch": None, "log_loss_axis": False}
