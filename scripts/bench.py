#!/usr/bin/env python
"""Speed of nnarray against yardsticks measured in the same process: ms per epoch of the seed network.

Whole training epochs (60 000 samples; the last batch may be smaller) of 784-H-10 with one hidden ReLU layer,
softmax + cross-entropy (mean), plain SGD η = 0.1, float32 by default, for ``--configs`` HIDDENxBATCH
(default 100x100,1000x100; with a GPU also 4096x1024). Every epoch draws a host permutation and ends by
reading its loss, which synchronises with the device. Rows:

* ``nnarray-<backend>[-generic|-fast]`` — one :func:`nnarray.fit` epoch, timed by fit (``hist.seconds``);
  ``--backends`` numpy, cupy, array_api_strict, torch, jax; ``:generic`` forces ``fit(fast=False)``, ``:fast``
  ``fit(fast=True)`` (default rows: numpy, jax:generic and jax:fast when JAX imports, cupy and cupy:fast
  with a GPU);
* ``plain-numpy`` / ``cupy-plain`` — :func:`yardsticks.plain_train_epoch`, the network written directly;
* ``torch-eager`` (CUDA when available, else the CPU) and ``torch-cudagraph`` (CUDA only):
  :class:`yardsticks.TorchTrainer`;
* ``gemm-numpy`` — the GEMM floor: only the epoch's matrix products in NumPy (:func:`gemm_row`), so the ratio
  nnarray-numpy / gemm-numpy says how far the whole step is from its products. ``--yardsticks`` picks among these.

All start from ``nn.MLP``'s initial weights. Method: each row is prepared (data on its device once) and warmed
up (20 batches plus the last batch's shape); then ``--repeats`` timed epochs run round-robin, rotating who goes
first, each after at least ``--settle`` seconds (0.3) of untimed batches of the same row, because right after
another library's thread pool ran, the first few hundred ms measured up to 2x slower on a 2-core machine. The
table gives medians and the ratios nnarray / yardstick (> 1: nnarray slower). ``--samples N`` times epochs of
N samples and scales to 60 000.

``--recipes`` times the recipes people train instead (:data:`RECIPES`): 784-2048-10 at batch 128 with dropout 0.5
and AdamW(1e-3, weight decay 0.05) — the README's best recipe —, the same network with SGD momentum 0.9, and
784-100-10 at batch 100 with SGD; each nnarray row against ``torch-eager`` with torch's fused optimizer where it
has one on the CPU (else foreach; the report says which). Every table also gives the GEMM floor: the epoch's
matrix products at the rate NumPy's float32 matmul reaches at 1000³ in the same run.

Usage::

    python scripts/bench.py                                  # CPU: 100x100,1000x100; GPU: all three
    python scripts/bench.py --configs 100x100 --repeats 5 --json bench.json
    python scripts/bench.py --backends cupy,cupy:fast --yardsticks torch-eager,torch-cudagraph   # GPU rows only
    python scripts/bench.py --recipes all --repeats 3                        # the recipes against torch
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yardsticks as ys

import nnarray as nn
from nnarray import fused, threads

EPOCH_SAMPLES, LR, SEED = 60000, 0.1, 0
WARMUP_BATCHES = SETTLE_BATCHES = 20
SETTLE_SECONDS = 0.3
YARDSTICKS = ("plain-numpy", "cupy-plain", "torch-eager", "torch-cudagraph", "gemm-numpy")


def load_data(kind="auto", n_samples=EPOCH_SAMPLES, seed=SEED):
    """``(X float32 (n, 784), t int64 (n,), description)``: Fashion-MNIST's first rows, or random data."""
    if kind not in ("auto", "fashion-mnist", "random"):
        raise ValueError(f"data: expected auto, fashion-mnist or random, got {kind!r}")
    why = ""
    if kind != "random":
        try:
            (X, t), _ = nn.datasets.load_fashion_mnist(download=False)
            if n_samples <= X.shape[0]:
                return X[:n_samples], t[:n_samples].astype(np.int64), "Fashion-MNIST"
            why = f"{n_samples} samples requested, Fashion-MNIST has {X.shape[0]}"
        except FileNotFoundError as exc:  # DatasetNotFoundError
            why = str(exc).splitlines()[0]
        if kind == "fashion-mnist":
            raise RuntimeError(f"Fashion-MNIST not usable: {why}")
    rng = np.random.default_rng(seed + 12345)
    X = rng.random((n_samples, ys.N_IN), dtype=np.float32)
    t = rng.integers(0, ys.N_CLASSES, size=n_samples, dtype=np.int64)
    return X, t, "random (uniform [0,1) pixels, uniform labels)" + (f" -- Fashion-MNIST not used: {why}" if why else "")


