"""The training and evaluation scripts end to end, on real Fashion-MNIST (a subset, for speed)."""

import json
import os
import pathlib
import subprocess
import sys
import urllib.error

import numpy as np
import pytest

import nnarray as nn
from nnarray import cli
from nnarray.datasets import loaders

ROOT = pathlib.Path(__file__).resolve().parents[1]
FMNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not (FMNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist (bash ci/test.sh does it)",
)

OUTPUTS = ["checkpoint.npz", "model.npz", "history.json", "learning_curve.png", "confusion_matrix.png"]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network in tests: a download attempt fails at once; an empty cache and data path."""

    def no_network(url, timeout):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(loaders, "_fetch", no_network)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NNARRAY_DATA", raising=False)
    monkeypatch.delenv("NNARRAY_BACKEND", raising=False)


@needs_fmnist
def test_train_end_to_end_writes_every_output(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["train", "--dataset", "auto", "--subset", "3000", "--epochs", "2", "--hidden", "64", "--out", str(out), "--backend", "numpy"])
    assert rc == 0
    text = capsys.readouterr().out
    # The header says what was chosen and why; one line per epoch.
    assert "dataset:  fashion-mnist (MNIST not found and not downloadable; Fashion-MNIST found in" in text
    assert "backend:  numpy" in text and "network:  784-64-10" in text
    epoch_lines = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and all("test acc" in line and "samples/s" in line for line in epoch_lines)
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    hist, meta = nn.load_history(out / "history.json")
    assert hist.epoch == [1, 2]
    assert all(v is not None for r in hist.records() for v in r.values()), "every column filled"
    assert hist.val_accuracy[-1] > 0.7  # 2 epochs on 3000 images (validated on the test set)
    assert hist.lr == pytest.approx([0.05, 0.045]) and meta["backend"].startswith("numpy")
    assert np.asarray(meta["confusion_matrix"]).sum() == 10000
    import matplotlib.image

    for png in ("learning_curve.png", "confusion_matrix.png"):
        img = matplotlib.image.imread(out / png)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200 and img.std() > 0.01
    model = nn.load(out / "model.npz", backend="numpy")
    assert model.layer_sizes == [784, 64, 10]


@needs_fmnist
def test_resume_equals_an_uninterrupted_run(tmp_path):
    common = ["train", "--dataset", "fashion-mnist", "--subset", "1000", "--hidden", "16", "--dtype", "float64",
              "--backend", "numpy", "--quiet", "--no-plots"]
    assert cli.main(common + ["--epochs", "4", "--out", str(tmp_path / "straight")]) == 0
    assert cli.main(common + ["--epochs", "2", "--out", str(tmp_path / "part")]) == 0
    assert cli.main(["train", "--resume", str(tmp_path / "part" / "checkpoint.npz"), "--epochs", "4",
                     "--out", str(tmp_path / "part"), "--quiet", "--no-plots", "--backend", "numpy"]) == 0
    a = nn.load_checkpoint(tmp_path / "straight" / "checkpoint.npz")
    b = nn.load_checkpoint(tmp_path / "part" / "checkpoint.npz")
    assert b["epoch"] == a["epoch"] == 4
    for k in a["net"].params:
        np.testing.assert_allclose(nn.to_numpy(b["net"].params[k]), nn.to_numpy(a["net"].params[k]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b["history"].train_loss, a["history"].train_loss, rtol=1e-12)


@needs_fmnist
def test_evaluate_reports_accuracy_per_class_and_confusion(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "fashion-mnist", "--subset", "2000", "--epochs", "1", "--hidden", "32",
                     "--out", str(out), "--quiet", "--no-plots", "--backend", "numpy"]) == 0
    trained_acc = nn.load_history(out / "history.json")[0].val_accuracy[-1]
    capsys.readouterr()
    assert cli.main(["evaluate", str(out / "checkpoint.npz"), "--json", str(tmp_path / "eval.json")]) == 0
    text = capsys.readouterr().out
    assert f"test accuracy: {trained_acc:.4f}" in text
    assert "per-class accuracy:" in text and "Ankle boot" in text and "confusion matrix" in text
    doc = json.loads((tmp_path / "eval.json").read_text())
    assert doc["test_accuracy"] == pytest.approx(trained_acc)
    cm = np.asarray(doc["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 10000 and np.all(cm.sum(axis=1) == 1000)
    assert doc["per_class_accuracy"]["Trouser"] == pytest.approx(cm[1, 1] / 1000)


def test_digits_run_and_target_accuracy(tmp_path, capsys):
    out = tmp_path / "digits"
    rc = cli.main(["train", "--dataset", "digits", "--epochs", "15", "--hidden", "32", "--out", str(out),
                   "--backend", "numpy", "--target-acc", "0.9", "--no-plots"])
    assert rc == 0, capsys.readouterr()
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--hidden", "4", "--lr", "0.001", "--out",
                     str(tmp_path / "weak"), "--backend", "numpy", "--target-acc", "0.99", "--no-plots", "--quiet"]) == 1
    assert "below --target-acc 0.99" in capsys.readouterr().err


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--hidden", "8", "--out", str(out), "--quiet",
                     "--no-plots", "--backend", "numpy"]) == 0
    ck = out / "checkpoint.npz"
    ck.write_bytes(ck.read_bytes()[:500])
    assert cli.main(["train", "--resume", str(ck), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "checkpoint.npz: not a readable nnarray file (truncated or corrupt" in err


def test_a_crash_while_checkpointing_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_savez, calls = np.savez, {"n": 0}

    def savez_then_crash(f, **arrays):
        calls["n"] += 1
        if calls["n"] == 2:  # the second epoch's checkpoint
            f.write(b"half a file")
            raise KeyboardInterrupt
        return real_savez(f, **arrays)

    monkeypatch.setattr(np, "savez", savez_then_crash)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["train", "--dataset", "digits", "--epochs", "3", "--hidden", "8", "--out", str(out), "--quiet",
                  "--no-plots", "--backend", "numpy"])
    monkeypatch.setattr(np, "savez", real_savez)
    ck = nn.load_checkpoint(out / "checkpoint.npz")
    assert ck["epoch"] == 1
    assert sorted(os.listdir(out)) == ["checkpoint.npz", "history.json"], "no partial files left behind"


def test_missing_dataset_says_how_to_get_it(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "mnist", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "MNIST" in err and "NNARRAY_DATA" in err


def test_console_entry_points_answer_help():
    for cmd in ([sys.executable, "-m", "nnarray", "train", "--help"], [sys.executable, str(ROOT / "scripts" / "train.py"), "--help"],
                [sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--help"]):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert "--backend" in res.stdout
    res = subprocess.run([sys.executable, "-m", "nnarray", "train", "--help"], capture_output=True, text=True, timeout=60)
    for flag in ("--dataset", "--hidden", "--epochs", "--batch-size", "--lr", "--reduction", "--dtype", "--seed",
                 "--data-dir", "--out", "--resume", "--quiet"):
        assert flag in res.stdout, flag


def test_out_must_be_a_directory(tmp_path, capsys):
    (tmp_path / "file").write_text("keep me")
    assert cli.main(["train", "--dataset", "digits", "--out", str(tmp_path / "file"), "--quiet"]) == 2
    assert "--out: " in capsys.readouterr().err and (tmp_path / "file").read_text() == "keep me"


def test_fast_on_without_a_fast_path_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--backend", "array_api_strict", "--fast", "on",
                     "--out", str(tmp_path / "r"), "--quiet", "--no-plots"]) == 2
    assert "fast: no fast path available here" in capsys.readouterr().err
