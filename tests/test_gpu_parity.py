"""scripts/gpu_parity.py in its CPU mode (the GPU mode is ci/gpu.sh's stage c): the same comparison code that
checks CuPy, torch on CUDA and JAX on CUDA against NumPy, here on array-api-strict (always) and torch on the
CPU (when installed). It must pass on honest backends and fail on a deviation the tolerances exclude."""

import json

import numpy as np
import pytest

from conftest import HAS_TORCH

SMALL = ["--mode", "cpu", "--sizes", "8,16,3", "--n", "200", "--batch", "20"]


@pytest.fixture(scope="module")
def parity(import_script):
    return import_script("gpu_parity")


def test_cpu_mode_compares_every_available_backend_with_numpy(parity, tmp_path, capsys):
    out = tmp_path / "parity.json"
    assert parity.main([*SMALL, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "cpu" and report["steps"] == 300
    rows = report["backends"]
    assert rows["strict"]["ok"]
    assert rows["torch-cpu"]["available"] is HAS_TORCH
    if HAS_TORCH:
        assert rows["torch-cpu"]["ok"]
        assert rows["torch-cpu"]["checks"]["float64, 300 steps"]["dtype"] == "float64"
    assert rows["jax-cpu"]["available"] or rows["jax-cpu"]["reason"]  # compared once nnarray has a JAX backend
    assert "all within tolerance" in capsys.readouterr().out


def test_a_deviation_beyond_the_tolerance_fails(parity):
    ref = {"W1": np.array([[1.0, -2.0], [0.5, 3.0]])}
    assert parity.worst({"W1": ref["W1"] * (1 + 5e-11)}, ref, parity.F64) <= 1.0
    assert parity.worst({"W1": ref["W1"] * (1 + 5e-9)}, ref, parity.F64) > 1.0
    assert parity.worst({"W1": ref["W1"][:1]}, ref, parity.F64) == float("inf")  # a shape mismatch never passes
    assert parity.normwise({"W1": ref["W1"] + 3e-3}, ref) == pytest.approx(1e-3)


def test_a_wrong_backend_is_reported_as_failing(parity, monkeypatch, tmp_path):
    """A "backend" whose training drifts (η 1 % larger) must fail the run, not pass unnoticed."""
    import nnarray as nn

    honest = parity.train

    def drifting(be, dtype, sizes, data, steps, batch):
        if be.name == "numpy":
            return honest(be, dtype, sizes, data, steps, batch)
        monkeypatch.setattr(nn, "SGD", lambda lr, momentum: nn.optim.SGD(lr * 1.01, momentum=momentum))
        try:
            return honest(be, dtype, sizes, data, steps, batch)
        finally:
            monkeypatch.setattr(nn, "SGD", nn.optim.SGD)

    monkeypatch.setattr(parity, "train", drifting)
    monkeypatch.setattr(parity, "candidates", lambda mode: [("strict", nn.get_backend("array_api_strict"), None)])
    out = tmp_path / "parity.json"
    assert parity.main([*SMALL, "--json", str(out)]) == 1
    checks = json.loads(out.read_text())["backends"]["strict"]["checks"]
    assert not checks["float64, 300 steps"]["ok"] and checks["float32, one forward/backward"]["ok"]


@pytest.mark.parametrize("argv, match", [
    (["--sizes", "8,x"], "--sizes: expected comma-separated integers"),
    (["--n", "210", "--batch", "20"], "an epoch of 11 batches must divide --steps"),
])
def test_bad_arguments_are_named(parity, capsys, argv, match):
    with pytest.raises(SystemExit) as exc:
        parity.parse_args(["--mode", "cpu", *argv])
    assert exc.value.code == 2
    assert match in capsys.readouterr().err