# --------------------------------------------------------------------------- rows: epoch(n) -> (seconds, mean loss)
#: Row variants: the step (``generic`` / ``fast``, :func:`nnarray.fit`'s ``fast``) or the optimizer's update
#: (``functional``: the pure rule, no fused form; the plain row uses the default, a fused form where one stands),
#: chosen by the switches nnarray reads.
VARIANTS = {"": ({}, None), "generic": ({}, False), "fast": ({}, True), "functional": ({"NNARRAY_FUSED": "0"}, None)}


def _variant(variant):
    """``(environment switches, fast)`` of a row variant."""
    if variant not in VARIANTS:
        raise ys.Unavailable(f"unknown variant {variant!r} ({', '.join(v for v in VARIANTS if v)})")
    return VARIANTS[variant]


def _fit_epoch(net, opt, X, t, batch_size, rng, variant):
    """One :func:`nnarray.fit` epoch under the row variant's switches; ``(seconds, mean loss)``."""
    env, fast = _variant(variant)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        hist = nn.fit(net, opt, X, t, epochs=1, batch_size=batch_size, reduction="mean", seed=rng,
                      options=nn.FitOptions(fast=fast))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return hist.seconds[-1], hist.train_loss[-1]


def nnarray_row(spec, sizes, B, X, t, dtype):
    name, _, variant = spec.partition(":")
    _variant(variant)
    try:
        be = nn.get_backend(name)
    except Exception as exc:  # noqa: BLE001 -- BackendUnavailableError, missing library
        raise ys.Unavailable(str(exc)) from exc
    net = nn.MLP(sizes, backend=be, dtype=dtype, seed=SEED)
    opt, rng = nn.SGD(lr=LR), np.random.default_rng(SEED)
    Xd, td = be.asarray(X, dtype=net.dtype), be.asarray(t, dtype=be.index_dtype)  # moved once; fit does not copy

    def epoch(n):
        Xn, tn = (Xd, td) if n == X.shape[0] else (Xd[:n, ...], td[:n])
        return _fit_epoch(net, opt, Xn, tn, B, rng, variant)

    return epoch


def plain_row(xp_name, sizes, B, X, t, dtype):
    if xp_name == "numpy":
        xp, sync = np, (lambda: None)
    else:
        if not nn.cupy_available():
            raise ys.Unavailable("needs CuPy and a CUDA device")
        import cupy as xp  # noqa: PLC0415

        sync = xp.cuda.get_current_stream().synchronize
    Xd = xp.asarray(X, dtype=dtype)
    T = xp.asarray((t[:, None] == np.arange(ys.N_CLASSES)).astype(dtype))  # one-hot teacher, built once
    params = {k: xp.asarray(v) for k, v in ys.initial_params(sizes, SEED, dtype).items()}
    rng = np.random.default_rng(SEED)

    def epoch(n):
        start = time.perf_counter()
        order = xp.asarray(rng.permutation(X.shape[0])[:n])
        loss = float(ys.plain_train_epoch(xp, Xd, T, params, order, B, LR))  # reading it synchronises
        sync()
        return time.perf_counter() - start, loss / n

    return epoch


