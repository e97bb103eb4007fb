"""The training and evaluation commands end to end: real Fashion-MNIST (a subset, for speed), the digits, own files."""

import json
import os
import pathlib
import pydoc
import signal
import subprocess
import sys
import time
import urllib.error

import numpy as np
import pytest

import nnarray as nn
from nnarray import cli
from nnarray import train as train_module
from nnarray.datasets import loaders

ROOT = pathlib.Path(__file__).resolve().parents[1]
FMNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not (FMNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist (bash ci/test.sh does it)",
)

OUTPUTS = ["checkpoint.npz", "model.npz", "best.npz", "history.json", "history.csv", "learning_curve.png",
           "confusion_matrix.png"]
QUICK = ["--dataset", "digits", "--hidden", "8", "--backend", "numpy", "--no-plots", "--quiet"]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network in tests: a download attempt fails at once; an empty cache and data path."""

    def no_network(url, timeout):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(loaders, "_fetch", no_network)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NNARRAY_DATA", raising=False)
    monkeypatch.delenv("NNARRAY_BACKEND", raising=False)


def _env(**extra):
    """The environment of a subprocess that imports this worktree's nnarray."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def _json_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"--json prints one line, got {lines}"
    return json.loads(lines[0])


def _digits_npz(path, with_test=True, **override):
    (X, t), (Xt, tt) = nn.datasets.load("digits")
    arrays = {"X_train": X, "t_train": t}
    if with_test:
        arrays.update(X_test=Xt, t_test=tt)
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


# ------------------------------------------------------------------------------------------- end to end
@needs_fmnist
def test_train_end_to_end_writes_every_output(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["train", "--dataset", "auto", "--subset", "3000", "--epochs", "2", "--hidden", "64", "--out",
                   str(out), "--backend", "numpy"])
    assert rc == 0
    text = capsys.readouterr().out
    # The header says what was chosen and why, and that validation is held out of the training images.
    assert "dataset:  fashion-mnist (MNIST not found and not downloadable; Fashion-MNIST found in" in text
    assert "2750 training, 250 validation (held out of the training set), 10000 test samples" in text
    assert "backend:  numpy" in text and "network:  784-64-10" in text
    assert "updates:  " in text  # the optimizer's fused form or the functional rule (tests/test_fused.py)
    numba = nn.fused.numpy_engine() == "numba"
    assert f"step:     {'the generic step, each hidden layer' if numba else 'the generic Array API step'}" in text
    epoch_lines = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2
    assert all("val acc" in line and "lr 0.0" in line and "samples/s" in line for line in epoch_lines)
    assert "test acc" not in "".join(epoch_lines), "the test set is not looked at during training"
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    hist, meta = nn.load_history(out / "history.json")
    assert hist.epoch == [1, 2]
    assert all(v is not None for r in hist.records() for v in r.values()), "every column filled"
    assert hist.val_accuracy[-1] > 0.7  # 2 epochs on 2750 images
    # η per epoch and the backend are recorded; the result has final and best test accuracies.
    assert hist.lr == pytest.approx([0.05, 0.045]) and meta["backend"].startswith("numpy")
    assert meta["validation_images"] == 250 and meta["optimizer"]["type"] == "SGD"
    r = meta["result"]
    assert 0.6 < r["final_test_accuracy"] < 1 and 0.6 < r["best_test_accuracy"] < 1
    assert r["best_epoch"] == int(np.argmax(hist.val_accuracy)) + 1
    assert np.asarray(meta["confusion_matrix"]).sum() == 10000
    assert f"done: test accuracy {r['final_test_accuracy']:.4f} (final model)" in text
    assert f"{r['best_test_accuracy']:.4f} (best.npz: epoch {r['best_epoch']}" in text
    import matplotlib.image

    for png in ("learning_curve.png", "confusion_matrix.png"):
        img = matplotlib.image.imread(out / png)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200 and img.std() > 0.01
    model = nn.load(out / "model.npz", backend="numpy")
    assert model.layer_sizes == [784, 64, 10]


def test_history_is_also_written_as_csv(tmp_path):
    out = tmp_path / "r"
    assert cli.main(["train", *QUICK, "--epochs", "3", "--out", str(out)]) == 0
    hist, _ = nn.load_history(out / "history.json")
    lines = (out / "history.csv").read_text().splitlines()
    assert lines[0] == ",".join(nn.History.KEYS) and len(lines) == 4
    rows = [dict(zip(lines[0].split(","), line.split(","), strict=True)) for line in lines[1:]]
    for row, rec in zip(rows, hist.records(), strict=True):
        for k, v in rec.items():
            assert float(row[k]) == pytest.approx(v, rel=1e-15), k


