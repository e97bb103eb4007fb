"""The command on a new user's inputs: each case ends in a clear refusal before any training, or in the right
behaviour, with the command's words (flags, not Python arguments) and no traceback."""

import json
import os
import shutil

import numpy as np
import pytest

import nnarray as nn
from nnarray import cli

QUICK = ["--hidden", "8", "--backend", "numpy", "--no-plots", "--epochs", "1"]
PYTHON_WORDS = ("data_dir=", "download=", "fast=None", "fast=False", "backend='", "Traceback", "UserWarning")


def _csv(path, labels, n_features=3, header=True, seed=0):
    rng = np.random.default_rng(seed)
    rows = [[lab, *np.round(rng.random(n_features), 3)] for lab in labels]
    head = ("label," + ",".join(f"f{i}" for i in range(n_features)) + "\n") if header else ""
    path.write_text(head + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return path


def _run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    for words in PYTHON_WORDS:
        assert words not in out + err, (words, out, err)
    return rc, out, err


def _json_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return json.loads(lines[0])


# ------------------------------------------------------------------------------------------- labels
def test_a_stray_label_in_a_csv_is_refused_with_its_line_before_training(tmp_path, capsys):
    labels = [k % 4 for k in range(30)]
    labels[5] = 5000  # the file's line 7: the header is line 1
    f = _csv(tmp_path / "scores.csv", labels)
    rc, out, err = _run(capsys, "train", "--data", str(f), *QUICK, "--out", str(tmp_path / "r"))
    assert rc == 2
    assert ("label column: label 5000 at line 7 would make 5001 classes (0..5000), "
            "but only 5 distinct labels occur") in err
    assert not (tmp_path / "r").exists() and "epoch" not in out


def test_a_single_class_is_refused(tmp_path, capsys):
    f = _csv(tmp_path / "one.csv", [2] * 24)
    rc, out, err = _run(capsys, "train", "--data", str(f), *QUICK, "--out", str(tmp_path / "r"))
    assert rc == 2 and "expected labels of at least two classes, got only class 2 in all 24 labels" in err
    assert "is the label in the first column?" in err and not (tmp_path / "r").exists()


def test_a_stray_label_in_the_test_file_names_that_file(tmp_path, capsys):
    train = _csv(tmp_path / "train.csv", [k % 3 for k in range(36)])
    test = _csv(tmp_path / "test.csv", [0, 1, 2, 70000, 1], header=False)
    rc, _, err = _run(capsys, "train", "--data", str(train), "--test-data", str(test), *QUICK, "--out",
                      str(tmp_path / "r"))
    assert rc == 2 and f"{test}: label column: label 70000 at line 4 would make 70001 classes" in err


def test_labels_from_one_train_with_one_plain_warning(tmp_path, capsys):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "from1.npz", X_train=rng.random((60, 5)).astype(np.float32), t_train=np.arange(60) % 4 + 1)
    rc, out, err = _run(capsys, "train", "--data", str(tmp_path / "from1.npz"), *QUICK, "--val-split", "0",
                        "--out", str(tmp_path / "r"))
    assert rc == 0, err
    warned = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "class 0 of 0..4 has no training sample" in warned[0], err
    assert "network:  5-8-5" in out


