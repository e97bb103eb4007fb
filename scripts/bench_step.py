#!/usr/bin/env python
"""Per-step time of a backend's fast path against its generic step, both in one process, alternating.

Two copies of the same training (same initial weights, optimizer, data and batch order) — one stepping with the
step :func:`nnarray.fit` would choose (the backend's fast path, :func:`nnarray.step.make_step`), one with the generic
:class:`nnarray.step.TrainStep` — take turns: ``--blocks`` blocks of ``--batches`` batches each, who goes first
alternating. Each block's time per step is a sample; the report gives the medians and the median of the per-block
ratios fast / generic (< 1: the fast path is faster). On a noisy shared machine this paired comparison moves far
less than two epochs timed one after the other (docs/speed.md quotes its figures). The dropout masks are drawn
per batch by each step from its own generator, the same for both.

Usage::

    python scripts/bench_step.py --backend torch --recipe momentum
    python scripts/bench_step.py --backend numpy --recipe adamw-dropout --blocks 30 --json step.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import bench
import numpy as np

import nnarray as nn
from nnarray import functions as F
from nnarray.step import TrainStep, make_step


def make_pair(backend, cfg, X, t, dtype):
    """``(fast step, generic step)`` for two identical trainings of recipe ``cfg`` on ``backend``; the fast one is
    what ``fit`` would choose (ValueError naming the reason when the backend has no fast path for it)."""
    steps = []
    for fast in (True, False):
        be = nn.get_backend(backend)
        net = nn.MLP([X.shape[1], cfg["hidden"], int(t.max()) + 1], backend=be, dtype=dtype, seed=bench.SEED,
                     dropout=cfg["dropout"])
        opt_name, kw = cfg["optimizer"]
        opt = getattr(nn.optim, opt_name)(**kw)
        Xd = be.asarray(X, dtype=net.dtype)
        Td = F.one_hot(net.xp, be.asarray(t, dtype=be.index_dtype), net.n_classes, net.dtype)
        step = make_step(net, opt, Xd, Td, "mean", fast=None if fast else False)
        if fast and type(step) is TrainStep:
            raise ValueError(f"no fast path runs this training on {backend!r}")
        steps.append(step)
    return steps[0], steps[1]


def compare(fast, generic, order, batch, blocks, per_block, warmup=3):
    """Alternate ``blocks`` blocks of ``per_block`` batches (rows of ``order``, a host permutation) between the two
    steps after ``warmup`` untimed blocks each; ``{"fast_us", "generic_us", "ratio", "samples"}``."""
    be = fast.net.backend
    idx = be.asarray(order, dtype=be.index_dtype)
    starts = list(range(0, len(order) - batch + 1, batch))  # full batches only: one shape per step

    def block(step, k):
        t0 = time.perf_counter()
        for i in range(per_block):
            s = starts[(k * per_block + i) % len(starts)]
            step(idx[s:s + batch])
        float(step.loss_sum)  # wait for a device that computes asynchronously
        return (time.perf_counter() - t0) / per_block

    for k in range(warmup):
        block(generic, k)
        block(fast, k)
    samples = []
    for k in range(blocks):
        pair = {}
        for name, step in (("fast", fast), ("generic", generic)) if k % 2 else (("generic", generic), ("fast", fast)):
            pair[name] = block(step, k)
        samples.append(pair)
    return {
        "fast_us": 1e6 * statistics.median(p["fast"] for p in samples),
        "generic_us": 1e6 * statistics.median(p["generic"] for p in samples),
        "ratio": statistics.median(p["fast"] / p["generic"] for p in samples),
        "samples": samples,
    }


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="numpy", help="the backend whose fast path is compared (default numpy)")
    p.add_argument("--recipe", default="momentum", help=f"one of {','.join(bench.RECIPES)}, or NAME@HIDDENxBATCH "
                   "(default momentum)")
    p.add_argument("--blocks", type=int, default=30, help="timed blocks per step (default 30)")
    p.add_argument("--batches", type=int, default=20, help="batches per block (default 20)")
    p.add_argument("--samples", type=int, default=12800, help="training rows the batches are drawn from")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--data", default="auto", choices=["auto", "fashion-mnist", "random"])
    p.add_argument("--json", default=None, metavar="PATH", help="write the result as JSON to PATH")
    return p


def main(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if min(args.blocks, args.batches, args.samples) < 1:
        p.error("--blocks, --batches, --samples: expected positive integers")
    cfg = bench.parse_recipes(args.recipe)[0]
    X, t, data_desc = bench.load_data(args.data, args.samples)
    if args.samples < cfg["batch"]:
        p.error(f"--samples: at least one batch of {cfg['batch']} rows, got {args.samples}")
    try:
        fast, generic = make_pair(args.backend, cfg, X, t, args.dtype)
    except (ValueError, nn.BackendUnavailableError) as exc:
        p.error(f"--backend {args.backend}: {exc}")
    order = np.random.default_rng(bench.SEED).permutation(X.shape[0])
    print(f"{cfg['layers']}, batch {cfg['batch']}, {cfg['recipe']}, {args.dtype}, {data_desc}")
    print(f"fast:    {type(fast).__name__}: {fast.description}")
    print(f"generic: {generic.description}", flush=True)
    result = compare(fast, generic, order, cfg["batch"], args.blocks, args.batches)
    print(f"per step, medians of {args.blocks} blocks of {args.batches} batches, alternating: fast "
          f"{result['fast_us']:.0f} us, generic {result['generic_us']:.0f} us; fast / generic {result['ratio']:.3f}")
    report = {"backend": args.backend, "recipe": cfg, "dtype": args.dtype, "data": data_desc,
              "fast_step": type(fast).__name__, **result, "argv": list(sys.argv[1:] if argv is None else argv)}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
