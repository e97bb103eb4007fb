#!/usr/bin/env python
"""One check of "any Array API library": libraries selected through ``nn.get_backend``, trained with every
optimizer and compared with NumPy, saved and reloaded, and an exported ONNX file run by onnxruntime.

For each library given (by name, or ``module:`` for the library's namespace module passed to ``get_backend``):

* **train**: a seeded 12-16-4 network, float64, 2 epochs (a schedule, or dropout, per optimizer as in
  tests/test_libraries.py), for every optimizer; the largest difference of the parameters from NumPy's,
  relative to the largest parameter; must be ≤ ``--rtol`` (1e-10);
* **save/load**: ``nn.save`` then ``nn.load`` onto the same library: parameters identical;
* **ONNX**: ``nn.export_onnx`` of the trained float32 net, run by onnxruntime on 1 and 10 000 rows: the largest
  difference from ``net.predict`` relative to the largest probability (≤ 1e-5) and identical argmax.

Dask cannot train (``nn.fit`` refuses it, see docs/backends.md): its row checks chunked ``predict`` and
``evaluate`` against NumPy instead. ndonnx computes eagerly through its value propagation, seconds per step: it
trains with ``--slow-optimizers`` only (default: SGD with momentum). Exit status 1 when any check fails.

Usage::

    python scripts/check_libraries.py                         # jax, module:jax.numpy, torch, strict-flags, dask, ndonnx
    python scripts/check_libraries.py --libraries jax,dask --json check.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time

import numpy as np

import nnarray as nn

OPTIMIZERS = {
    "sgd": (lambda: nn.SGD(0.1), 0.0),
    "momentum": (lambda: nn.SGD(0.1, momentum=0.9), 0.0),
    "nesterov-wd": (lambda: nn.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-3), 0.0),
    "momentum-dropout": (lambda: nn.SGD(0.1, momentum=0.9), 0.3),
    "adam": (lambda: nn.Adam(0.01, weight_decay=1e-3), 0.0),
    "adamw-dropout": (lambda: nn.AdamW(0.01), 0.2),
    "rmsprop": (lambda: nn.RMSprop(0.01, momentum=0.5), 0.0),
    "adagrad": (lambda: nn.AdaGrad(0.1, lr_decay=0.01), 0.0),
}
DEFAULT = "jax,module:jax.numpy,torch,strict-flags,dask,ndonnx"


def blobs(n, n_in=12, n_classes=4, seed=5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(n_classes, n_in))
    t = rng.integers(0, n_classes, size=n)
    return centres[t] + rng.normal(size=(n, n_in)), t


def select(spec):
    """``(backend, context)`` for a library spec: a name, ``module:<namespace module>``, or strict-flags."""
    if spec == "strict-flags":
        import array_api_strict as xps  # noqa: PLC0415

        return nn.get_backend(xps), xps.ArrayAPIStrictFlags(boolean_indexing=False, data_dependent_shapes=False)
    if spec.startswith("module:"):
        return nn.get_backend(importlib.import_module(spec[len("module:"):])), None
    return nn.get_backend(spec), None


def train(backend, name, X, t, batch_size, dtype="float64"):
    make_opt, dropout = OPTIMIZERS[name]
    net = nn.MLP([X.shape[1], 16, 4], backend=backend, dtype=dtype, seed=3, dropout=dropout)
    nn.fit(net, make_opt(), X, t, epochs=2, batch_size=batch_size, seed=4,
           schedule=nn.schedules.Exponential(0.1, 0.5) if dropout == 0.0 else None)  # fmt: skip
    return net


def max_rel(net, ref):
    return max(float(np.max(np.abs(nn.to_numpy(net.params[k]) - nn.to_numpy(v))))
               / float(np.max(np.abs(nn.to_numpy(v))))
               for k, v in ref.params.items())


def onnx_check(net, X):
    import onnxruntime as ort  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        path = nn.export_onnx(net, os.path.join(tmp, "net.onnx"))
        session = ort.InferenceSession(path)
        out = {}
        for rows in (1, X.shape[0]):
            Xr = X[:rows].astype(np.float32)
            Y, ref = session.run(None, {"X": Xr})[0], nn.to_numpy(net.predict(Xr))
            out[rows] = {"max_rel": float(np.max(np.abs(Y - ref)) / np.max(np.abs(ref))),
                         "argmax_equal": bool(np.array_equal(Y.argmax(1), ref.argmax(1)))}
    return out


def check_library(spec, X, t, X_big, optimizers, rtol):
    """The row of one library: per optimizer the difference from NumPy, save/load, ONNX."""
    be, ctx = select(spec)
    row = {"library": spec, "backend": be.describe(), "train": {}}
    with ctx if ctx is not None else _null():
        if spec == "dask":
            return {**row, **dask_check(be, X, t)}
        for name in optimizers:
            start = time.perf_counter()
            ref = train("numpy", name, X, t, batch_size=25)
            net = train(be, name, X, t, batch_size=25)
            diff = max_rel(net, ref)
            row["train"][name] = {"max_rel": diff, "ok": diff <= rtol, "seconds": time.perf_counter() - start}
        with tempfile.TemporaryDirectory() as tmp:
            nn.save(net, os.path.join(tmp, "m.npz"))
            back = nn.load(os.path.join(tmp, "m.npz"), backend=be)
            row["save_load_identical"] = all(np.array_equal(nn.to_numpy(back.params[k]), nn.to_numpy(v))
                                             for k, v in net.params.items())  # fmt: skip
        net32 = nn.MLP([X.shape[1], 16, 4], backend=be, seed=3)
        nn.fit(net32, nn.Adam(0.01), X, t, epochs=2, batch_size=25, seed=4)
        row["onnx"] = onnx_check(net32, X_big)
    return row


def dask_check(be, X, t):
    import dask.array as da  # noqa: PLC0415

    ref = nn.MLP([X.shape[1], 16, 4], backend="numpy", dtype="float64", seed=3)
    nn.fit(ref, nn.Adam(0.01), X, t, epochs=2, batch_size=25, seed=4)
    lazy = ref.to(be)
    Xd, td = da.from_array(X, chunks=(X.shape[0] // 4, X.shape[1])), da.from_array(t, chunks=X.shape[0] // 4)
    Y = lazy.predict(Xd)
    diff = float(np.max(np.abs(Y.compute() - ref.predict(X))))
    return {"predict_chunks": len(Y.chunks[0]), "predict_max_abs": diff,
            "evaluate": [nn.evaluate(lazy, Xd, td), nn.evaluate(ref, X, t)], "train": {}}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def passed(row, rtol):
    ok = all(r["ok"] for r in row["train"].values())
    if "onnx" in row:
        ok = ok and row["save_load_identical"] and all(o["max_rel"] <= 1e-5 and o["argmax_equal"]
                                                       for o in row["onnx"].values())
    if "predict_max_abs" in row:
        ok = ok and row["predict_max_abs"] <= 1e-12 and abs(row["evaluate"][0][0] - row["evaluate"][1][0]) <= 1e-12
    return ok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--libraries", default=DEFAULT, help=f"comma-separated (default {DEFAULT})")
    p.add_argument("--slow-optimizers", default="momentum", help="optimizers for ndonnx (default momentum; 'all')")
    p.add_argument("--rtol", type=float, default=1e-10)
    p.add_argument("--json", default=None, metavar="PATH")
    args = p.parse_args(argv)
    import jax  # noqa: PLC0415 -- float64 comparisons need JAX's 64-bit mode, switched on here (see docs/backends.md)

    jax.config.update("jax_enable_x64", True)
    X, t = blobs(200)
    X_big, _ = blobs(10000, seed=6)
    rows, ok = [], True
    for spec in filter(None, (s.strip() for s in args.libraries.split(","))):
        opts = list(OPTIMIZERS)
        if spec == "ndonnx" and args.slow_optimizers != "all":
            opts = args.slow_optimizers.split(",")
        row = check_library(spec, X, t, X_big, opts, args.rtol)
        row["passed"] = passed(row, args.rtol)
        ok = ok and row["passed"]
        rows.append(row)
        worst = max((r["max_rel"] for r in row["train"].values()), default=float("nan"))
        onnx = row.get("onnx", {})
        print(f"{spec:<20} {'PASS' if row['passed'] else 'FAIL'}  {row['backend']}\n"
              f"    train: {len(row['train'])} optimizer(s), largest difference from NumPy {worst:.2e}"
              + (f"\n    save/load identical: {row['save_load_identical']}" if "save_load_identical" in row else "")
              + "".join(f"\n    ONNX {n} row(s): {o['max_rel']:.2e} of the largest value, "
                        f"argmax equal {o['argmax_equal']}"
                        for n, o in onnx.items())
              + (f"\n    dask: predict over {row['predict_chunks']} chunks, max |diff| {row['predict_max_abs']:.1e}; "
                 f"evaluate {row['evaluate'][0]} vs NumPy {row['evaluate'][1]}" if "predict_chunks" in row else ""),
              flush=True)  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