# ------------------------------------------------------------------------------------------- paths
def test_an_own_data_run_is_evaluated_and_resumed_from_another_folder(tmp_path, capsys, monkeypatch):
    (tmp_path / "work").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    (X, t), (Xt, tt) = nn.datasets.load("digits")
    np.savez("digits.npz", X_train=X, t_train=t, X_test=Xt, t_test=tt)
    rc, _, err = _run(capsys, "train", "--data", "digits.npz", *QUICK, "--out", "run", "--quiet")
    assert rc == 0, err
    meta = nn.load_history(tmp_path / "work" / "run" / "history.json")[1]
    assert meta["config"]["data"] == str(tmp_path / "work" / "digits.npz") and meta["dataset"] == "digits.npz"
    assert meta["config"]["data_file"]["bytes"] == os.path.getsize("digits.npz")
    monkeypatch.chdir(tmp_path / "elsewhere")
    run = str(tmp_path / "work" / "run")
    rc, out, err = _run(capsys, "evaluate", run)
    assert rc == 0 and "test set: digits.npz, 359 samples" in out, err
    rc, _, err = _run(capsys, "train", "--resume", run, "--epochs", "2", "--quiet", "--no-plots")
    assert rc == 0, err
    # the file changes: the run refuses it by name, before anything
    np.savez(tmp_path / "work" / "digits.npz", X_train=X[:100], t_train=t[:100], X_test=Xt, t_test=tt)
    rc, _, err = _run(capsys, "evaluate", run)
    assert rc == 2 and "digits.npz: the --data file of the run changed since the run recorded it" in err
    rc, _, err = _run(capsys, "train", "--resume", run, "--epochs", "3", "--quiet", "--no-plots")
    assert rc == 2 and "changed since the run recorded it" in err


def test_evaluate_tests_a_run_on_another_file(tmp_path, capsys):
    (X, t), (Xt, tt) = nn.datasets.load("digits")
    assert cli.main(["train", "--dataset", "digits", *QUICK, "--out", str(tmp_path / "r"), "--quiet"]) == 0
    capsys.readouterr()
    _csv(tmp_path / "other.csv", [0], n_features=64)  # replaced below by real rows
    np.savetxt(tmp_path / "other.csv", np.column_stack([tt[:50], Xt[:50]]), delimiter=",", fmt="%.6g")
    rc, out, err = _run(capsys, "evaluate", str(tmp_path / "r"), "--data", str(tmp_path / "other.csv"))
    assert rc == 0 and "test set: other.csv, 50 samples" in out, err
    doc = _json_line(_run(capsys, "evaluate", str(tmp_path / "r"), "--data", str(tmp_path / "other.csv"), "--json")[1])
    assert doc["samples"] == 50 and doc["dataset"] == "other.csv"
    narrow = _csv(tmp_path / "narrow.csv", [0, 1, 2], n_features=5)
    rc, _, err = _run(capsys, "evaluate", str(tmp_path / "r"), "--data", str(narrow))
    assert rc == 2 and f"--data {narrow}: expected samples of 64 features (the model's inputs), got 5" in err


# ------------------------------------------------------------------------------------------- processes, threads
def test_distributed_in_one_process_says_so_and_how_to_start_p(tmp_path, capsys):
    pytest.importorskip("mpi4py")
    rc, out, err = _run(capsys, "train", "--dataset", "digits", *QUICK, "--distributed", "--out", str(tmp_path / "r"))
    assert rc == 0, err
    assert "note: --distributed in a single process: this run trains in 1 process" in err
    assert "mpiexec -n P " in err and "-m nnarray train --dataset digits" in err and "--distributed" in err
    assert "processes: 1" in out
    assert nn.load_history(tmp_path / "r" / "history.json")[1]["processes"] == 1


def test_the_header_and_history_say_threads_and_processes(tmp_path, capsys):
    rc, out, err = _run(capsys, "train", "--dataset", "digits", *QUICK, "--out", str(tmp_path / "r"))
    assert rc == 0, err
    assert "processes: 1\n" in out
    line = next(x for x in out.splitlines() if x.startswith("threads:"))
    assert "cores idle at start; --threads N sets them" in line
    meta = nn.load_history(tmp_path / "r" / "history.json")[1]
    assert meta["processes"] == 1 and meta["threads"]["threads"] >= 1 and "idle at start" in meta["threads"]["why"]
    assert "training: 1 epoch," in out and "after 1 epoch " in out and "1 epochs" not in out


# ------------------------------------------------------------------------------------------- words
def test_missing_data_advice_names_flags(tmp_path, capsys, monkeypatch):
    def offline(url, timeout):
        raise OSError("offline (test)")

    monkeypatch.setattr("nnarray.datasets.loaders._fetch", offline)
    rc, out, err = _run(capsys, "train", "--dataset", "mnist", "--data-dir", str(tmp_path / "none"), *QUICK)
    assert rc == 2
    assert "pass --data-dir DIR" in err and "run the command again on a machine with internet access" in err
    assert "--dataset fashion-mnist" in err and "--dataset digits" in err


