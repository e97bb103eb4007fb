"""History (nnarray/history.py): one schema, written and read by nnarray.saving."""

import pytest

import nnarray as nn


def _two_epochs():
    h = nn.History()
    h.append(epoch=1, train_loss=0.5, train_accuracy=0.8, val_loss=0.6, val_accuracy=0.75, lr=0.1, seconds=1.0,
             samples=100)
    h.append(epoch=2, train_loss=0.4, train_accuracy=0.85, lr=0.09, seconds=1.1, samples=100)
    return h


def test_columns_records_and_round_trip():
    h = _two_epochs()
    assert len(h) == 2 and h["lr"] == [0.1, 0.09] and h.val_loss == [0.6, None]
    assert h.last == {"epoch": 2, "train_loss": 0.4, "train_accuracy": 0.85, "val_loss": None, "val_accuracy": None,
                      "lr": 0.09, "seconds": 1.1, "samples": 100}
    assert nn.History.from_dict(h.to_dict()) == h
    with pytest.raises(KeyError, match="no column 'loss'"):
        h["loss"]
    with pytest.raises(KeyError, match="no column.*acc"):
        h.append(epoch=3, acc=1.0)


def test_older_records_without_a_column_are_filled_and_ragged_ones_refused():
    d = _two_epochs().to_dict()
    del d["lr"]
    assert nn.History.from_dict(d).lr == [None, None]
    d["seconds"] = [1.0]
    with pytest.raises(ValueError, match="column 'seconds' has 1 entries, 'epoch' has 2"):
        nn.History.from_dict(d)


def test_history_file_round_trip_and_errors(tmp_path):
    h = _two_epochs()
    nn.save_history(tmp_path / "h.json", h, {"config": {"lr": 0.1}, "backend": "numpy"})
    back, meta = nn.load_history(tmp_path / "h.json")
    assert back == h and meta == {"config": {"lr": 0.1}, "backend": "numpy"}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(nn.CheckpointError, match="not a readable nnarray history file"):
        nn.load_history(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(nn.CheckpointError, match="expected format 'nnarray-history'"):
        nn.load_history(tmp_path / "other.json")


def test_fit_records_the_learning_rate_of_each_epoch(blobs):
    X, t = blobs(n=200, seed=1)
    hist = nn.fit(nn.MLP([12, 8, 3], backend="numpy", seed=0), nn.SGD(0.1), X, t, epochs=3, batch_size=50,
                  schedule=nn.schedules.Exponential(0.1, gamma=0.5))
    assert hist.lr == pytest.approx([0.1, 0.05, 0.025])
