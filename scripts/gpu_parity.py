#!/usr/bin/env python
"""NumPy against every other backend of this machine: the same seeded training on each, one parity report.

``--mode gpu`` (ci/gpu.sh on a CUDA machine): CuPy, PyTorch on CUDA and JAX on CUDA (when nnarray has a
``"jax"`` backend) against NumPy on the host. ``--mode cpu``: PyTorch and JAX on the CPU against NumPy — the
same comparison, so that it runs (and is tested) without a GPU; there array-api-strict too, always at hand.
A backend that cannot run here is listed with the reason and not compared.

Every backend starts from the same initial weights (drawn on the host) and sees the same batches (the
epoch permutations are drawn on the host), so each must reproduce NumPy's numbers up to the order of
floating-point additions. The tolerances are the Array API guide's (``|got − ref| ≤ atol + rtol·|ref|``,
``atol = k·max|ref|``):

* float64, ``--steps`` (300) SGD steps with momentum 0.9 and validation: every parameter and every epoch's
  training and validation loss to rtol 1e-10 (k = 1e-10); accuracies equal;
* float32, one forward/backward on a batch: the output-layer values A and every gradient ΔW, ΔB to rtol
  1e-4 (k = 1e-5);
* float32, 100 SGD steps: parameters and losses to rtol 1e-3 (k = 1e-4; a ReLU unit at 0 may flip between
  summation orders); accuracies within 1/N.

TF32 (float32 matrix products with ~10 mantissa bits) breaks the float32 tolerances: the script refuses
``CUPY_TF32``, sets PyTorch's FP32 precision to IEEE and JAX's default matmul precision to "highest".

Usage::

    python scripts/gpu_parity.py --mode gpu --json parity.json      # on a CUDA machine
    python scripts/gpu_parity.py --mode cpu --sizes 8,16,3          # anywhere

Exit status 0 when every compared backend is within its tolerances, 1 when one is not, 2 when no backend
could be compared (in GPU mode: no GPU backend runs here).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's nnarray, also without installing

import nnarray as nn  # noqa: E402

F64 = {"rtol": 1e-10, "k": 1e-10}
F32_STEP = {"rtol": 1e-4, "k": 1e-5}
F32_RUN = {"rtol": 1e-3, "k": 1e-4}
F32_STEPS = 100


class Unavailable(Exception):
    """A backend that cannot run here; the message says why."""


# ----------------------------------------------------------------------------------------- backends
def _torch(mode):
    if importlib.util.find_spec("torch") is None:
        raise Unavailable("torch is not installed")
    import yardsticks  # noqa: PLC0415 -- scripts/ is sys.path[0]: IEEE FP32 precision, no TF32

    torch = yardsticks.import_torch()
    be = nn.get_backend("torch")
    if mode == "gpu":
        if not torch.cuda.is_available():
            raise Unavailable("torch sees no CUDA device")
        return dataclasses.replace(be, device=torch.device("cuda"))
    return dataclasses.replace(be, device=torch.device("cpu"))


def _jax(mode):
    if "jax" not in nn.backend.BACKEND_NAMES:
        raise Unavailable("this nnarray has no 'jax' backend (nnarray.get_backend('jax') does not exist)")
    if importlib.util.find_spec("jax") is None:
        raise Unavailable("jax is not installed")
    import jax  # noqa: PLC0415

    jax.config.update("jax_default_matmul_precision", "highest")  # no TF32 in float32 products
    jax.config.update("jax_enable_x64", True)  # the float64 runs (nnarray never turns JAX's 64-bit mode on itself)
    be = nn.get_backend("jax")
    if mode == "gpu":
        if jax.default_backend() != "gpu":
            raise Unavailable(f"JAX's default backend is {jax.default_backend()!r}, not a GPU")
        return dataclasses.replace(be, device=jax.devices()[0])
    return dataclasses.replace(be, device=jax.devices("cpu")[0])


def _strict(mode):
    if importlib.util.find_spec("array_api_strict") is None:
        raise Unavailable("array-api-strict is not installed")
    return nn.get_backend("array_api_strict")


def _cupy(mode):
    if not nn.cupy_available():
        raise Unavailable("CuPy is not installed or sees no CUDA device")
    return nn.get_backend("cupy")


def candidates(mode):
    """``[(label, Backend or None, why not)]``: the backends compared with NumPy in ``mode``."""
    makers = {"gpu": [("cupy", _cupy), ("torch-cuda", _torch), ("jax-cuda", _jax)],
              "cpu": [("strict", _strict), ("torch-cpu", _torch), ("jax-cpu", _jax)]}[mode]
    out = []
    for label, make in makers:
        try:
            out.append((label, make(mode), None))
        except Unavailable as exc:
            out.append((label, None, str(exc)))
    return out


# ----------------------------------------------------------------------------------------- the runs
def problem(sizes, n, seed=1):
    """Gaussian blobs for a ``sizes`` net: ``(X, t), (Xv, tv)`` on the host, float64, n + n//4 rows."""
    rng = np.random.default_rng(seed)
    C, n_in = sizes[-1], sizes[0]
    centres = rng.normal(scale=0.8, size=(C, n_in))
    t = rng.integers(0, C, size=n + n // 4)
    X = centres[t] + rng.normal(size=(t.shape[0], n_in))
    return (X[:n], t[:n]), (X[n:], t[n:])


def train(be, dtype, sizes, data, steps, batch):
    """``steps`` SGD steps (momentum 0.9) of a ``sizes`` net on ``be``: host parameters and the History."""
    (X, t), val = data
    per_epoch = -(-X.shape[0] // batch)
    if steps % per_epoch:
        raise ValueError(f"steps: expected a multiple of the {per_epoch} batches of an epoch, got {steps}")
    net = nn.MLP(sizes, backend=be, dtype=dtype, seed=7)
    hist = nn.fit(net, nn.SGD(0.05, momentum=0.9), X, t, epochs=steps // per_epoch, batch_size=batch, seed=11,
                  validation=val, options=nn.FitOptions(fast=False))
    return {k: np.asarray(nn.to_numpy(v)) for k, v in net.params.items()}, hist


def one_step(be, sizes, data, batch):
    """Float32 output-layer values A and gradients of one batch on ``be``, on the host."""
    (X, t), _ = data
    net = nn.MLP(sizes, backend=be, dtype="float32", seed=7)
    A, _ = net.forward(be.asarray(X[:batch], dtype=net.dtype))
    grads = net.gradient(X[:batch], t[:batch])
    return {"A": nn.to_numpy(A), **{f"d{k}": nn.to_numpy(v) for k, v in grads.items()}}


def worst(got, ref, tol):
    """Largest ``|got − ref| / (atol + rtol·|ref|)`` over the arrays of two dicts (≤ 1: within ``tol``)."""
    out = 0.0
    for k, r in ref.items():
        r = np.asarray(r, dtype=np.float64)
        g = np.asarray(got[k], dtype=np.float64)
        if g.shape != r.shape:
            return float("inf")
        atol = tol["k"] * max(float(np.max(np.abs(r))), 1e-30)
        out = max(out, float(np.max(np.abs(g - r) / (atol + tol["rtol"] * np.abs(r)))))
    return out


def compare_runs(got, ref, tol, n_val, exact_accuracy):
    """The figures of one run against the reference: ``(ratios, accuracy agreement, dtype of the result)``."""
    (gp, gh), (rp, rh) = got, ref
    losses = {"train_loss": gh.train_loss, "val_loss": gh.val_loss}
    ref_losses = {"train_loss": rh.train_loss, "val_loss": rh.val_loss}
    ratios = {"params": worst(gp, rp, tol), "losses": worst(losses, ref_losses, tol)}
    if exact_accuracy:
        acc_ok = gh.train_accuracy == rh.train_accuracy and gh.val_accuracy == rh.val_accuracy
    else:  # float32: within one validation row
        acc_ok = bool(np.all(np.abs(np.subtract(gh.val_accuracy, rh.val_accuracy)) <= 1.0 / n_val + 1e-12))
    return ratios, acc_ok, str(next(iter(gp.values())).dtype)


def normwise(got, ref):
    """``max|got − ref| / max|ref|`` over the arrays of two dicts (the guide's figure of a comparison)."""
    return max(float(np.max(np.abs(np.asarray(got[k], dtype=np.float64) - r)) / max(float(np.max(np.abs(r))), 1e-30))
               for k, r in ref.items())


def check_backend(be, refs, args, data):
    """Every check of one backend against NumPy's numbers: ``{check: {ok, ratios, ...}}``; ratios ≤ 1 pass."""
    n_val = data[1][0].shape[0]
    checks = {}
    for dtype, steps, tol in (("float64", args.steps, F64), ("float32", F32_STEPS, F32_RUN)):
        got = train(be, dtype, args.sizes, data, steps, args.batch)
        ratios, acc_ok, got_dtype = compare_runs(got, refs[dtype], tol, n_val, exact_accuracy=dtype == "float64")
        checks[f"{dtype}, {steps} steps"] = {
            "ok": max(ratios.values()) <= 1.0 and acc_ok and got_dtype == dtype, "ratios": ratios,
            "params_normwise": normwise(got[0], refs[dtype][0]), "accuracy_agrees": acc_ok, "dtype": got_dtype,
        }
    got = one_step(be, args.sizes, data, args.batch)
    ratio = worst(got, refs["step"], F32_STEP)
    checks["float32, one forward/backward"] = {"ok": ratio <= 1.0, "ratios": {"A and gradients": ratio},
                                               "normwise": normwise(got, refs["step"])}
    return checks


def run(args):
    """The report: the reference's description, and per candidate backend its checks or why it did not run."""
    data = problem(args.sizes, args.n)
    ref_be = nn.get_backend("numpy")
    refs = {dtype: train(ref_be, dtype, args.sizes, data, steps, args.batch)
            for dtype, steps in (("float64", args.steps), ("float32", F32_STEPS))}
    refs["step"] = one_step(ref_be, args.sizes, data, args.batch)
    report = {"mode": args.mode, "sizes": args.sizes, "n": args.n, "batch": args.batch, "steps": args.steps,
              "reference": ref_be.describe(), "val_accuracy_ref": refs["float64"][1].val_accuracy[-1], "backends": {}}
    for label, be, why in candidates(args.mode):
        if be is None:
            report["backends"][label] = {"available": False, "reason": why}
            print(f"{label:11s} not compared: {why}", flush=True)
            continue
        checks = check_backend(be, refs, args, data)
        report["backends"][label] = {"available": True, "device": be.describe(), "checks": checks,
                                     "ok": all(c["ok"] for c in checks.values())}
        for name, c in checks.items():
            figures = ", ".join(f"{k} {v:.2g}" for k, v in c["ratios"].items())
            print(f"{label:11s} {name:32s} {'ok  ' if c['ok'] else 'FAIL'} (|Δ| / tolerance: {figures})", flush=True)
    return report


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("gpu", "cpu"), default="gpu" if nn.cupy_available() else "cpu",
                   help="compare the GPU backends (CuPy, torch and JAX on CUDA) or the CPU ones (torch, JAX) with "
                        "NumPy (default: gpu when CuPy sees a CUDA device)")
    p.add_argument("--sizes", default="32,64,32,10", help="layer sizes, comma-separated (default 32,64,32,10)")
    p.add_argument("--n", type=int, default=2000, help="training rows (default 2000; a quarter more for validation)")
    p.add_argument("--batch", type=int, default=100, help="batch size (default 100)")
    p.add_argument("--steps", type=int, default=300, help="float64 SGD steps (default 300; float32: 100)")
    p.add_argument("--json", type=Path, help="write the report there")
    args = p.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        p.error(f"--sizes: expected comma-separated integers, got {args.sizes!r}")
    if len(args.sizes) < 2 or min(args.sizes) < 1 or args.n < 1 or args.batch < 1 or args.steps < 1:
        p.error(f"--sizes, --n, --batch, --steps: expected positive numbers (at least two sizes), got "
                f"{args.sizes}, {args.n}, {args.batch}, {args.steps}")
    per_epoch = -(-args.n // args.batch)
    if args.steps % per_epoch or F32_STEPS % per_epoch:
        p.error(f"--n, --batch: an epoch of {per_epoch} batches must divide --steps ({args.steps}) and {F32_STEPS}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if os.environ.get("CUPY_TF32", "0") not in ("", "0"):
        print("refusing to run: CUPY_TF32 turns on TF32 (float32 matmuls keep ~10 mantissa bits); unset it",
              file=sys.stderr)
        return 2
    report = run(args)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    compared = [b for b in report["backends"].values() if b["available"]]
    failed = [k for k, b in report["backends"].items() if b["available"] and not b["ok"]]
    print(f"parity ({args.mode}): {len(compared)} backend(s) compared with NumPy, "
          + (f"FAILED: {', '.join(failed)}" if failed else "all within tolerance" if compared else "none could run"))
    return 1 if failed else 0 if compared else 2


if __name__ == "__main__":
    sys.exit(main())