@needs_fmnist
def test_resume_equals_an_uninterrupted_run_and_writes_next_to_its_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["train", "--dataset", "fashion-mnist", "--subset", "1000", "--hidden", "16", "--dtype", "float64",
              "--backend", "numpy", "--quiet", "--no-plots"]
    assert cli.main(common + ["--epochs", "4", "--out", "straight"]) == 0
    assert cli.main(common + ["--epochs", "2", "--out", "part"]) == 0
    assert cli.main(common + ["--epochs", "1"]) == 0  # an unrelated run in runs/latest
    latest = os.path.realpath("runs/latest")
    before = sorted(os.listdir(latest))
    # No --out: the resumed run writes next to its checkpoint, never into runs/latest.
    assert cli.main(["train", "--resume", "part/checkpoint.npz", "--epochs", "4", "--quiet", "--no-plots", "--backend",
                     "numpy"]) == 0
    assert os.path.realpath("runs/latest") == latest and sorted(os.listdir(latest)) == before
    assert nn.load_checkpoint(os.path.join(latest, "checkpoint.npz"))["epoch"] == 1
    a = nn.load_checkpoint("straight/checkpoint.npz")
    b = nn.load_checkpoint("part/checkpoint.npz")
    assert b["epoch"] == a["epoch"] == 4
    for k in a["net"].params:
        np.testing.assert_allclose(nn.to_numpy(b["net"].params[k]), nn.to_numpy(a["net"].params[k]), rtol=1e-12,
                                   atol=1e-12)
    np.testing.assert_allclose(b["history"].train_loss, a["history"].train_loss, rtol=1e-12)
    np.testing.assert_allclose(b["history"].val_accuracy, a["history"].val_accuracy, rtol=1e-12)
    best_epoch = nn.load_history("straight/history.json")[1]["best_epoch"]
    assert nn.load_history("part/history.json")[1]["best_epoch"] == best_epoch


@needs_fmnist
def test_evaluate_reports_accuracy_per_class_and_confusion(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "fashion-mnist", "--subset", "2000", "--epochs", "1", "--hidden", "32",
                     "--out", str(out), "--quiet", "--no-plots", "--backend", "numpy"]) == 0
    final_acc = nn.load_history(out / "history.json")[1]["result"]["final_test_accuracy"]
    capsys.readouterr()
    # A run's folder means its checkpoint; model.npz finds its dataset in the run's files beside it.
    for target in (out, out / "checkpoint.npz", out / "model.npz"):
        assert cli.main(["evaluate", str(target)]) == 0, capsys.readouterr().err
        text = capsys.readouterr().out
        assert f"test accuracy: {final_acc:.4f}" in text
    assert "per-class accuracy:" in text and "Ankle boot" in text and "confusion matrix" in text
    # --json is a flag, as with nnarray train: one JSON line, nothing else
    assert cli.main(["evaluate", str(out), "--json"]) == 0
    doc = _json_line(capsys.readouterr().out)
    assert doc["test_accuracy"] == pytest.approx(final_acc)
    cm = np.asarray(doc["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 10000 and np.all(cm.sum(axis=1) == 1000)
    assert doc["per_class_accuracy"]["Trouser"] == pytest.approx(cm[1, 1] / 1000)


def test_evaluate_a_model_without_its_run_asks_for_the_dataset(tmp_path, capsys):
    net = nn.MLP([64, 8, 10], backend="numpy", seed=0)
    nn.save(net, tmp_path / "lonely.npz")
    assert cli.main(["evaluate", str(tmp_path / "lonely.npz")]) == 2
    assert "no dataset recorded" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path / "lonely.npz"), "--dataset", "digits"]) == 0