def gemm_row(_, sizes, B, X, t, dtype):
    """The GEMM floor of NumPy's BLAS: only the epoch's matrix products (forward X·W1, H·W2; backward Hᵀ·a,
    a·W2ᵀ, Xᵀ·h) with this library's layouts, on contiguous batches — no gather, bias, ReLU, loss or update."""
    if len(sizes) != 3:
        raise ys.Unavailable("for one hidden layer")
    params = ys.initial_params(sizes, SEED, dtype)
    W1, W2 = params["W1"], params["W2"]
    rng = np.random.default_rng(SEED)
    Xd = np.ascontiguousarray(X, dtype=dtype)
    a_full = (rng.standard_normal((B, sizes[-1])) / B).astype(dtype)

    def epoch(n):
        start = time.perf_counter()
        for s in range(0, n, B):
            Xb = Xd[s : s + B]
            a = a_full[: Xb.shape[0]]
            H = Xb @ W1
            H @ W2
            H.T @ a
            h = a @ W2.T
            Xb.T @ h
        return time.perf_counter() - start, float("nan")

    return epoch


def torch_row(graph, sizes, B, X, t, dtype):
    tr = ys.TorchTrainer(ys.import_torch(), ys.initial_params(sizes, SEED, dtype), X, t, B, LR, dtype=dtype,
                         graph=graph)
    rng = np.random.default_rng(SEED)

    def epoch(n):
        tr.sync()
        start = time.perf_counter()
        loss = tr.epoch(rng.permutation(X.shape[0])[:n], LR)  # synchronises
        tr.sync()
        return time.perf_counter() - start, loss / n

    return epoch


def jax_rows():
    """The JAX rows of the CPU table when JAX imports: the generic step (op by op) and the jit step
    (:mod:`nnarray.fast.jax_jit`), both in JAX's default 32-bit mode."""
    import importlib.util  # noqa: PLC0415

    return ["jax:generic", "jax:fast"] if importlib.util.find_spec("jax") is not None else []
# --------------------------------------------------------------------------- recipes: optimizer and dropout
#: The recipes people train, each against PyTorch's best CPU configuration of the same optimizer (fused where
#: torch offers it): the README's best recipe, its network with momentum, and the seed network.
RECIPES = {
    "adamw-dropout": {"hidden": 2048, "batch": 128, "dropout": 0.5,
                      "optimizer": ("AdamW", {"lr": 1e-3, "weight_decay": 0.05})},
    "momentum": {"hidden": 2048, "batch": 128, "dropout": 0.0, "optimizer": ("SGD", {"lr": 0.05, "momentum": 0.9})},
    "sgd": {"hidden": 100, "batch": 100, "dropout": 0.0, "optimizer": ("SGD", {"lr": 0.1})},
    # the other optimizers at the seed network's size, for the update engines' comparison (@HIDDENxBATCH)
    "adam": {"hidden": 100, "batch": 100, "dropout": 0.0, "optimizer": ("Adam", {"lr": 1e-3})},
    "rmsprop": {"hidden": 100, "batch": 100, "dropout": 0.0, "optimizer": ("RMSprop", {"lr": 1e-3})},
    "adagrad": {"hidden": 100, "batch": 100, "dropout": 0.0, "optimizer": ("Adagrad", {"lr": 1e-2})},
}


#: What ``--recipes all`` times: the recipes people train (the others serve the update engines' comparison).
TRAINED_RECIPES = ("adamw-dropout", "momentum", "sgd")


def parse_recipes(text):
    """``"adamw-dropout,sgd"``, ``"all"``, or items ``NAME@HIDDENxBATCH`` (the recipe's optimizer and dropout at
    another size, e.g. ``momentum@100x100``) -> config dicts with the recipe's optimizer and dropout."""
    items = list(TRAINED_RECIPES) if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    if not items:
        raise SystemExit(f"--recipes: expected names among {','.join(RECIPES)} or all, got {text!r}")
    return [_recipe(item) for item in items]


