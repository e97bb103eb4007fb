"""scripts/bench.py: the report's structure (no timing assertions) and the plain-NumPy yardstick's honesty."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import nnarray as nn
from conftest import HAS_TORCH


@pytest.fixture(scope="module")
def bench(import_script):
    return import_script("bench")


@pytest.fixture(scope="module")
def ys(import_script):
    return import_script("yardsticks")


def test_main_writes_json_with_rows_and_ratios(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = "--samples 2000 --repeats 1 --configs 100x100 --data random --settle 0.05".split()
    report = bench.main([*argv, "--json", str(out)])
    printed = capsys.readouterr().out
    assert "nnarray-numpy" in printed and "plain-numpy" in printed and "ratio" in printed

    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(report))  # what main returns is what it wrote
    assert {"date", "environment", "settings", "configs"} <= set(data)
    assert data["environment"]["numpy"] == np.__version__
    assert data["settings"]["samples_per_epoch_timed"] == 2000

    (cfg,) = data["configs"]
    assert (cfg["hidden"], cfg["batch"], cfg["layers"]) == (100, 100, "784-100-10")
    assert cfg["scale_to_60000"] == pytest.approx(30.0)
    res = cfg["results"]
    for name in ("nnarray-numpy", "plain-numpy"):
        row = res[name]
        assert row["available"] is True
        assert len(row["samples_ms_per_epoch"]) == 1
        assert row["median_ms_per_epoch"] > 0
        assert row["samples_per_s"] == pytest.approx(60000 / (row["median_ms_per_epoch"] / 1000))
        assert math.isfinite(row["last_train_loss"])
    ms_nnarray, ms_plain = res["nnarray-numpy"]["median_ms_per_epoch"], res["plain-numpy"]["median_ms_per_epoch"]
    assert cfg["ratios"]["nnarray-numpy/plain-numpy"] == pytest.approx(ms_nnarray / ms_plain)

    # Every yardstick has a row: timed, or marked not available with the reason.
    for name in ("torch-eager", "torch-cudagraph", "cupy-plain"):
        assert name in res
        if not res[name]["available"]:
            assert res[name]["reason"]
    if HAS_TORCH:
        assert res["torch-eager"]["available"] is True, res["torch-eager"]
        assert res["torch-eager"]["median_ms_per_epoch"] > 0
        assert cfg["ratios"]["nnarray-numpy/torch-eager"] == pytest.approx(
            res["nnarray-numpy"]["median_ms_per_epoch"] / res["torch-eager"]["median_ms_per_epoch"]
        )
    else:
        assert res["torch-eager"]["available"] is False
        assert "torch" in res["torch-eager"]["reason"]
    if not nn.cupy_available():
        assert res["cupy-plain"]["available"] is False
        assert "nnarray-numpy/cupy-plain" not in cfg["ratios"]
    if HAS_TORCH:  # the yardstick's FP32 precision is set explicitly and recorded beside the figures
        prec = data["environment"]["torch_fp32_precision"]
        assert prec.get("cuda.matmul") == "ieee" or prec.get("cuda.matmul.allow_tf32") is False, prec


def test_rows_can_be_restricted(bench):
    """ci/gpu.sh times only GPU rows: --backends and --yardsticks leave the others out entirely."""
    argv = "--samples 300 --repeats 1 --configs 8x100 --data random --settle 0 --backends numpy:generic".split()
    report = bench.main([*argv, "--yardsticks", "torch-cudagraph"])
    (cfg,) = report["configs"]
    assert set(cfg["results"]) == {"nnarray-numpy-generic", "torch-cudagraph"}
    assert report["settings"]["yardsticks"] == ["torch-cudagraph"]
    assert cfg["results"]["nnarray-numpy-generic"]["available"] is True
    if not nn.cupy_available():
        assert cfg["results"]["torch-cudagraph"]["available"] is False
    with pytest.raises(SystemExit):
        bench.main([*argv, "--yardsticks", "tensorflow"])


@pytest.mark.parametrize("batch_size", [32, 250])
def test_plain_numpy_yardstick_computes_what_nnarray_computes(ys, batch_size):
    """Same initial weights and batch order: one epoch of each gives the same parameters (float64)."""
    rng = np.random.default_rng(7)
    N, sizes = 250, [20, 16, 5]  # 250 = 7 batches of 32 + a partial batch of 26
    X = rng.random((N, sizes[0]))
    t = rng.integers(0, sizes[-1], size=N)

    net = nn.MLP(sizes, backend="numpy", dtype="float64", seed=3)
    params = {k: np.array(nn.to_numpy(v), dtype=np.float64) for k, v in net.params.items()}
    initial = ys.initial_params(sizes, seed=3, dtype="float64")
    for k in params:
        np.testing.assert_array_equal(params[k], initial[k])
    hist = nn.fit(net, nn.SGD(lr=0.1), X, t, epochs=1, batch_size=batch_size, reduction="mean", seed=11)

    order = np.random.default_rng(11).permutation(N)  # the permutation fit draws for its first epoch
    T = (t[:, None] == np.arange(sizes[-1])).astype(np.float64)
    loss_sum = ys.plain_train_epoch(np, X, T, params, order, batch_size, lr=0.1)

    for k in ("W1", "b1", "W2", "b2"):
        np.testing.assert_allclose(params[k], nn.to_numpy(net.params[k]), rtol=1e-10, atol=1e-13, err_msg=k)
        assert not np.array_equal(params[k], initial[k])  # it did train
    assert float(loss_sum) / N == pytest.approx(hist.train_loss[-1], rel=1e-10)


def test_plain_numpy_yardstick_keeps_float32(ys):
    rng = np.random.default_rng(0)
    X = rng.random((40, 12), dtype=np.float32)
    t = rng.integers(0, 3, size=40)
    T = (t[:, None] == np.arange(3)).astype(np.float32)
    params = ys.initial_params([12, 8, 3], seed=0, dtype="float32")
    loss = ys.plain_train_epoch(np, X, T, params, rng.permutation(40), 16)
    assert all(v.dtype == np.float32 for v in params.values())
    assert np.asarray(loss).dtype == np.float32 and math.isfinite(float(loss))


def test_parse_configs_and_data_fallback(bench):
    cfgs = bench.parse_configs("100x100, 4096x1024")
    assert [(c["hidden"], c["batch"]) for c in cfgs] == [(100, 100), (4096, 1024)]
    with pytest.raises(SystemExit):
        bench.parse_configs("100-100")
    X, t, desc = bench.load_data("random", 300)
    assert X.shape == (300, 784) and X.dtype == np.float32 and t.dtype == np.int64
    assert 0 <= X.min() and X.max() < 1 and set(np.unique(t)) <= set(range(10))
    assert desc.startswith("random")


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_torch_yardstick_computes_what_nnarray_computes(ys, momentum):
    """TorchTrainer starts from nn.MLP's weights and, at constant lr, trains exactly what fit trains (float64)."""
    torch = ys.import_torch()
    rng = np.random.default_rng(5)
    N, sizes, B = 230, [20, 16, 5], 32
    X = rng.random((N, sizes[0]))
    t = rng.integers(0, sizes[-1], size=N)
    tr = ys.TorchTrainer(torch, ys.initial_params(sizes, seed=3, dtype="float64"), X, t, B, 0.1,
                         momentum=momentum, dtype="float64")
    net = nn.MLP(sizes, backend="numpy", dtype="float64", seed=3)
    lin1, lin2 = tr.model[0], tr.model[2]
    np.testing.assert_array_equal(lin1.weight.detach().numpy().T, nn.to_numpy(net.params["W1"]))
    np.testing.assert_array_equal(lin2.weight.detach().numpy().T, nn.to_numpy(net.params["W2"]))

    hist = nn.fit(net, nn.SGD(lr=0.1, momentum=momentum), X, t, epochs=2, batch_size=B, seed=11)
    orders = np.random.default_rng(11)
    losses = [tr.epoch(orders.permutation(N), 0.1) / N for _ in range(2)]
    assert losses == pytest.approx(hist.train_loss, rel=1e-10)
    for lin, l in ((lin1, 1), (lin2, 2)):
        np.testing.assert_allclose(lin.weight.detach().numpy().T, nn.to_numpy(net.params[f"W{l}"]),
                                   rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(lin.bias.detach().numpy(), nn.to_numpy(net.params[f"b{l}"]), rtol=1e-10, atol=1e-13)
    assert tr.accuracy(tr.tensor(X), tr.tensor(t, torch.int64)) == pytest.approx(nn.evaluate(net, X, t)[1])


def test_recipes_time_the_optimizers_and_dropout_against_torchs_best(bench):
    argv = "--recipes adamw-dropout,sgd --samples 400 --repeats 1 --data random --settle 0".split()
    report = bench.main(argv)
    ada, sgd = report["configs"]
    assert (ada["layers"], ada["batch"], ada["dropout"]) == ("784-2048-10", 128, 0.5)
    assert ada["optimizer"] == ["AdamW", {"lr": 1e-3, "weight_decay": 0.05}]
    assert (sgd["layers"], sgd["batch"], sgd["optimizer"][0]) == ("784-100-10", 100, "SGD")
    assert report["environment"]["numpy_updates"] in ("numba", "functional")
    for cfg in (ada, sgd):
        assert cfg["results"]["nnarray-numpy"]["available"] is True
        assert cfg["gemm_floor_ms_per_epoch"] > 0
        if HAS_TORCH:
            assert cfg["results"]["torch-eager"]["available"] is True, cfg["results"]["torch-eager"]
            assert ("fused=True" in cfg["torch_optimizer"]) != ("foreach=True" in cfg["torch_optimizer"])
            assert cfg["ratios"]["nnarray-numpy/torch-eager"] > 0
    with pytest.raises(SystemExit, match="--recipes: expected names among"):
        bench.parse_recipes("lamb")
    assert [c["name"] for c in bench.parse_recipes("all")] == ["adamw-dropout", "momentum", "sgd"]
    (at,) = bench.parse_recipes("momentum@1000x100")  # the recipe's optimizer at another size
    assert (at["layers"], at["batch"], at["optimizer"][0], at["dropout"]) == ("784-1000-10", 100, "SGD", 0.0)
    with pytest.raises(SystemExit, match="--configs: expected HIDDENxBATCH"):
        bench.parse_recipes("momentum@1000")


def test_the_header_says_when_jax_rows_would_get_more_cores_than_the_others(bench, monkeypatch):
    """XLA reads no thread variable: with OMP_NUM_THREADS=1 on two cores the JAX rows would run on both."""
    monkeypatch.setattr(bench.threads, "usable_cores", lambda: 2)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(k, raising=False)
    assert bench.jax_threads_note(["numpy", "jax:fast"]) is None  # nothing limited: every row has both cores
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    note = bench.jax_threads_note(["numpy", "jax:fast"])
    assert "use all 2 cores" in note and "the others 1" in note and "taskset -c 0" in note
    assert bench.jax_threads_note(["numpy", "torch"]) is None  # no JAX row
    monkeypatch.setattr(bench.threads, "usable_cores", lambda: 1)
    assert bench.jax_threads_note(["jax"]) is None  # one core: the same for everyone


@pytest.fixture(scope="module")
def bench_step(import_script):
    return import_script("bench_step")


def test_bench_step_pairs_the_fast_path_with_the_generic_step(bench_step, tmp_path, capsys):
    """scripts/bench_step.py: two identical trainings, one per step, alternating blocks; the report's medians and
    ratio come from the per-block samples (no timing asserted)."""
    pytest.importorskip("numba", reason="NumPy's fast path needs the numba extra")
    out = tmp_path / "step.json"
    report = bench_step.main(["--backend", "numpy", "--recipe", "momentum@16x8", "--samples", "64", "--blocks", "3",
                              "--batches", "2", "--data", "random", "--json", str(out)])
    text = capsys.readouterr().out
    assert "784-16-10, batch 8, SGD(lr=0.05, momentum=0.9)" in text and "fast / generic" in text
    assert report["fast_step"] == "NumbaStep" and len(report["samples"]) == 3
    ratios = sorted(s["fast"] / s["generic"] for s in report["samples"])
    assert report["ratio"] == pytest.approx(ratios[1])
    assert json.loads(out.read_text())["fast_us"] == pytest.approx(report["fast_us"])


def test_bench_step_refuses_a_backend_without_a_fast_path(bench_step, capsys):
    with pytest.raises(SystemExit):
        bench_step.main(["--backend", "array_api_strict", "--recipe", "sgd@8x8", "--samples", "32", "--data", "random"])
    err = capsys.readouterr().err
    assert "--backend array_api_strict: no fast path runs this training on 'array_api_strict'" in err