@pytest.mark.parametrize("content", [b"not an archive at all\n", b"\x93NUMPY garbage", b"PK\x03\x04 broken zip"])
def test_damaged_files_never_suggest_allow_pickle(tmp_path, capsys, content):
    bad = tmp_path / "checkpoint.npz"
    bad.write_bytes(content)
    assert cli.main(["evaluate", str(bad)]) == 2
    assert cli.main(["train", "--resume", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not a readable nnarray file" in err and "pickle" not in err.lower()


def test_digits_run_and_target_accuracy(tmp_path, capsys):
    out = tmp_path / "digits"
    rc = cli.main(["train", "--dataset", "digits", "--epochs", "15", "--hidden", "32", "--out", str(out),
                   "--backend", "numpy", "--target-acc", "0.9", "--no-plots"])
    assert rc == 0, capsys.readouterr()
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--hidden", "4", "--lr", "0.001", "--out",
                     str(tmp_path / "weak"), "--backend", "numpy", "--target-acc", "0.99", "--no-plots",
                     "--quiet"]) == 1
    assert "below --target-acc 0.99" in capsys.readouterr().err


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *QUICK, "--epochs", "1", "--out", str(out)]) == 0
    ck = out / "checkpoint.npz"
    ck.write_bytes(ck.read_bytes()[:500])
    assert cli.main(["train", "--resume", str(ck), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "checkpoint.npz: not a readable nnarray file (truncated or corrupt" in err


# ------------------------------------------------------------------------------------------- runs are never lost
def test_each_run_gets_its_own_folder_and_latest_points_at_the_newest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stamps = iter(["20250101-120000", "20250101-120000", "20250101-130000"])
    real_strftime = time.strftime
    monkeypatch.setattr(time, "strftime",
                        lambda fmt, *a: next(stamps) if fmt == "%Y%m%d-%H%M%S" else real_strftime(fmt, *a))
    for _ in range(3):
        assert cli.main(["train", *QUICK, "--epochs", "1"]) == 0
    runs = sorted(p for p in os.listdir("runs") if p != "latest")
    assert runs == ["20250101-120000", "20250101-120000-2", "20250101-130000"]  # same second: a suffix, no overwrite
    assert os.path.islink("runs/latest") and os.readlink("runs/latest") == "20250101-130000"
    for r in runs:
        assert nn.load_checkpoint(f"runs/{r}/checkpoint.npz")["epoch"] == 1


def test_out_holding_a_run_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *QUICK, "--epochs", "2", "--out", str(out)]) == 0
    stamp = (out / "checkpoint.npz").read_bytes()
    assert cli.main(["train", *QUICK, "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out: {out} holds a run (checkpoint.npz" in err and "--overwrite" in err and "--resume" in err
    assert (out / "checkpoint.npz").read_bytes() == stamp, "the refused run wrote nothing"
    assert cli.main(["train", *QUICK, "--epochs", "1", "--out", str(out), "--overwrite"]) == 0
    assert nn.load_checkpoint(out / "checkpoint.npz")["epoch"] == 1


def test_out_must_be_a_directory(tmp_path, capsys):
    (tmp_path / "file").write_text("keep me")
    assert cli.main(["train", "--dataset", "digits", "--out", str(tmp_path / "file"), "--quiet"]) == 2
    assert "--out: " in capsys.readouterr().err and (tmp_path / "file").read_text() == "keep me"


def _interrupt_in_epoch(monkeypatch, k):
    """Make the k-th epoch of the training step raise KeyboardInterrupt, as Ctrl-C does."""
    real_epoch, calls = nn.step.TrainStep.epoch, {"n": 0}

    def epoch(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == k:
            raise KeyboardInterrupt
        return real_epoch(self, *a, **kw)

    monkeypatch.setattr(nn.step.TrainStep, "epoch", epoch)


def test_ctrl_c_keeps_the_last_finished_epoch_and_says_how_to_continue(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _interrupt_in_epoch(monkeypatch, 3)
    assert cli.main(["train", *QUICK, "--epochs", "5", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    cont = f"nnarray train --resume {out / 'checkpoint.npz'} --epochs 5"
    assert f"interrupted during epoch 3; the checkpoint holds epoch 2; continue with: {cont}" in err
    assert "Traceback" not in err
    assert nn.load_checkpoint(out / "checkpoint.npz")["epoch"] == 2
    monkeypatch.undo()
    # The printed command works.
    assert cli.main(cont.split()[1:] + ["--quiet", "--no-plots", "--backend", "numpy"]) == 0
    assert nn.load_checkpoint(out / "checkpoint.npz")["epoch"] == 5


def test_ctrl_c_in_the_first_epoch_says_there_is_nothing_to_resume(tmp_path, monkeypatch, capsys):
    _interrupt_in_epoch(monkeypatch, 1)
    assert cli.main(["train", *QUICK, "--epochs", "3", "--out", str(tmp_path / "r")]) == 130
    assert "interrupted during epoch 1; no epoch finished" in capsys.readouterr().err


@pytest.mark.parametrize("stop, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigterm_ends_the_command_as_ctrl_c_does(tmp_path, stop, status):
    """A real Ctrl-C (SIGINT) or SIGTERM (timeout, Slurm, docker stop) while the process trains: the last finished
    epoch is kept and the way on is printed."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-u", "-m", "nnarray", "train", "--dataset", "digits", "--hidden", "256",
                             "--epochs", "10000", "--backend", "numpy", "--no-plots", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        for line in proc.stdout:
            if line.startswith("epoch   2/"):
                break
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == status, err
    k = nn.load_checkpoint(out / "checkpoint.npz")["epoch"]
    assert k >= 2
    assert (f"interrupted during epoch {k + 1}; the checkpoint holds epoch {k}; "
            f"continue with: nnarray train --resume {out / 'checkpoint.npz'}") in err
    assert "Traceback" not in err


def test_a_crash_while_checkpointing_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_savez, calls = np.savez, {"n": 0}

    def savez_then_crash(f, **arrays):
        if "__header__" in arrays and "checkpoint" in str(arrays["__header__"]):
            calls["n"] += 1
            if calls["n"] == 2:  # the second epoch's checkpoint
                f.write(b"half a file")
                raise KeyboardInterrupt
        return real_savez(f, **arrays)

    monkeypatch.setattr(np, "savez", savez_then_crash)
    assert cli.main(["train", *QUICK, "--epochs", "3", "--out", str(out)]) == 130
    assert "the checkpoint holds epoch 1" in capsys.readouterr().err
    monkeypatch.setattr(np, "savez", real_savez)
    ck = nn.load_checkpoint(out / "checkpoint.npz")
    assert ck["epoch"] == 1
    left = ["best.npz", "checkpoint.npz", "history.csv", "history.json"]
    assert sorted(os.listdir(out)) == left, "no partial files left behind"


# ------------------------------------------------------------------------------------------- validation
def test_validation_split_is_held_out_of_the_training_images():
    cfg = cli.settings.resolve({**cli.DEFAULTS, "dataset": "digits"})
    _, _, (X, t), (Xv, tv), (Xt, tt) = cli.load_data(cfg)
    (X0, _), (Xt0, _) = nn.datasets.load("digits")
    assert X.shape[0] + Xv.shape[0] == X0.shape[0] == 1438 and Xv.shape[0] == 1438 // 12
    rows = {r.tobytes() for r in X}
    assert not any(r.tobytes() in rows for r in Xv), "no validation image is trained on"
    assert np.array_equal(Xt, Xt0), "the test set is untouched"
    assert cli.validation_size(None, 60000) == 5000 and cli.validation_size(None, 3000) == 250
    assert cli.validation_size(0.1, 1000) == 100 and cli.validation_size(300, 1000) == 300
    assert cli.validation_size(0, 10) == 0
    with pytest.raises(cli.UsageError, match=r"--val-split 1438: expected between 1 and 1437"):
        cli.validation_size(1438, 1438)


def _fake_validation(monkeypatch, accuracies):
    """Validation accuracies per epoch as given (to test choices made on them)."""
    seq = iter(accuracies)
    monkeypatch.setattr(train_module, "_validate", lambda *a: (1.0, next(seq)))


def test_best_model_is_chosen_on_validation_and_both_are_tested(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    _fake_validation(monkeypatch, [0.5, 0.7, 0.6, 0.7])
    assert cli.main(["train", *QUICK, "--epochs", "4", "--out", str(out), "--json"]) == 0
    r = _json_line(capsys.readouterr().out)
    assert r["best_epoch"] == 2 and r["best_val_accuracy"] == 0.7 and r["epochs"] == 4 and not r["stopped_early"]
    best, final = nn.load(out / "best.npz"), nn.load(out / "model.npz")
    assert not np.array_equal(nn.to_numpy(best.params["W1"]), nn.to_numpy(final.params["W1"]))
    _, (Xt, tt) = nn.datasets.load("digits")
    assert r["best_test_accuracy"] == pytest.approx(best.accuracy(Xt, tt))
    assert r["final_test_accuracy"] == pytest.approx(final.accuracy(Xt, tt))


def test_early_stop_after_patience_epochs_without_improvement(tmp_path, monkeypatch, capsys):
    _fake_validation(monkeypatch, [0.5, 0.8, 0.8, 0.7, 0.9, 0.9])
    assert cli.main(["train", *QUICK, "--epochs", "6", "--early-stop", "2", "--out", str(tmp_path / "r"),
                     "--json"]) == 0
    r = _json_line(capsys.readouterr().out)
    assert r["stopped_early"] and r["epochs"] == 4 and r["best_epoch"] == 2
    assert nn.load_checkpoint(tmp_path / "r" / "checkpoint.npz")["epoch"] == 4


def test_early_stop_needs_a_validation_split(tmp_path, capsys):
    assert cli.main(["train", *QUICK, "--val-split", "0", "--early-stop", "2", "--out", str(tmp_path / "r")]) == 2
    assert "--early-stop: needs a validation split" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- own data
def test_own_data_npz_and_csv(tmp_path, capsys):
    npz = _digits_npz(tmp_path / "digits.npz")
    assert cli.main(["train", "--data", str(npz), "--hidden", "32", "--epochs", "3", "--out", str(tmp_path / "a"),
                     "--backend", "numpy", "--no-plots", "--json"]) == 0
    r = _json_line(capsys.readouterr().out)
    assert r["dataset"] == "digits.npz" and r["network"] == [64, 32, 10] and r["best_test_accuracy"] > 0.8
    assert cli.main(["evaluate", str(tmp_path / "a")]) == 0  # the test set comes from the recorded file
    assert f"test accuracy: {r['final_test_accuracy']:.4f}" in capsys.readouterr().out
    assert cli.main(["train", "--resume", str(tmp_path / "a"), "--epochs", "4", "--json"]) == 0
    assert _json_line(capsys.readouterr().out)["epochs"] == 4
    # CSV: a header, the label first; the test set in a second file.
    (X, t), (Xt, tt) = nn.datasets.load("digits")
    for name, (A, b) in {"train.csv": (X, t), "test.csv": (Xt, tt)}.items():
        np.savetxt(tmp_path / name, np.column_stack([b, A]), delimiter=",", fmt="%.6g",
                   header="label," + ",".join(f"p{i}" for i in range(64)), comments="")
    assert cli.main(["train", "--data", str(tmp_path / "train.csv"), "--test-data", str(tmp_path / "test.csv"),
                     "--hidden", "32", "--epochs", "3", "--out", str(tmp_path / "b"), "--backend", "numpy",
                     "--no-plots", "--json"]) == 0
    r2 = _json_line(capsys.readouterr().out)
    assert r2["best_test_accuracy"] == pytest.approx(r["best_test_accuracy"], abs=0.02)
    # No test set: validation only, said plainly.
    assert cli.main(["train", "--data", str(tmp_path / "train.csv"), "--hidden", "8", "--epochs", "1",
                     "--out", str(tmp_path / "c"), "--backend", "numpy", "--no-plots"]) == 0
    assert "no test set; validation accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("override,message", [
    ({"t_train": None}, r"expected arrays X_train and t_train .*missing t_train"),
    ({"t_test": None}, r"expected X_test and t_test together, found only X_test"),
    ({"t_train": np.zeros(5, dtype=np.int64)},
     r"sample/label count mismatch: X_train has 1438 rows but t_train has 5 labels"),
    ({"t_train": np.ones(1438)}, r"t_train: expected integer class labels, got dtype float64 .*t_train.astype\(int\)"),
    ({"t_train": np.full(1438, 0.5)}, r"t_train: expected integer class labels, found 0.5 at index 0"),
    ({"t_train": -np.ones(1438, dtype=np.int64)}, r"t_train: expected labels ≥ 0"),
    ({"X_train": np.ones((1438, 64), dtype=np.int32)},
     r"X_train: expected floating-point features \(or uint8 pixels\)"),
    ({"X_train": np.full((1438, 64), np.nan)}, r"X_train: expected finite values, got 92032 NaN"),
    ({"X_test": np.zeros((359, 5), dtype=np.float32)}, r"expected test samples with 64 features"),
])
def test_own_data_gets_the_checks_of_the_built_in_sets(tmp_path, capsys, override, message):
    npz = _digits_npz(tmp_path / "bad.npz", **override)
    assert cli.main(["train", "--data", str(npz), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(npz) in err
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "r").exists(), "nothing is written before the data are checked"


def test_own_data_not_an_archive_and_uint8_pixels(tmp_path, capsys):
    (tmp_path / "x.npz").write_text("hello")
    assert cli.main(["train", "--data", str(tmp_path / "x.npz"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not a readable .npz archive" in err
    assert "pickle" not in err.split("(")[-1].replace("not an .npz archive", "")
    assert cli.main(["train", "--data", str(tmp_path / "x.txt"), "--quiet"]) == 2
    assert "expected an .npz archive" in capsys.readouterr().err
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "u8.npz", X_train=rng.integers(0, 256, (40, 3, 3), dtype=np.uint8), t_train=np.arange(40) % 2)
    (X, t), test = nn.datasets.load_file(tmp_path / "u8.npz")
    assert X.shape == (40, 9) and X.dtype == np.float32 and X.max() <= 1 and test is None


# ------------------------------------------------------------------------------------------- flags
@pytest.mark.parametrize("flag,value", [
    ("--subset", "0"), ("--subset", "-100"), ("--batch-size", "0"), ("--epochs", "0"), ("--epochs", "-1"),
    ("--gamma", "-1"), ("--gamma", "0"), ("--target-acc", "95"), ("--seed", "-1"), ("--lr", "0"), ("--lr", "-0.1"),
    ("--momentum", "1"), ("--val-split", "-5"), ("--val-split", "1.5"), ("--early-stop", "0"), ("--threads", "0"),
    ("--dropout", "1"), ("--weight-decay", "-1"), ("--warmup", "-1"),
])
def test_bad_values_are_refused_naming_the_flag(capsys, flag, value):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: expected" in err and value in err


def test_help_shows_one_default_per_flag():
    text = cli.build_train_parser().format_help()
    assert "(default: None)" not in text
    entries = [e for e in text.split("\n  -") if "(default" in e]
    assert entries and all(e.count("(default") == 1 for e in entries), [e for e in entries if e.count("(default") > 1]


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"nnarray {nn.__version__}"
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--version"])
    assert exc.value.code == 0 and f"nnarray {nn.__version__}" in capsys.readouterr().out


def test_json_prints_one_line_only(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "digits", "--hidden", "8", "--epochs", "2", "--backend", "numpy",
                     "--no-plots",
                     "--out", str(tmp_path / "r"), "--json"]) == 0
    r = _json_line(capsys.readouterr().out)
    assert set(r) >= {"final_test_accuracy", "best_test_accuracy", "best_epoch", "best_val_accuracy", "seconds", "out"}
    assert r["out"] == str(tmp_path / "r")


def test_threads_with_threadpoolctl(tmp_path):
    pytest.importorskip("threadpoolctl")
    assert cli.main(["train", *QUICK, "--epochs", "1", "--threads", "1", "--out", str(tmp_path / "r")]) == 0
    assert nn.load_history(tmp_path / "r" / "history.json")[1]["threads"] == {"threads": 1, "method": "threadpoolctl"}


def test_threads_without_threadpoolctl_restarts_with_the_environment(tmp_path):
    block = tmp_path / "block"
    block.mkdir()
    (block / "threadpoolctl.py").write_text("raise ImportError('threadpoolctl blocked for this test')\n")
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(block), env["PYTHONPATH"]])
    for v in cli.ENV_THREADS:
        env.pop(v, None)
    npz = _digits_npz(tmp_path / "digits.npz")  # scikit-learn's digits would import threadpoolctl
    res = subprocess.run([sys.executable, "-m", "nnarray", "train", "--data", str(npz), "--hidden", "8", "--no-plots",
                          "--quiet", "--epochs", "1", "--threads", "1", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert nn.load_history(tmp_path / "r" / "history.json")[1]["threads"] == {"threads": 1, "method": "environment"}


def test_optimizer_flags_that_do_not_fit_together(tmp_path, capsys):
    for argv, message in [(["--optimizer", "adam", "--momentum", "0.9"],
                           "--momentum: --optimizer adam has no momentum"),
                          (["--optimizer", "adamw", "--nesterov"], "--nesterov: only with --optimizer sgd"),
                          (["--momentum", "0", "--nesterov"], "--nesterov: needs a momentum > 0"),
                          (["--schedule", "cosine", "--gamma", "0.5"],
                           "--gamma: used by --schedule exponential or step"),
                          (["--data", "x.npz", "--dataset", "digits"], "--data: give either --data FILE or --dataset")]:
        assert cli.main(["train", *argv, "--quiet", "--out", str(tmp_path / "r")]) == 2
        assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- data choice
def test_missing_dataset_says_how_to_get_it(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "mnist", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "MNIST" in err and "NNARRAY_DATA" in err


def test_a_wrong_data_dir_is_an_error_not_the_digits(tmp_path, capsys):
    assert cli.main(["train", "--data-dir", str(tmp_path / "nonexistent"), "--out", str(tmp_path / "r"),
                     "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--data-dir {tmp_path / 'nonexistent'} holds neither MNIST nor Fashion-MNIST" in err
    assert not (tmp_path / "r").exists()


def test_auto_without_any_dataset_and_without_scikit_learn_says_what_to_install(monkeypatch):
    monkeypatch.setattr(loaders, "FASHION_MNIST_SYSTEM_DIRS", [])

    def no_sklearn():
        raise ImportError("load_digits needs scikit-learn")

    monkeypatch.setattr(nn.datasets, "load_digits", no_sklearn)
    with pytest.raises(nn.datasets.DatasetNotFoundError,
                       match=r"no dataset available.*apt-get install dataset-fashion-mnist"):
        nn.datasets.choose("auto")


def test_console_entry_points_answer_help():
    for cmd in ([sys.executable, "-m", "nnarray", "train", "--help"],
                [sys.executable, str(ROOT / "scripts" / "train.py"), "--help"],
                [sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--help"],
                [sys.executable, "-m", "nnarray", "--version"]):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=_env())
        assert res.returncode == 0, res.stderr
        assert "--backend" in res.stdout or res.stdout.startswith("nnarray ")
    res = subprocess.run([sys.executable, "-m", "nnarray", "train", "--help"], capture_output=True, text=True,
                         timeout=60, env=_env())
    for flag in ("--dataset", "--data", "--hidden", "--epochs", "--batch-size", "--lr", "--reduction", "--dtype",
                 "--seed",
                 "--data-dir", "--out", "--overwrite", "--resume", "--quiet", "--val-split", "--early-stop", "--json",
                 "--threads", "--optimizer", "--nesterov", "--weight-decay", "--schedule", "--warmup", "--dropout"):
        assert flag in res.stdout, flag


def test_fast_on_without_a_fast_path_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--backend", "array_api_strict", "--fast", "on",
                     "--out", str(tmp_path / "r"), "--quiet", "--no-plots"]) == 2
    assert "no fast path available here" in capsys.readouterr().err


def test_help_of_fit_lists_its_parameters():
    text = pydoc.render_doc(nn.fit, renderer=pydoc.plaintext)
    for name in ("reduction", "validation", "callbacks", "schedule", "options"):
        assert f"{name} :" in text or f"{name}," in text, name
    text = pydoc.render_doc(nn.FitOptions, renderer=pydoc.plaintext)
    for name in ("shuffle", "history", "fast", "comm"):
        assert f"{name} :" in text, name


# ------------------------------------------------------------------------------------------- optimizers, schedules
@pytest.mark.parametrize("argv,kind,hyper", [
    (["--optimizer", "adam"], "Adam", {"lr": 1e-3, "weight_decay": 0.0}),
    (["--optimizer", "adamw", "--weight-decay", "0.05", "--lr", "0.002"], "AdamW", {"lr": 0.002, "weight_decay": 0.05}),
    (["--optimizer", "rmsprop", "--momentum", "0.5"], "RMSprop", {"lr": 1e-2, "momentum": 0.5}),
    (["--optimizer", "adagrad"], "AdaGrad", {"lr": 1e-2}),
    (["--nesterov", "--weight-decay", "1e-4"], "SGD",
     {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}),
])
def test_optimizer_flags(tmp_path, argv, kind, hyper):
    if not hasattr(nn.optim, kind):
        pytest.skip(f"nnarray.optim.{kind} is not in this branch yet")
    out = tmp_path / "r"
    assert cli.main(["train", *QUICK, "--epochs", "2", "--schedule", "constant", *argv, "--out", str(out)]) == 0
    opt = nn.load_checkpoint(out / "checkpoint.npz")["opt"]
    assert type(opt).__name__ == kind
    assert {k: opt.hyperparameters()[k] for k in hyper} == hyper
    assert nn.load_history(out / "history.json")[1]["optimizer"]["type"] == kind


def test_schedule_flags_set_eta_per_epoch(tmp_path):
    if not hasattr(nn.schedules, "Warmup"):
        pytest.skip("schedules Step/Cosine/Warmup are not in this branch yet")
    s = nn.schedules
    for argv, expected in [
        (["--schedule", "cosine", "--warmup", "2", "--lr", "0.1"], s.Warmup(s.Cosine(0.1, epochs=4), epochs=2)),
        (["--schedule", "step", "--step-size", "2", "--lr", "0.1"], s.Step(0.1, step_size=2, gamma=0.1)),
        (["--schedule", "exponential", "--gamma", "0.5", "--lr", "0.1"], s.Exponential(0.1, 0.5)),
        (["--schedule", "constant", "--lr", "0.1"], s.Constant(0.1)),
    ]:
        out = tmp_path / argv[1]
        assert cli.main(["train", *QUICK, "--epochs", "6", *argv, "--out", str(out)]) == 0
        hist, meta = nn.load_history(out / "history.json")
        assert hist.lr == pytest.approx([expected(e) for e in range(1, 7)], rel=1e-15), argv
        assert meta["schedule"] == expected.config()


def test_resume_of_adamw_with_cosine_equals_an_uninterrupted_run(tmp_path, capsys):
    if not hasattr(nn.optim, "AdamW"):
        pytest.skip("AdamW is not in this branch yet")
    common = ["train", *QUICK, "--dtype", "float64", "--optimizer", "adamw", "--schedule", "cosine", "--warmup", "1"]
    assert cli.main(common + ["--epochs", "4", "--out", str(tmp_path / "straight")]) == 0
    _interrupt_in_epoch_after(tmp_path, capsys, common)
    a = nn.load_checkpoint(tmp_path / "straight" / "checkpoint.npz")
    b = nn.load_checkpoint(tmp_path / "part" / "checkpoint.npz")
    assert a["epoch"] == b["epoch"] == 4
    for k in a["net"].params:
        np.testing.assert_allclose(nn.to_numpy(b["net"].params[k]), nn.to_numpy(a["net"].params[k]), rtol=1e-12,
                                   atol=1e-12)
    assert b["history"].lr == a["history"].lr
    # The cosine schedule ends with the run it was made for.
    assert cli.main(["train", "--resume", str(tmp_path / "part"), "--epochs", "6", "--quiet"]) == 2
    assert "cosine schedule ends at epoch 4" in capsys.readouterr().err


def _interrupt_in_epoch_after(tmp_path, capsys, common):
    """Train 4 epochs as two invocations: Ctrl-C in epoch 3, then the printed resume command."""
    mp = pytest.MonkeyPatch()
    try:
        _interrupt_in_epoch(mp, 3)
        assert cli.main(common + ["--epochs", "4", "--out", str(tmp_path / "part")]) == 130
    finally:
        mp.undo()
    cont = capsys.readouterr().err.split("continue with: ")[1].split()
    assert cli.main(cont[1:] + ["--quiet", "--no-plots"]) == 0


def test_dropout_flag(tmp_path):
    out = tmp_path / "r"
    assert cli.main(["train", *QUICK, "--epochs", "2", "--dropout", "0.3", "--out", str(out)]) == 0
    ck = nn.load_checkpoint(out / "checkpoint.npz")
    assert list(ck["net"].dropout) == [0.3] and ck["config"]["dropout"] == 0.3
    # Evaluation is without dropout: the reported accuracy is the saved model's, deterministically.
    r = nn.load_history(out / "history.json")[1]["result"]
    _, (Xt, tt) = nn.datasets.load("digits")
    assert r["final_test_accuracy"] == pytest.approx(nn.load(out / "model.npz").accuracy(Xt, tt))
    assert cli.main(["train", "--resume", str(out), "--epochs", "3", "--quiet", "--no-plots"]) == 0
    assert list(nn.load_checkpoint(out / "checkpoint.npz")["net"].dropout) == [0.3]


def test_without_a_validation_split_the_final_model_is_the_result(tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(["train", *QUICK, "--epochs", "2", "--val-split", "0", "--out", str(out), "--target-acc",
                     "0.99"]) == 1
    text = capsys.readouterr()
    assert text.out.startswith("test accuracy ") and "best" not in text.out and "below --target-acc 0.99" in text.err
    hist, meta = nn.load_history(out / "history.json")
    assert hist.val_accuracy == [None, None] and meta["validation_images"] == 0 and not (out / "best.npz").exists()
    assert meta["result"]["best_val_accuracy"] is None
    assert meta["result"]["best_test_accuracy"] == meta["result"]["final_test_accuracy"]


# ------------------------------------------------------------------------------------------- preflight
def _nothing_trained(tmp_path, capsys, argv, message):
    """The command refuses with ``message`` before training: exit 2, no epoch line, no traceback, no run folder."""
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert cli.main(["train", *argv]) == 2
    finally:
        os.chdir(cwd)
    captured = capsys.readouterr()
    assert message in captured.err, captured.err
    assert "epoch " not in captured.out and "Traceback" not in captured.err
    assert not (tmp_path / "runs").exists()


def test_out_under_a_file_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "afile").write_text("keep me")
    out = tmp_path / "afile" / "run"
    _nothing_trained(tmp_path, capsys, [*QUICK, "--out", str(out)],
                     f"error: --out: cannot write {out / 'checkpoint.npz'}: "
                     f"{tmp_path / 'afile'} is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "keep me"


def test_out_where_nothing_can_be_written_is_refused_before_training(tmp_path, capsys):
    _nothing_trained(tmp_path, capsys, [*QUICK, "--out", "/proc/nnarray-run"],
                     "error: --out: cannot write into /proc (")


@pytest.mark.skipif(os.geteuid() == 0, reason="the administrator writes into read-only folders")
def test_out_in_a_read_only_folder_is_refused_before_training(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _nothing_trained(tmp_path, capsys, [*QUICK, "--out", str(ro / "run")], f"error: --out: cannot write into {ro}")
    finally:
        ro.chmod(0o755)


def test_the_default_run_folder_is_checked_too(tmp_path, capsys):
    (tmp_path / "runs").write_text("not a folder")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert cli.main(["train", *QUICK]) == 2
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert "error: the run folder (choose another with --out): cannot write" in err
    assert "runs is a file, not a folder" in err


def test_plots_without_matplotlib_are_refused_before_training_with_the_install_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    argv = [a for a in QUICK if a != "--no-plots"]
    _nothing_trained(tmp_path, capsys, [*argv, "--out", str(tmp_path / "r")],
                     'error: the pictures (learning_curve.png, confusion_matrix.png) need matplotlib, which is not '
                     'installed: pip install "nnarray[scripts]"')
    assert not (tmp_path / "r").exists()
    # --no-plots trains without them
    assert cli.main(["train", *QUICK, "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    assert not (tmp_path / "r" / "learning_curve.png").exists()


def test_resume_into_another_folder_takes_the_best_model_along(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert cli.main(["train", *QUICK, "--epochs", "2", "--out", str(first)]) == 0
    before = {f: (first / f).read_bytes() for f in os.listdir(first)}
    assert cli.main(["train", "--resume", str(first), "--epochs", "3", "--out", str(second), "--quiet",
                     "--no-plots"]) == 0
    assert {"best.npz", "checkpoint.npz", "model.npz", "history.json"} <= set(os.listdir(second))
    assert nn.load_checkpoint(second / "checkpoint.npz")["epoch"] == 3
    assert {f: (first / f).read_bytes() for f in os.listdir(first)} == before, "the first run is left as it was"
    # without its best model the resumed run could not report: refused before training
    os.unlink(first / "best.npz")
    assert cli.main(["train", "--resume", str(first), "--epochs", "3", "--out", str(tmp_path / "third"),
                     "--quiet"]) == 2
    assert f"error: --resume: the run's best model {first / 'best.npz'} is missing" in capsys.readouterr().err
    assert not (tmp_path / "third").exists()


def test_a_diverging_run_stops_with_a_clear_message(tmp_path, capsys):
    out = tmp_path / "r"
    assert cli.main(["train", *QUICK, "--epochs", "3", "--lr", "1000", "--schedule", "constant", "--out",
                     str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: training diverged in epoch 1: the training loss became ") and "Traceback" not in err
    assert "Try a smaller learning rate than --lr 1000" in err


def test_distributed_without_mpi4py_is_refused_before_anything_is_loaded(tmp_path, capsys, monkeypatch):
    def unavailable(*a, **kw):
        raise nn.distributed.MPIUnavailableError(
            "mpi4py is not installed; install it with: pip install \"nnarray[mpi]\""
        )

    monkeypatch.setattr(nn.distributed, "MPIComm", unavailable)
    _nothing_trained(tmp_path, capsys, [*QUICK, "--distributed", "--out", str(tmp_path / "r")],
                     'error: --distributed: mpi4py is not installed; install it with: pip install "nnarray[mpi]"')
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag, value, make", [
    ("--momentum", "1", lambda: nn.SGD(0.1, momentum=1.0)),
    ("--weight-decay", "-1", lambda: nn.SGD(0.1, weight_decay=-1.0)),
    ("--gamma", "0", lambda: nn.schedules.Exponential(0.1, gamma=0.0)),
    ("--dropout", "1", lambda: nn.MLP([4, 8, 3], dropout=1.0)),
    ("--lr", "0", lambda: nn.SGD(lr=0.0)),
])
def test_a_flag_and_its_argument_are_refused_in_the_same_words(flag, value, make, capsys):
    """One rule per setting (nnarray.checks): the command parses the flag with the library's constraint."""
    with pytest.raises(SystemExit):
        cli.main(["train", flag, value])
    err = capsys.readouterr().err
    with pytest.raises(ValueError) as exc:
        make()
    expectation = str(exc.value).split(": expected ", 1)[1].split(", got")[0]
    assert f"argument {flag}: expected {expectation}, got {value}" in err


def test_the_header_says_jax_does_not_take_the_thread_limit(tmp_path, capsys, monkeypatch):
    """XLA reads no thread setting: with --threads 1 on two usable cores the command says so and how to limit it."""
    pytest.importorskip("jax", reason="JAX (the test extra installs it)")
    from nnarray import threads  # noqa: PLC0415
    from nnarray.cli import train as cli_train  # noqa: PLC0415

    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    jax_be = nn.get_backend("jax")
    note = cli_train._jax_threads_note(jax_be, {"threads": 1, "method": "threadpoolctl"})
    assert "use all 2 cores" in note and "taskset -c 0-0" in note
    assert cli_train._jax_threads_note(jax_be, {"threads": 2, "method": "threadpoolctl"}) is None
    assert cli_train._jax_threads_note(nn.get_backend("numpy"), {"threads": 1, "method": "threadpoolctl"}) is None
    assert cli_train._jax_threads_note(jax_be, {"threads": None, "method": "none"}) is None
    quick = [a if a != "numpy" else "jax" for a in QUICK]
    assert cli.main(["train", *quick, "--epochs", "1", "--threads", "1", "--out", str(tmp_path / "r")]) == 0
    assert "note: JAX does not take the thread limit" in capsys.readouterr().err