def test_fast_on_without_a_fast_path_names_the_flag(tmp_path, capsys):
    rc, _, err = _run(capsys, "train", "--dataset", "digits", *QUICK, "--backend", "array_api_strict", "--fast", "on",
                      "--out", str(tmp_path / "r"))
    assert rc == 2 and "error: --fast on: no fast path available here" in err and "use --fast auto or --fast off" in err


def test_resume_notes_ignored_flags_as_flags(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "digits", *QUICK, "--out", str(tmp_path / "r"), "--quiet"]) == 0
    capsys.readouterr()
    rc, out, err = _run(capsys, "train", "--resume", str(tmp_path / "r"), "--epochs", "2", "--lr", "0.2", "--hidden",
                        "9",
                        "--no-plots")
    assert rc == 0 and "note: resuming keeps the checkpoint's settings; ignoring --hidden 9, --lr 0.2" in out, err


def test_a_diverging_run_names_the_learning_rate_flag(tmp_path, capsys):
    rc, out, err = _run(capsys, "train", "--dataset", "digits", "--hidden", "64", "--backend", "numpy", "--no-plots",
                        "--lr", "5000", "--momentum", "0", "--epochs", "3", "--out", str(tmp_path / "r"))
    assert rc == 1 and "training diverged in epoch" in err and "Try a smaller learning rate than --lr 5000.0" in err


# ------------------------------------------------------------------------------------------- small things
def test_quiet_prints_rounded_figures_and_the_run_folder(tmp_path, capsys):
    rc, out, err = _run(capsys, "train", "--dataset", "digits", *QUICK, "--quiet", "--out", str(tmp_path / "r"))
    lines = [x for x in out.splitlines() if x.strip()]
    assert rc == 0 and len(lines) == 1, (out, err)
    figures = [w.strip(",()") for w in lines[0].split() if w[:2] == "0."]
    assert figures and all(len(f) == 6 for f in figures), lines
    assert lines[0].endswith(f"; outputs in {tmp_path / 'r'}")
    f = _csv(tmp_path / "noval.csv", [k % 2 for k in range(12)])
    rc, out, _ = _run(capsys, "train", "--data", str(f), *QUICK, "--quiet", "--val-split", "0", "--out",
                      str(tmp_path / "s"))
    assert rc == 0 and out.strip() == f"no test set; no validation split; outputs in {tmp_path / 's'}"


def test_bare_command_is_a_usage_error(capsys):
    assert cli.main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("usage: nnarray {train,evaluate,export}") and "a command is required" in err
    assert cli.main(["--help"]) == 0 and capsys.readouterr().out.startswith("usage:")


def test_evaluate_version_and_json_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["evaluate", "--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"nnarray {nn.__version__}"
    assert cli.main(["train", "--dataset", "digits", *QUICK, "--out", str(tmp_path / "r"), "--quiet"]) == 0
    capsys.readouterr()
    # the folder after --json is the run (a flag takes no value): no IsADirectoryError, one JSON line
    doc = _json_line(_run(capsys, "evaluate", "--json", str(tmp_path / "r"))[1])
    assert doc["dataset"] == "digits" and doc["samples"] == 359 and 0 <= doc["test_accuracy"] <= 1


def test_own_data_is_titled_by_its_file(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    f = _csv(tmp_path / "iris_like.csv", [k % 3 for k in range(48)])
    rc, out, err = _run(capsys, "train", "--data", str(f), "--hidden", "8", "--backend", "numpy", "--epochs", "1",
                        "--out", str(tmp_path / "r"), "--json")
    assert rc == 0, err
    assert _json_line(out)["dataset"] == "iris_like.csv"
    assert nn.load_history(tmp_path / "r" / "history.json")[1]["dataset"] == "iris_like.csv"
    shutil.rmtree(tmp_path / "r")
