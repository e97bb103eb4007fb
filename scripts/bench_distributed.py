#!/usr/bin/env python
"""Data-parallel scaling on this machine: one process against ``mpiexec -n 2``, one BLAS thread each.

What is measured
----------------
Whole epochs of :func:`nnarray.fit` on the CPU (NumPy, float32 by default) of a 784-H-10 network
(H = 1000 by default) with a large global batch (4000 by default) on MNIST-shaped random data
(``--samples`` rows, 24 000 by default; the same rows on every rank, drawn from a fixed seed).

* **1 rank**: a plain process, ``fit(..., comm=None)``: the single-process baseline with no MPI at all.
* **P ranks**: ``mpiexec -n P``, ``fit(..., comm=MPIComm())``: every rank computes its contiguous share of
  each global batch, then one all-reduce of the packed gradients (parameter count × dtype size bytes)
  per step.

Every process runs with ``OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=MKL_NUM_THREADS=1``, so P ranks use P
cores and the comparison is of processes, not of BLAS threading. Each run does one untimed warm-up epoch
and reports the median of ``--epochs`` timed epochs (``History.seconds``, which every rank shares after
the epoch's all-reduce of metrics). Printed: seconds per epoch, samples/s, the speed-up t₁ / t_P and the
parallel efficiency speed-up / P. The machines this was written on are shared (2 cores, several users):
expect a few per cent of noise.

Usage::

    python scripts/bench_distributed.py                      # 784-1000-10, global batch 4000, 1 vs 2 ranks
    python scripts/bench_distributed.py --hidden 100 --batch 100 --json scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker(args):
    import numpy as np

    sys.path.insert(0, str(ROOT))
    import nnarray as nn
    from nnarray.distributed import MPIComm

    comm = MPIComm() if args.distributed else None
    rng = np.random.default_rng(1)
    X = rng.random((args.samples, 784), dtype=np.float32)
    t = rng.integers(0, 10, size=args.samples)
    if args.dtype == "float64":
        X = X.astype(np.float64)
    net = nn.MLP([784, args.hidden, 10], backend="numpy", dtype=args.dtype, seed=0)
    opt = nn.SGD(lr=0.1)
    hist = nn.fit(net, opt, X, t, epochs=args.epochs + 1, batch_size=args.batch, seed=0,
                  options=nn.FitOptions(comm=comm))
    secs = hist.seconds[1:]
    if comm is None or comm.rank == 0:
        n_params = sum(int(np.prod(p.shape)) for p in net.params.values())
        print(
            "RESULT "
            + json.dumps(
                {
                    "ranks": 1 if comm is None else comm.size,
                    "median_s": statistics.median(secs),
                    "seconds": secs,
                    "params": n_params,
                    "final_loss": hist.train_loss[-1],
                }
            ),
            flush=True,
        )


def find_mpiexec():
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def run(cmd, env):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=1000)
    p.add_argument("--batch", type=int, default=4000, help="global batch size (default 4000)")
    p.add_argument("--samples", type=int, default=24000)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up epoch")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--ranks", type=int, default=2, help="P for the mpiexec run (default 2)")
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)

    mpiexec = find_mpiexec()
    if mpiexec is None:
        sys.exit('no mpiexec found: pip install "nnarray[mpi]"')
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    common = [
        __file__, "--worker", "--hidden", str(args.hidden), "--batch", str(args.batch),
        "--samples", str(args.samples), "--epochs", str(args.epochs), "--dtype", args.dtype,
    ]  # fmt: skip
    one = run([sys.executable, *common], env)
    many = run([mpiexec, "-n", str(args.ranks), sys.executable, *common, "--distributed"], env)
    itemsize = 4 if args.dtype == "float32" else 8
    steps = -(-args.samples // args.batch)
    speedup = one["median_s"] / many["median_s"]
    report = {
        "network": f"784-{args.hidden}-10",
        "dtype": args.dtype,
        "global_batch": args.batch,
        "samples_per_epoch": args.samples,
        "steps_per_epoch": steps,
        "bytes_allreduced_per_step": one["params"] * itemsize,
        "one_rank_s": one["median_s"],
        f"{args.ranks}_ranks_s": many["median_s"],
        "speedup": speedup,
        "efficiency": speedup / args.ranks,
        "final_loss_1": one["final_loss"],
        f"final_loss_{args.ranks}": many["final_loss"],
    }
    print(
        f"784-{args.hidden}-10, {args.dtype}, global batch {args.batch}, {args.samples} samples/epoch "
        f"({steps} steps), 1 BLAS thread per process; "
        f"all-reduce {report['bytes_allreduced_per_step'] / 1e6:.2f} MB/step"
    )
    print(f"  1 rank : {one['median_s']:.3f} s/epoch  ({args.samples / one['median_s']:,.0f} samples/s)  "
          f"epochs {one['seconds']}")
    print(
        f"  {args.ranks} ranks: {many['median_s']:.3f} s/epoch  ({args.samples / many['median_s']:,.0f} samples/s)"
        f"  epochs {many['seconds']}"
    )
    print(f"  speed-up {speedup:.2f}x, parallel efficiency {100 * speedup / args.ranks:.0f} %")
    print(f"  final training loss: 1 rank {one['final_loss']:.6f}, {args.ranks} ranks {many['final_loss']:.6f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