def _recipe(item):
    """One ``--recipes`` item as a config dict."""
    name, _, size = item.partition("@")
    if name not in RECIPES:
        raise SystemExit(f"--recipes: expected names among {','.join(RECIPES)} or all, got {item!r}")
    r = dict(RECIPES[name])
    if size:
        size_cfg = parse_configs(size)[0]
        r["hidden"], r["batch"] = size_cfg["hidden"], size_cfg["batch"]
    opt, kw = r["optimizer"]
    desc = f"{opt}({', '.join(f'{k}={v}' for k, v in kw.items())})"
    desc += f", dropout {r['dropout']}" if r["dropout"] else ""
    return {"name": item, "hidden": r["hidden"], "batch": r["batch"],
            "layers": f"{ys.N_IN}-{r['hidden']}-{ys.N_CLASSES}",
            "dropout": r["dropout"], "optimizer": [opt, kw], "recipe": desc}


def nnarray_recipe_row(spec, cfg, X, t, dtype):
    """As :func:`nnarray_row`, with the recipe's optimizer and dropout."""
    name, _, variant = spec.partition(":")
    try:
        be = nn.get_backend(name)
    except Exception as exc:  # noqa: BLE001 -- BackendUnavailableError, missing library
        raise ys.Unavailable(str(exc)) from exc
    sizes = [ys.N_IN, cfg["hidden"], ys.N_CLASSES]
    net = nn.MLP(sizes, backend=be, dtype=dtype, seed=SEED, dropout=cfg["dropout"])
    opt_name, kw = cfg["optimizer"]
    opt, rng = getattr(nn.optim, opt_name)(**kw), np.random.default_rng(SEED)
    Xd, td = be.asarray(X, dtype=net.dtype), be.asarray(t, dtype=be.index_dtype)
    _variant(variant)

    def epoch(n):
        Xn, tn = (Xd, td) if n == X.shape[0] else (Xd[:n, ...], td[:n])
        return _fit_epoch(net, opt, Xn, tn, cfg["batch"], rng, variant)

    return epoch


def torch_optimizer(torch, cfg):
    """``(factory, description)``: torch's optimizer for the recipe, fused when this torch offers it on the CPU
    (else foreach, the default multi-tensor form)."""
    name, kw = cfg["optimizer"]
    cls = getattr(torch.optim, name)
    probe = torch.zeros(2, requires_grad=True)
    probe.grad = torch.zeros(2)
    try:
        cls([probe], **kw, fused=True).step()
        flag = {"fused": True}
    except (RuntimeError, TypeError, ValueError):  # this torch has no fused CPU kernel for it
        flag = {"foreach": True}
    desc = f"torch.optim.{name}({', '.join(f'{k}={v}' for k, v in {**kw, **flag}.items())})"
    return (lambda params: cls(params, **kw, **flag)), desc


def torch_recipe_row(cfg, X, t, dtype):
    torch = ys.import_torch()
    factory, cfg["torch_optimizer"] = torch_optimizer(torch, cfg)
    lr = cfg["optimizer"][1]["lr"]
    tr = ys.TorchTrainer(torch, ys.initial_params([ys.N_IN, cfg["hidden"], ys.N_CLASSES], SEED, dtype), X, t,
                         cfg["batch"], lr, dtype=dtype, optimizer=factory, dropout=cfg["dropout"])
    rng = np.random.default_rng(SEED)

    def epoch(n):
        start = time.perf_counter()
        loss = tr.epoch(rng.permutation(X.shape[0])[:n], lr)  # synchronises
        return time.perf_counter() - start, loss / n

    return epoch


def make_recipe_rows(cfg, X, t, backends, yard, dtype):
    """{name: epoch function or reason}: nnarray on each backend and ``torch-eager`` with the recipe's optimizer."""
    rows = {}
    makers = {f"nnarray-{b.replace(':', '-')}": (lambda b=b: nnarray_recipe_row(b, cfg, X, t, dtype)) for b in backends}
    if "torch-eager" in yard:
        makers["torch-eager"] = lambda: torch_recipe_row(cfg, X, t, dtype)
    if "gemm-numpy" in yard:
        makers["gemm-numpy"] = lambda: gemm_row(None, [ys.N_IN, cfg["hidden"], ys.N_CLASSES], cfg["batch"], X, t, dtype)
    for name, make in makers.items():
        try:
            rows[name] = make()
        except ys.Unavailable as exc:
            rows[name] = str(exc)
        except Exception as exc:  # noqa: BLE001 -- one broken row must not stop the others
            rows[name] = f"failed to prepare: {type(exc).__name__}: {exc}"
    return rows


