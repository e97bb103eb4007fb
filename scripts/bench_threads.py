"""Epoch time against CPU threads on a busy machine: NumPy's default BLAS threads, one thread, the idle-core
default of :func:`nnarray.threads.choose_threads`, and PyTorch's default and one thread, each with 0, 1 and 2
busy background processes (CPU burners this script starts, bounds in time, and stops).

    .venv/bin/python scripts/bench_threads.py [--subset 20000] [--epochs 2] [--burners 0 1 2]

Each case runs in a fresh process (so the thread pools start under the load, as a training command would) and
prints one line; a Markdown table of the median epoch seconds follows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = [  # (label, backend, threads: None = the library's default, "auto" = choose_threads)
    ("numpy, BLAS default", "numpy", None),
    ("numpy, 1 thread", "numpy", 1),
    ("numpy, idle-core default", "numpy", "auto"),
    ("torch, default", "torch", None),
    ("torch, 1 thread", "torch", 1),
    ("torch, idle-core default", "torch", "auto"),
]

CHILD = r"""
import json, sys, time, contextlib
import numpy as np
import nnarray as nn
from nnarray.threads import choose_threads, limit_threads
backend, threads, subset, epochs = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
chosen = None
if threads == "auto":
    chosen = choose_threads()
    threads = chosen["threads"]
if backend == "torch":
    import torch
(X, t), _ = nn.datasets.load("fashion-mnist", download=False)
X, t = X[:subset], t[:subset]
ctx = limit_threads(threads)[0] if threads else contextlib.nullcontext()
with ctx:
    net = nn.MLP([784, 512, 10], backend=backend, seed=0)
    h = nn.fit(net, nn.SGD(0.05, momentum=0.9), X, t, epochs=epochs, batch_size=100)
print(json.dumps({"seconds": h.seconds, "chosen": chosen}))
"""


def burner(seconds):
    """A process spinning one core for at most ``seconds``."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def run_case(backend, threads, subset, epochs):
    out = subprocess.run([sys.executable, "-c", CHILD, backend, json.dumps(threads), str(subset), str(epochs)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subset", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--burners", type=int, nargs="+", default=[0, 1, 2])
    args = p.parse_args()
    rows = {}
    for k in args.burners:
        procs = [burner(900) for _ in range(k)]
        try:
            time.sleep(1.0 if k else 0)
            for label, backend, threads in CASES:
                r = run_case(backend, threads, args.subset, args.epochs)
                med = statistics.median(r["seconds"])
                extra = f" (chose {r['chosen']['threads']}: {r['chosen']['why']})" if r["chosen"] else ""
                print(f"{k} busy, {label}: epochs {[round(s, 2) for s in r['seconds']]} s, median {med:.2f} s{extra}, "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
                rows.setdefault(label, {})[k] = (med, r["chosen"])
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
    print(f"\n| {args.subset} images per epoch | " + " | ".join(f"{k} busy" for k in args.burners) + " |")
    print("|---|" + "---|" * len(args.burners))
    for label, by_k in rows.items():
        cells = [f"{by_k[k][0]:.2f} s" + (f" ({by_k[k][1]['threads']} thr)" if by_k[k][1] else "")
                 for k in args.burners]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
