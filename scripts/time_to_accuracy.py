#!/usr/bin/env python
"""Time to accuracy: seconds from start to a target test accuracy on Fashion-MNIST, nnarray against PyTorch.

784-H-10 (one hidden ReLU layer, softmax + cross-entropy, mean) trained by SGD with momentum from nn.MLP's
initial weights on the same mini-batches (one ``np.random.default_rng(seed).permutation`` per epoch) until the
test accuracy (all 10 000 test images, after every epoch) reaches ``--target`` (0.88) or ``--max-epochs`` (20)
have run; epoch e uses lr·gamma^(e−1). Rows (``--impls``), one after the other in the same process:

* ``nnarray`` (its automatic choice of path), ``nnarray:generic`` (``fit(fast=False)``), ``nnarray:fast``
  (``fit(fast=True)``) on ``--backend``: ONE :func:`nnarray.fit` call with ``validation=`` and
  ``schedule=nn.schedules.Exponential(lr, gamma)``; its callback records the epoch and raises
  ``nn.StopTraining`` at the target;
* ``torch-eager`` and ``torch-cudagraph`` (CUDA only): :class:`yardsticks.TorchTrainer`, ``param_group["lr"]``
  set per epoch from the same schedule object (the graph row recaptures its graphs when lr changes, a few ms
  inside its clock).

The clock starts just before the network is created: it includes the initial weights, moving the data to the
device, every permutation, training, evaluation, graph warm-up and captures. Before it, every row runs once on
a small subset (``--no-warmup`` skips this): library loading, the CUDA context and CuPy's kernel compilation
stay outside the clock, as they do for a long-running program.

One difference remains by design (each library's own SGD): nnarray keeps v <- μv − ηg, W <- W + v, torch keeps
buf <- μ·buf + g, W <- W − η·buf; identical at constant η, while after a drop of η torch's carried-over velocity
is scaled too (the difference fades as μ^k). Near the target the test accuracy moves by ~±0.01 per epoch, so
the epoch that first crosses it can differ by one between runs that differ only in rounding; seconds/epoch is
the steadier comparison.

Usage::

    python scripts/time_to_accuracy.py                         # CPU: nnarray (numpy) vs torch eager
    python scripts/time_to_accuracy.py --backend cupy --impls nnarray:generic,nnarray:fast,torch-eager,torch-cudagraph
    python scripts/time_to_accuracy.py --subset 3000 --hidden 32 --max-epochs 3 --target 0.5   # quick
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yardsticks as ys

import nnarray as nn

IMPLS = ("nnarray", "nnarray:generic", "nnarray:fast", "torch-eager", "torch-cudagraph")
YARDSTICKS = ("torch-eager", "torch-cudagraph")


def run(name, X, t, Xt, tt, s):
    """Train one row; returns (per-epoch records, info). The clock starts before the network exists."""
    records, sizes = [], [ys.N_IN, s["hidden"], ys.N_CLASSES]
    schedule = nn.schedules.Exponential(s["lr"], s["gamma"])  # η of epoch e, for both libraries

    def record(epoch, epoch_seconds, acc, loss, lr):
        records.append({"epoch": int(epoch), "seconds": time.perf_counter() - t0, "epoch_seconds": float(epoch_seconds),
                        "test_accuracy": float(acc), "train_loss": float(loss), "lr": float(lr)})
        return acc >= s["target"]

    if name.startswith("nnarray"):
        try:
            be = nn.get_backend(s["backend"])
        except Exception as exc:  # noqa: BLE001 -- BackendUnavailableError, missing library
            raise ys.Unavailable(f"backend {s['backend']!r}: {exc}") from exc
        fast = {"nnarray": None, "nnarray:generic": False, "nnarray:fast": True}[name]
        t0 = time.perf_counter()
        net = nn.MLP(sizes, backend=be, dtype=s["dtype"], seed=s["seed"])
        opt = nn.SGD(s["lr"], momentum=s["momentum"])

        def callback(r):
            if record(r["epoch"], r["seconds"], r["val_accuracy"], r["train_loss"], r["lr"]):
                raise nn.StopTraining

        nn.fit(net, opt, X, t, epochs=s["max_epochs"], batch_size=s["batch_size"], seed=s["seed"],
               validation=(Xt, tt), callbacks=callback, schedule=schedule, options=nn.FitOptions(fast=fast))
        if be.name == "cupy":
            device = f"cuda:{getattr(be.device, 'id', 0)}"
        else:
            device = str(be.device) if be.name == "torch" else "cpu"
        return records, {"backend": be.name, "device": device}

    torch, rng = ys.import_torch(), np.random.default_rng(s["seed"])  # what nnarray.fit draws from
    t0 = time.perf_counter()
    tr = ys.TorchTrainer(torch, ys.initial_params(sizes, s["seed"], s["dtype"]), X, t, s["batch_size"], schedule(1),
                         momentum=s["momentum"], dtype=s["dtype"], graph=name == "torch-cudagraph")
    Xv, tv = tr.tensor(Xt), tr.tensor(tt, torch.int64)
    for epoch in range(1, s["max_epochs"] + 1):
        e0, lr = time.perf_counter(), schedule(epoch)
        loss = tr.epoch(rng.permutation(X.shape[0]), lr) / X.shape[0]
        acc = tr.accuracy(Xv, tv)
        tr.sync()
        if record(epoch, time.perf_counter() - e0, acc, loss, lr):
            break
    return records, {"device": tr.device.type} | ({"graph_captures": tr.captures} if tr.graph else {})


def summarize(epochs, target, max_epochs):
    """A row of the table from the per-epoch records."""
    accs = [e["test_accuracy"] for e in epochs]
    hit = next((e for e in epochs if e["test_accuracy"] >= target), None)
    return {
        "reached": hit is not None, "epochs_to_target": hit and hit["epoch"],
        "seconds_to_target": hit and hit["seconds"],
        "epochs_run": len(epochs), "max_epochs": max_epochs, "seconds_total": epochs[-1]["seconds"],
        "setup_seconds": epochs[0]["seconds"] - epochs[0]["epoch_seconds"],
        "seconds_per_epoch": statistics.median(e["epoch_seconds"] for e in epochs),
        "final_accuracy": accs[-1], "best_accuracy": max(accs), "per_epoch": epochs,
    }


def format_table(report):
    s = report["settings"]
    lines = ["", f"{'impl':<30}{'device':<8}{'epochs':>7}{'s to target':>13}{'s/epoch':>9}{'setup s':>9}"
             f"{'final acc':>11}{'best acc':>10}"]
    for name, r in report["results"].items():
        label = name + (f" ({r['backend']})" if r.get("backend") else "")
        if not r.get("available"):
            lines.append(f"{label:<30}not available ({r.get('reason')})")
            continue
        ep, sec = (f"{r['epochs_to_target']:>7d}", f"{r['seconds_to_target']:>13.2f}") if r["reached"] else (
            f"{'-':>7}", f"{'-':>13}")
        lines.append(f"{label:<30}{r['device']:<8}{ep}{sec}{r['seconds_per_epoch']:>9.2f}{r['setup_seconds']:>9.2f}"
                     f"{r['final_accuracy']:>11.4f}{r['best_accuracy']:>10.4f}")
        if not r["reached"]:
            lines.append(f"{'':<30}not reached in {r['epochs_run']} epochs, best acc {r['best_accuracy']:.4f}")
        lines.append(f"{'':<30}test acc by epoch: " + " ".join(f"{e['test_accuracy']:.4f}" for e in r["per_epoch"]))
    for key, v in report["ratios"].items():
        stt = f"{v['seconds_to_target']:.3f}" if v["seconds_to_target"] is not None else f"n/a ({v['note']})"
        lines.append(f"ratio {key:<34} seconds to target {stt}   seconds/epoch {v['seconds_per_epoch']:.3f}")
    lines.append(f"target {s['target']}; s/epoch = median of (training + test evaluation) per epoch; setup s = time "
                 "from start to the first epoch (weights, data to device, graph warm-up)")
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=512, help="hidden units (default 512)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.05, help="learning rate of epoch 1 (default 0.05)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--gamma", type=float, default=0.9, help="lr is multiplied by gamma after every epoch")
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--target", type=float, default=0.88, help="test accuracy to reach (default 0.88)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--subset", type=int, default=None, metavar="N", help="train on the first N samples only")
    p.add_argument("--impls", default=None, help=f"comma list among {', '.join(IMPLS)} (default: nnarray,torch-eager, "
                   "plus torch-cudagraph when CUDA is available)")
    p.add_argument("--backend", default="auto", help="nnarray backend (default auto: cupy with a GPU, else numpy)")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="no untimed run on a subset first (then the clocks include kernel compilation, lazy imports)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the report (with per-epoch records) to PATH")
    return p


def _check_args(p, a):
    for name in ("hidden", "batch_size", "max_epochs"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected a positive integer")
    if a.subset is not None and a.subset < 1:
        p.error("--subset: expected a positive integer")
    if not (a.lr > 0 and math.isfinite(a.lr)) or not (a.gamma > 0 and math.isfinite(a.gamma)):
        p.error("--lr, --gamma: expected positive numbers")
    if not 0.0 <= a.momentum < 1.0:
        p.error("--momentum: expected a value in [0, 1)")
    if not 0.0 < a.target <= 1.0:
        p.error("--target: expected an accuracy in (0, 1]")
    default = ["nnarray", "torch-eager"] + (["torch-cudagraph"] if ys.gpu_present() else [])
    impls = [i.strip() for i in a.impls.split(",") if i.strip()] if a.impls else default
    if not impls or set(impls) - set(IMPLS):
        p.error(f"--impls: expected a comma list among {', '.join(IMPLS)}, got {a.impls!r}")
    return list(dict.fromkeys(impls))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    impls = _check_args(parser, args)
    (X, t), (Xt, tt) = nn.datasets.load_fashion_mnist(download=False)
    X, t = (X[: args.subset], t[: args.subset]) if args.subset else (X, t)
    s = {k: getattr(args, k) for k in ("hidden", "batch_size", "lr", "momentum", "gamma", "max_epochs", "target",
                                       "seed", "dtype", "subset", "backend", "warmup")}
    s.update(impls=impls, n_train=int(X.shape[0]), n_test=int(Xt.shape[0]),
             data=f"Fashion-MNIST, {X.shape[0]} training samples" + (" (subset)" if args.subset else "")
             + f", {Xt.shape[0]} test samples", lr_schedule="lr * gamma**(epoch-1) in epoch 1, 2, ...",
             loss="cross-entropy, mean over the batch", argv=list(sys.argv[1:] if argv is None else argv))
    env = ys.environment()
    print("\n".join([f"time to accuracy: Fashion-MNIST test accuracy >= {s['target']}, 784-{s['hidden']}-10, "
                     f"{s['dtype']}", *ys.describe(env), f"data        {s['data']}",
                     f"settings    batch {s['batch_size']}, SGD lr {s['lr']} x {s['gamma']}/epoch, momentum "
                     f"{s['momentum']}, max {s['max_epochs']} epochs, seed {s['seed']}, nnarray backend {s['backend']}",
                     "clock       from network creation (data to device included) to the end of the first epoch whose "
                     "test accuracy reached the target; " + ("after an untimed warm-up run on a subset"
                                                            if args.warmup else "no warm-up")]), flush=True)
    results = {}
    for name in impls:
        print(f"  running {name} ...", file=sys.stderr, flush=True)
        try:
            if args.warmup:  # every batch shape of the real run (full batches, the last partial one)
                m = min(X.shape[0], 2 * args.batch_size + X.shape[0] % args.batch_size)
                run(name, X[:m], t[:m], Xt, tt, {**s, "max_epochs": 1})
            gc.collect()
            epochs, info = run(name, X, t, Xt, tt, s)
        except ys.Unavailable as exc:
            results[name] = {"available": False, "reason": str(exc)}
            continue
        except Exception as exc:  # noqa: BLE001 -- one failing row must not stop the others
            results[name] = {"available": False, "reason": f"failed: {type(exc).__name__}: {exc}"}
            continue
        results[name] = {"available": True, **info, **summarize(epochs, args.target, args.max_epochs)}

    ratios = {}
    for a, ra in results.items():
        for y in YARDSTICKS:
            ry = results.get(y, {})
            if not (a.startswith("nnarray") and ra.get("available") and ry.get("available")):
                continue
            both = ra["reached"] and ry["reached"]
            ratios[f"{a}/{y}"] = {
                "seconds_to_target": ra["seconds_to_target"] / ry["seconds_to_target"] if both else None,
                "seconds_per_epoch": ra["seconds_per_epoch"] / ry["seconds_per_epoch"],
                "note": "both reached the target" if both else "target not reached by "
                + " and ".join(n for n, r in ((a, ra), (y, ry)) if not r["reached"]),
            }
    report = {"date": env["date"], "environment": env, "settings": s, "results": results, "ratios": ratios,
              "loadavg_after": ys.loadavg()}
    print(format_table(report), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    main()