def make_rows(cfg, X, t, backends, yard, dtype):
    """{name: epoch function, or the reason it is not available}."""
    if "optimizer" in cfg:
        return make_recipe_rows(cfg, X, t, backends, yard, dtype)
    sizes, B = [ys.N_IN, cfg["hidden"], ys.N_CLASSES], cfg["batch"]
    makers = {f"nnarray-{b.replace(':', '-')}": (nnarray_row, b) for b in backends}
    makers.update({"plain-numpy": (plain_row, "numpy"), "cupy-plain": (plain_row, "cupy"),
                   "torch-eager": (torch_row, False), "torch-cudagraph": (torch_row, True),
                   "gemm-numpy": (gemm_row, None)})
    rows = {}
    for name, (make, arg) in makers.items():
        if name in YARDSTICKS and name not in yard:
            continue
        try:
            rows[name] = make(arg, sizes, B, X, t, dtype)
        except ys.Unavailable as exc:
            rows[name] = str(exc)
        except Exception as exc:  # noqa: BLE001 -- one broken row must not stop the others
            rows[name] = f"failed to prepare: {type(exc).__name__}: {exc}"
    return rows


def run_config(cfg, X, t, backends, yard, dtype, repeats, settle=SETTLE_SECONDS, log=print):
    """Warm up, then time every row round-robin; the config's result dict."""
    N, B = X.shape[0], cfg["batch"]
    results, active = {}, []
    for name, row in make_rows(cfg, X, t, backends, yard, dtype).items():
        if isinstance(row, str):
            results[name] = {"available": False, "reason": row}
            continue
        try:
            row(min(N, WARMUP_BATCHES * B + N % B))  # every batch shape a timed epoch uses
        except Exception as exc:  # noqa: BLE001
            results[name] = {"available": False, "reason": f"failed in warm-up: {type(exc).__name__}: {exc}"}
            continue
        results[name] = {"available": True, "samples_ms_per_epoch": []}
        active.append((name, row))
    for r in range(repeats):
        k = r % len(active) if active else 0  # rotate who goes first: every row takes every position
        for name, row in active[k:] + active[:k]:
            try:
                deadline = time.perf_counter() + settle
                while time.perf_counter() < deadline:
                    row(min(N, SETTLE_BATCHES * B))
                sec, loss = row(N)
            except Exception as exc:  # noqa: BLE001
                results[name] = {"available": False, "reason": f"failed: {type(exc).__name__}: {exc}"}
                active.remove((name, row))
                continue
            results[name]["samples_ms_per_epoch"].append(1000.0 * sec * EPOCH_SAMPLES / N)
            results[name]["last_train_loss"] = loss
        log(f"  [{cfg['name']}] repeat {r + 1}/{repeats} done")
    for res in results.values():
        if res.get("samples_ms_per_epoch"):
            res["median_ms_per_epoch"] = med = statistics.median(res["samples_ms_per_epoch"])
            res["samples_per_s"] = EPOCH_SAMPLES / (med / 1000.0)
    timed = {k: v["median_ms_per_epoch"] for k, v in results.items() if "median_ms_per_epoch" in v}
    ratios = {f"{a}/{y}": timed[a] / timed[y] for a in timed if a.startswith("nnarray-") for y in YARDSTICKS
              if y in timed}
    return {**cfg, "samples_timed_per_epoch": N, "scale_to_60000": EPOCH_SAMPLES / N,
            "loadavg_after": ys.loadavg(), "results": results, "ratios": ratios}


def parse_configs(text):
    """``"100x100,4096x1024"`` -> [{"name", "hidden", "batch", "layers"}]."""
    cfgs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            h, b = (int(v) for v in part.lower().split("x"))
            if h < 1 or b < 1:
                raise ValueError
        except ValueError:
            raise SystemExit(f"--configs: expected HIDDENxBATCH items such as 100x100, got {part!r}") from None
        cfgs.append({"name": f"{h}x{b}", "hidden": h, "batch": b, "layers": f"{ys.N_IN}-{h}-{ys.N_CLASSES}"})
    if not cfgs:
        raise SystemExit("--configs: no configuration given")
    return cfgs


