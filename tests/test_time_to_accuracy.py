"""scripts/time_to_accuracy.py: the report's structure and that nnarray and torch train the same network.

No timing assertions beyond "positive": speed is what the script reports, not what the tests check.
"""

from __future__ import annotations

import json
import math

import pytest

import nnarray as nn
from conftest import HAS_TORCH

QUICK = ["--subset", "3000", "--hidden", "32", "--max-epochs", "3"]


def _fashion_available():
    try:
        nn.datasets.load_fashion_mnist(download=False)
    except FileNotFoundError:  # DatasetNotFoundError
        return False
    return True


pytestmark = pytest.mark.skipif(not _fashion_available(), reason="apt-get install dataset-fashion-mnist")



NO_TORCH = "torch is not importable here: the torch-eager yardstick row is reported as not available"


@pytest.fixture(scope="module")
def tta(import_script):
    return import_script("time_to_accuracy")


@pytest.fixture(scope="module")
def reached(tta, tmp_path_factory):
    out = tmp_path_factory.mktemp("tta") / "tta.json"
    impls = "nnarray,torch-eager"  # explicit, so a CUDA machine does not add the graph row here
    report = tta.main([*QUICK, "--target", "0.5", "--impls", impls, "--backend", "numpy", "--json", str(out)])
    return report, out


def _check_row(row, max_epochs):
    assert row["available"] is True
    assert row["reached"] is True
    assert 1 <= row["epochs_to_target"] <= max_epochs
    assert row["seconds_to_target"] > 0
    assert row["seconds_per_epoch"] > 0 and row["setup_seconds"] >= 0
    per = row["per_epoch"]
    assert len(per) == row["epochs_run"] == row["epochs_to_target"]  # the run stops at the target
    assert [e["epoch"] for e in per] == list(range(1, len(per) + 1))
    secs = [e["seconds"] for e in per]
    assert all(s > 0 for s in secs) and secs == sorted(secs)
    assert row["seconds_to_target"] == per[row["epochs_to_target"] - 1]["seconds"]
    for e in per:
        assert 0.0 <= e["test_accuracy"] <= 1.0 and math.isfinite(e["train_loss"])
    assert per[-1]["test_accuracy"] >= 0.5
    assert row["final_accuracy"] == per[-1]["test_accuracy"]
    assert row["best_accuracy"] == max(e["test_accuracy"] for e in per)
    # lr of epoch e is lr * gamma**(e-1)
    assert [e["lr"] for e in per] == pytest.approx([0.05 * 0.9**k for k in range(len(per))])


def test_report_structure_and_json(reached, capsys):
    report, out = reached
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(report))  # what main returns is what it wrote
    assert {"date", "environment", "settings", "results", "ratios"} <= set(data)
    s = data["settings"]
    assert (s["hidden"], s["batch_size"], s["max_epochs"], s["target"], s["subset"]) == (32, 100, 3, 0.5, 3000)
    assert (s["lr"], s["momentum"], s["gamma"], s["seed"], s["dtype"]) == (0.05, 0.9, 0.9, 0, "float32")
    assert (s["n_train"], s["n_test"]) == (3000, 10000)
    assert s["impls"] == ["nnarray", "torch-eager"]
    row = data["results"]["nnarray"]
    _check_row(row, 3)
    assert row["backend"] == "numpy" and row["device"] == "cpu"


@pytest.mark.skipif(not HAS_TORCH, reason=NO_TORCH)
def test_torch_row_and_ratio(reached):
    report, _ = reached
    row = report["results"]["torch-eager"]
    _check_row(row, 3)
    assert row["device"] in ("cpu", "cuda")
    ratio = report["ratios"]["nnarray/torch-eager"]
    a = report["results"]["nnarray"]
    assert ratio["seconds_to_target"] == pytest.approx(a["seconds_to_target"] / row["seconds_to_target"])
    assert ratio["seconds_per_epoch"] == pytest.approx(a["seconds_per_epoch"] / row["seconds_per_epoch"])


@pytest.mark.skipif(not HAS_TORCH, reason=NO_TORCH)
def test_same_network_same_first_epoch(reached):
    """Same init, same batches, float32: the first epoch is the same computation in both libraries."""
    report, _ = reached
    acc_nn = report["results"]["nnarray"]["per_epoch"][0]["test_accuracy"]
    acc_torch = report["results"]["torch-eager"]["per_epoch"][0]["test_accuracy"]
    assert abs(acc_nn - acc_torch) <= 0.02, (acc_nn, acc_torch)
    loss_nn = report["results"]["nnarray"]["per_epoch"][0]["train_loss"]
    loss_torch = report["results"]["torch-eager"]["per_epoch"][0]["train_loss"]
    assert loss_nn == pytest.approx(loss_torch, rel=1e-3)


def test_generic_row_and_a_fast_row_that_cannot_run(tta, monkeypatch):
    """ci/gpu.sh compares nnarray with and without its fast path; where a backend has none (NumPy without the
    numba engine), the fast row says why instead of stopping the others."""
    monkeypatch.setenv("NNARRAY_NUMBA", "0")
    report = tta.main([*QUICK[:4], "--max-epochs", "2", "--target", "0.5", "--backend", "numpy", "--no-warmup",
                       "--impls", "nnarray:generic,nnarray:fast"])
    assert report["settings"]["warmup"] is False
    _check_row(report["results"]["nnarray:generic"], 2)
    fast = report["results"]["nnarray:fast"]
    assert fast["available"] is False and "fast path" in fast["reason"], fast
    assert report["ratios"] == {}  # no yardstick asked for


def test_target_not_reached_is_reported(tta, capsys):
    report = tta.main([*QUICK[:4], "--max-epochs", "1", "--target", "0.999", "--backend", "numpy"])
    printed = capsys.readouterr().out
    assert "not reached in 1 epochs" in printed
    names = ["nnarray"] + (["torch-eager"] if HAS_TORCH else [])
    for name in names:
        row = report["results"][name]
        assert row["available"] is True and row["reached"] is False, (name, row.get("reason"))
        assert row["epochs_to_target"] is None and row["seconds_to_target"] is None
        assert row["epochs_run"] == 1 and len(row["per_epoch"]) == 1
        assert row["best_accuracy"] < 0.999 and row["seconds_per_epoch"] > 0
    if HAS_TORCH:
        ratio = report["ratios"]["nnarray/torch-eager"]
        assert ratio["seconds_to_target"] is None and "not reached" in ratio["note"]
    else:
        assert report["results"]["torch-eager"]["available"] is False


def test_bad_arguments(tta):
    with pytest.raises(SystemExit):
        tta.main(["--impls", "nnarray,tensorflow"])
    with pytest.raises(SystemExit):
        tta.main(["--target", "1.5"])