def format_table(res):
    recipe = f", {res['recipe']}" if "recipe" in res else ", SGD lr 0.1"
    torch_opt = f"\n   torch-eager: {res['torch_optimizer']}" if "torch_optimizer" in res else ""
    lines = [f"\n== {res['layers']}, batch {res['batch']}{recipe}   (load average after: {res['loadavg_after']})"
             + torch_opt,
             f"{'impl':<24}{'ms/epoch':>11}{'samples/s':>13}{'loss*':>9}   all samples (ms)"]
    for name, r in res["results"].items():
        if "median_ms_per_epoch" not in r:
            lines.append(f"{name:<24}  not available ({r.get('reason')})")
            continue
        samples = ", ".join(f"{v:.1f}" for v in r["samples_ms_per_epoch"])
        lines.append(f"{name:<24}{r['median_ms_per_epoch']:11.1f}{r['samples_per_s']:13,.0f}"
                     f"{r['last_train_loss']:9.4f}   {samples}")
    lines += [f"ratio {key:<40}{v:8.3f}" for key, v in res["ratios"].items()]
    if "gemm_floor_ms_per_epoch" in res:
        lines.append("GEMM floor (the epoch's matrix products at the 1000^3 rate): "
                     f"{res['gemm_floor_ms_per_epoch']:.1f} ms")
    lines.append("* mean training loss of the last timed epoch: a sanity check that every row learns, not a comparison")
    return "\n".join(lines)


def gemm_rate(dtype, n=1000, repeats=5):
    """GFLOP/s of NumPy's matrix product at n³ (median of ``repeats``): the machine's GEMM rate now."""
    rng = np.random.default_rng(0)
    A, B = rng.random((n, n)).astype(dtype), rng.random((n, n)).astype(dtype)
    A @ B
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        A @ B
        times.append(time.perf_counter() - start)
    return 2.0 * n**3 / statistics.median(times) / 1e9


def epoch_gflop(cfg):
    """GFLOP of an epoch's matrix products (forward X·W1, H·W2; backward Hᵀ·a, a·W2ᵀ, Xᵀ·h) for 60 000 samples."""
    h = cfg["hidden"]
    return EPOCH_SAMPLES * 2.0 * (2 * ys.N_IN * h + 3 * h * ys.N_CLASSES) / 1e9


def jax_threads_note(backends):
    """A line for the header when JAX rows run with the thread variables set below the cores this process may
    use: XLA's CPU runtime reads none of them (one such run had 1.7 cores busy at ``OMP_NUM_THREADS=1``), so those
    rows would have more cores than the others; ``taskset`` gives every row the same. None otherwise."""
    if not any(b.split(":")[0] == "jax" for b in backends):
        return None
    limits = [int(v) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
              if (v := os.environ.get(k, "").strip()).isdigit()]
    if not limits or (cores := threads.cores_beyond_limit(min(limits))) is None:
        return None
    return (f"threads     note: JAX (XLA) ignores the thread variables: its rows use all {cores} cores this process "
            f"may run on, the others {min(limits)}; for the same cores everywhere run under taskset -c 0")


def header(args, env, data_desc):
    what = (f"recipes {args.recipes}" + (f" and seed network configs {args.configs}" if args.configs else "")
            if args.recipes else f"seed network, SGD lr={LR} (mean)")
    updates = ("one compiled Numba pass per parameter for every optimizer"
               if env["numpy_updates"] == "numba" else f"the functional rule ({fused.NUMBA_MISSING})")
    return "\n".join([
        f"nnarray benchmark: {what}, {args.dtype}, {EPOCH_SAMPLES} samples/epoch", *ys.describe(env),
        f"gemm        NumPy {args.dtype} matmul at 1000^3: {env['gemm_gflops_1000']:.0f} GFLOP/s "
        "(the GEMM floor's rate)",
        f"updates     NumPy optimizer updates: {updates}",
        f"data        {data_desc}",
        f"method      warm-up, then {args.repeats} timed epoch(s) per row, round-robin, each after "
        f">= {args.settle:g} s of untimed batches of the same row; median"
        + (f"; timed on {args.samples} samples/epoch, scaled" if args.samples != EPOCH_SAMPLES else ""),
    ])


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=None, help="HIDDENxBATCH list (default 100x100,1000x100; "
                   "with a GPU 100x100,1000x100,4096x1024)")
    p.add_argument("--recipes", default=None, help=f"time the recipes {','.join(RECIPES)} (or all) with their "
                   "optimizer and dropout against torch's fused optimizer, instead of plain-SGD --configs")
    p.add_argument("--repeats", type=int, default=6, help="timed epochs per row, rotating who goes first (median)")
    p.add_argument("--samples", type=int, default=EPOCH_SAMPLES, help="samples per timed epoch (scaled to 60000)")
    p.add_argument("--backends", default=None, help="nnarray rows: numpy,cupy,array_api_strict,torch,jax, each with "
                   "optional :generic or :fast (the step) or :functional (the optimizer's update without its fused "
                   "form) (default numpy, jax:generic,jax:fast, plus cupy,cupy:fast with a GPU)")
    p.add_argument("--yardsticks", default=",".join(YARDSTICKS), help=f"among {','.join(YARDSTICKS)} (default all)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--data", default="auto", choices=["auto", "fashion-mnist", "random"])
    p.add_argument("--settle", type=float, default=SETTLE_SECONDS, metavar="SECONDS",
                   help=f"untimed batches of the same row before each timed epoch (default {SETTLE_SECONDS}; 0 = off)")
    p.add_argument("--json", default=None, metavar="PATH", help="write all results as JSON to PATH")
    return p


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.repeats < 1 or args.samples < 1:
        p.error("--repeats, --samples: expected positive integers")
    yard = [y.strip() for y in args.yardsticks.split(",") if y.strip()]
    if set(yard) - set(YARDSTICKS):
        p.error(f"--yardsticks: expected names among {','.join(YARDSTICKS)}, got {args.yardsticks!r}")
    gpu = ys.gpu_present()
    if args.recipes:
        cfgs = parse_recipes(args.recipes) + (parse_configs(args.configs) if args.configs else [])
    else:
        cfgs = parse_configs(args.configs or ("100x100,1000x100" + (",4096x1024" if gpu else "")))
    backends = ([b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else
                ["numpy"] + jax_rows() + (["cupy", "cupy:fast"] if nn.cupy_available() else []))
    X, t, data_desc = load_data(args.data, args.samples)
    env = ys.environment()
    env["numpy_updates"] = fused.numpy_engine()
    env["gemm_gflops_1000"] = gemm_rate(args.dtype)
    print(header(args, env, data_desc), flush=True)
    if (note := jax_threads_note(backends)) is not None:
        print(note, flush=True)
        env["jax_threads_note"] = note
    results = []
    for cfg in cfgs:
        results.append(run_config(cfg, X, t, backends, yard, args.dtype, args.repeats, args.settle,
                                  log=lambda s: print(s, file=sys.stderr)))
        results[-1]["gemm_floor_ms_per_epoch"] = 1000.0 * epoch_gflop(cfg) / env["gemm_gflops_1000"]
        print(format_table(results[-1]), flush=True)
    report = {
        "date": env["date"], "environment": env,
        "settings": {"dtype": args.dtype, "lr": LR, "reduction": "mean", "repeats": args.repeats,
                     "samples_per_epoch_timed": args.samples, "epoch_samples": EPOCH_SAMPLES, "backends": backends,
                     "yardsticks": yard, "data": data_desc, "settle_seconds": args.settle,
                     "warmup": f"{WARMUP_BATCHES} batches plus the last batch's shape",
                     "argv": list(sys.argv[1:] if argv is None else argv)},
        "configs": results,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    main()
