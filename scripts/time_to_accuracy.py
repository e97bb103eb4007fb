#!/usr/bin/env python
"""Time to accuracy: seconds from start to a target test accuracy on Fashion-MNIST, nnarray against PyTorch.

What is measured
----------------
One network, 784-H-10 (one hidden ReLU layer, softmax + cross-entropy with ``reduction="mean"``), trained by
SGD with momentum from the same He-initialised weights, on the same mini-batches in the same order, until
the test accuracy (all 10 000 Fashion-MNIST test images, evaluated after every epoch) reaches ``--target``
(0.88) or ``--max-epochs`` (20) have run. The learning rate is ``lr * gamma**(epoch - 1)`` in epoch 1, 2, ...
(multiplied by ``gamma`` after every epoch). Every implementation runs once, one after the other, in the
same process; the table reports the seconds from start to the first epoch whose test accuracy reached the
target, the number of epochs that took, the median seconds per epoch (training + evaluation) and the ratio
nnarray / yardstick of the seconds to target (> 1 means nnarray is slower).

"Start" is just before the network is created: the clock includes drawing / copying the initial weights,
moving the training and test data to the device, every epoch's permutation, training, the per-epoch
evaluation and, for the CUDA graph, the warm-up and (re)captures. It excludes loading the files and the
creation of the CUDA context (a tiny operation on the device runs before the clock starts, for both
libraries), so that a GPU run does not measure driver start-up, and library loading: imports happen before
the clock, including ``torch._dynamo``, which torch.optim's first optimizer would otherwise import lazily
inside torch's clock (1.2-1.6 s on a 2-core CPU). There is no warm-up: the first epoch pays
for first-call costs (CuPy kernel compilation, cuBLAS handles, torch's lazy initialisation), as a real run
does.

Implementations (``--impls``)
-----------------------------
* ``nnarray`` — ``nn.MLP([784, H, 10], backend=--backend, seed=seed)``, ``nn.SGD(lr, momentum)`` and ONE call
  of :func:`nnarray.fit` for ``--max-epochs`` epochs with ``validation=(X_test, t_test)``; the callback sets
  ``opt.lr`` for the next epoch, records the time since start and ``val_accuracy``, and stops the run by
  raising a private exception once the target is reached (fit has no stop flag).
* ``torch-eager`` — nn.Linear, ReLU, nn.Linear, CrossEntropyLoss (mean), ``torch.optim.SGD(momentum=...)``
  with ``param_group["lr"]`` set at the start of every epoch; data as tensors on the device (CUDA when
  available, else the CPU), gathered per batch by the epoch's permutation; test accuracy under
  ``torch.no_grad`` in batches of 10 000.
* ``torch-cudagraph`` (CUDA only) — the whole step (zero_grad(set_to_none=False), forward, loss, backward,
  optimizer step) captured with ``torch.cuda.graph`` on static input buffers and replayed per batch, as
  bench.py's yardstick; a last partial batch gets its own graph. Learning-rate schedule: torch.optim.SGD
  has no ``capturable`` mode and its foreach/single-tensor paths pass ``lr`` as the host scalar ``alpha=-lr``
  (a tensor lr would be converted to a host number, a synchronisation that is illegal while capturing), so
  the lr is baked into the captured kernels. (``fused=True`` would accept a device-tensor lr; not used, so
  that both torch rows run the same default SGD kernels.) This script therefore RECAPTURES the graphs at the start of every epoch after setting
  ``param_group["lr"]`` (a few ms per epoch, inside the clock). The side-stream warm-up that precedes the
  first capture trains 3 steps per batch shape; the parameters are restored afterwards and the momentum
  buffers zeroed, so the first replayed step computes buf = mu*0 + g = g, exactly torch's first eager step.

Same initialisation and batches: the torch weights are nnarray's He weights (bench.he_init draws exactly
what ``nn.MLP(sizes, seed=seed)`` draws; W is stored (in, out) by nnarray and (out, in) by nn.Linear, so
it is transposed), and both draw one ``rng.permutation(N)`` per epoch from ``np.random.default_rng(seed)``.
One difference remains by design (each library's own SGD): nnarray keeps v <- mu*v - lr*g, W <- W + v,
torch keeps buf <- mu*buf + g, W <- W - lr*buf. They are identical at constant lr; when lr drops at an
epoch boundary, torch's carried-over velocity is scaled by gamma too, nnarray's is not (the difference
fades as mu**k over the first few dozen steps of each epoch). Epoch 1 is identical math in both, so the
first-epoch test accuracies agree up to float32 rounding (checked: in float64 epoch 1 gives the same test
accuracy in both, and with ``--gamma 1`` epoch 2 does too).

Reading the result: near the target the test accuracy moves by about +-0.01 from epoch to epoch, so which
epoch first crosses it can differ by one between two implementations that differ only in rounding; the
seconds-to-target ratio then jumps by about one epoch's time. The seconds/epoch ratio is the steadier
speed comparison; the per-epoch accuracies are in the table and the JSON.

Usage::

    python scripts/time_to_accuracy.py                         # CPU: nnarray (numpy) vs torch eager
    python scripts/time_to_accuracy.py --target 0.89 --json tta.json
    python scripts/time_to_accuracy.py --subset 3000 --hidden 32 --max-epochs 3 --target 0.5   # quick
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib.util
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

_BENCH_PATH = Path(__file__).resolve().with_name("bench.py")


def _load_bench():
    """scripts/bench.py as a module (torch import helpers, he_init, environment description)."""
    name = "_nnarray_bench_for_tta"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _BENCH_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules[name] = mod
    return mod


bench = _load_bench()

N_IN = 784
N_CLASSES = 10
EVAL_BATCH = 10000
IMPLS = ("nnarray", "torch-eager", "torch-cudagraph")
YARDSTICKS = ("torch-eager", "torch-cudagraph")


# --------------------------------------------------------------------------- runs
class _Recorder:
    """Per-epoch records of one run; the clock starts at ``start()``."""

    def __init__(self, settings):
        self.s = settings
        self.t0 = None
        self.epochs = []

    def start(self):
        self.t0 = time.perf_counter()

    def add(self, epoch, epoch_seconds, test_accuracy, train_loss, lr):
        self.epochs.append({
            "epoch": int(epoch),
            "seconds": time.perf_counter() - self.t0,  # since start
            "epoch_seconds": float(epoch_seconds),  # this epoch's training + evaluation
            "test_accuracy": float(test_accuracy),
            "train_loss": float(train_loss),
            "lr": float(lr),
        })
        return test_accuracy >= self.s["target"]


def run_nnarray(X, t, Xt, tt, s):
    """nnarray: one :func:`nnarray.fit` call, stopped from its callback at the target. Returns (records, info)."""
    import nnarray as nn  # noqa: PLC0415

    try:
        be = nn.get_backend(s["backend"])
    except Exception as exc:  # noqa: BLE001 -- BackendUnavailableError, missing library, ...
        raise bench.Unavailable(f"backend {s['backend']!r}: {exc}") from exc
    # Create the device context before the clock starts (a no-op on the CPU); reading a float synchronises.
    float(be.xp.sum(be.asarray(np.ones(4, dtype=np.float32))))
    rec = _Recorder(s)

    rec.start()
    net = nn.MLP([N_IN, s["hidden"], N_CLASSES], backend=be, dtype=s["dtype"], seed=s["seed"])
    opt = nn.SGD(s["lr"], momentum=s["momentum"])

    def callback(r):
        if rec.add(r["epoch"], r["seconds"], r["val_accuracy"], r["train_loss"], r["lr"]):
            raise nn.StopTraining

    nn.fit(net, opt, X, t, epochs=s["max_epochs"], batch_size=s["batch_size"], seed=s["seed"],
           validation=(Xt, tt), callbacks=callback, schedule=nn.schedules.Exponential(s["lr"], s["gamma"]))
    return rec.epochs, {"device": _short_device(be), "backend": be.name}


def _short_device(be):
    """'cpu' or 'cuda:N' for the table (array-api-strict's and CuPy's device reprs are long)."""
    if be.name == "cupy":
        return f"cuda:{getattr(be.device, 'id', 0)}"
    if be.name == "torch":
        return str(be.device)
    return "cpu"


class _GraphTrainer:
    """The whole training step captured in CUDA graphs (one per batch shape), recaptured when the lr changes."""

    def __init__(self, torch, model, loss_fn, opt, Xd, td, B):
        self.torch, self.model, self.loss_fn, self.opt = torch, model, loss_fn, opt
        self.Xd, self.td, self.B, self.N = Xd, td, B, Xd.shape[0]
        self.shapes = sorted(({B} if self.N >= B else set()) | ({self.N % B} if self.N % B else set()), reverse=True)
        self.static = {}  # batch size -> (static_x, static_t, static_loss_sum)
        for b in self.shapes:
            sx = torch.empty((b, Xd.shape[1]), dtype=Xd.dtype, device=Xd.device)
            st = torch.zeros((b,), dtype=torch.int64, device=Xd.device)
            sx.copy_(Xd[:b])
            st.copy_(td[:b])
            self.static[b] = (sx, st, torch.zeros((), dtype=Xd.dtype, device=Xd.device))
        # Warm-up on a side stream (allocator, cuBLAS, autograd, the optimizer's momentum buffers), then undo
        # its training: restore the parameters and zero the momentum buffers (buf = mu*0 + g = g afterwards,
        # what torch's first step computes from no buffer).
        saved = [p.detach().clone() for p in model.parameters()]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for b in self.shapes:
                sx, st, _ = self.static[b]
                for _ in range(3):
                    opt.zero_grad(set_to_none=False)
                    loss_fn(model(sx), st).backward()
                    opt.step()
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for p, v in zip(model.parameters(), saved):
                p.copy_(v)
                buf = opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf.zero_()
        torch.cuda.synchronize()
        self.graphs = {}
        self.captured_lr = None
        self.captures = 0

    def _capture(self):
        torch, model, loss_fn, opt = self.torch, self.model, self.loss_fn, self.opt
        self.graphs = {}  # release the previous epoch's graphs first
        for b in self.shapes:
            sx, st, loss_sum = self.static[b]
            g = torch.cuda.CUDAGraph()
            opt.zero_grad(set_to_none=False)
            with torch.cuda.graph(g):
                opt.zero_grad(set_to_none=False)
                loss = loss_fn(model(sx), st)
                loss.backward()
                opt.step()  # param_group["lr"] (a Python float) is baked into these kernels
                loss_sum.add_(loss.detach() * b)
            self.graphs[b] = g
        self.captures += 1

    def epoch(self, order, lr):
        """One epoch in the order ``order`` (a device index tensor); returns the mean training loss."""
        if lr != self.captured_lr:
            for group in self.opt.param_groups:
                group["lr"] = lr
            self._capture()
            self.captured_lr = lr
        for _, _, ls in self.static.values():
            ls.zero_()
        Xp, tp = self.Xd[order], self.td[order]  # the epoch's gather by the permutation, on the GPU
        B, N = self.B, self.N
        for s in range(0, N, B):
            b = min(B, N - s)
            sx, st, _ = self.static[b]
            sx.copy_(Xp[s : s + b], non_blocking=True)
            st.copy_(tp[s : s + b], non_blocking=True)
            self.graphs[b].replay()
        return sum(float(ls) for _, _, ls in self.static.values()) / N  # synchronises


def run_torch(X, t, Xt, tt, s, graph):
    """torch eager or torch + CUDA graph with the same init, batches and schedule. Returns (records, info)."""
    torch = bench._import_torch()
    cuda = bench._torch_cuda_ok(torch)
    if graph and not cuda:
        raise bench.Unavailable("CUDA graphs need a CUDA device; torch.cuda.is_available() is False")
    device = torch.device("cuda" if cuda else "cpu")
    # Library loading stays outside the clock, as the imports of both libraries do: torch.optim's first
    # optimizer imports torch._dynamo lazily (1.2-1.6 s on a 2-core CPU), which is not training time.
    try:
        importlib.import_module("torch._dynamo")
    except Exception:  # noqa: BLE001 -- then the optimizer pays it (or does not need it)
        pass
    if cuda:  # create the CUDA context before the clock starts
        torch.zeros(1, device=device)
        torch.cuda.synchronize()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    tdt = getattr(torch, s["dtype"])
    sizes = [N_IN, s["hidden"], N_CLASSES]
    lr0, gamma, B = s["lr"], s["gamma"], s["batch_size"]
    rng = np.random.default_rng(s["seed"])  # what nnarray.fit draws its permutations from
    rec = _Recorder(s)

    rec.start()
    p = bench.he_init(sizes, s["seed"], s["dtype"])  # exactly nn.MLP(sizes, seed=seed)'s weights
    lin1, lin2 = torch.nn.Linear(N_IN, sizes[1]), torch.nn.Linear(sizes[1], N_CLASSES)
    model = torch.nn.Sequential(lin1, torch.nn.ReLU(), lin2).to(device=device, dtype=tdt)
    with torch.no_grad():  # torch stores W as (out, in): transpose nnarray's (in, out)
        lin1.weight.copy_(torch.from_numpy(p["W1"].T.copy()))
        lin1.bias.copy_(torch.from_numpy(p["b1"]))
        lin2.weight.copy_(torch.from_numpy(p["W2"].T.copy()))
        lin2.bias.copy_(torch.from_numpy(p["b2"]))
    loss_fn = torch.nn.CrossEntropyLoss()  # reduction="mean"
    opt = torch.optim.SGD(model.parameters(), lr=lr0, momentum=s["momentum"])
    Xd = torch.as_tensor(X, dtype=tdt).to(device)
    td = torch.as_tensor(t, dtype=torch.int64).to(device)
    Xv = torch.as_tensor(Xt, dtype=tdt).to(device)
    tv = torch.as_tensor(tt, dtype=torch.int64).to(device)
    N, Nv = Xd.shape[0], Xv.shape[0]
    trainer = _GraphTrainer(torch, model, loss_fn, opt, Xd, td, B) if graph else None

    for epoch in range(1, s["max_epochs"] + 1):
        e0 = time.perf_counter()
        lr = lr0 * gamma ** (epoch - 1)
        order = torch.from_numpy(rng.permutation(N)).to(device)
        if trainer is not None:
            train_loss = trainer.epoch(order, lr)
        else:
            for group in opt.param_groups:
                group["lr"] = lr
            running = torch.zeros((), dtype=tdt, device=device)
            for st in range(0, N, B):
                idx = order[st : st + B]
                xb, tb = Xd[idx], td[idx]
                opt.zero_grad()
                loss = loss_fn(model(xb), tb)
                loss.backward()
                opt.step()
                running += loss.detach() * xb.shape[0]
            train_loss = float(running) / N  # synchronises
        with torch.no_grad():
            correct = torch.zeros((), dtype=torch.int64, device=device)
            for st in range(0, Nv, EVAL_BATCH):
                correct += (model(Xv[st : st + EVAL_BATCH]).argmax(dim=1) == tv[st : st + EVAL_BATCH]).sum()
            acc = int(correct) / Nv  # synchronises
        sync()
        if rec.add(epoch, time.perf_counter() - e0, acc, train_loss, lr):
            break
    info = {"device": str(device)}
    if trainer is not None:
        info["graph_captures"] = trainer.captures
        info["lr_schedule"] = "graphs recaptured at every epoch with the new param_group lr (baked into the kernels)"
    return rec.epochs, info


# --------------------------------------------------------------------------- summary and report
def summarize(epochs, target, max_epochs):
    """Row of the table from the per-epoch records."""
    accs = [e["test_accuracy"] for e in epochs]
    hit = next((e for e in epochs if e["test_accuracy"] >= target), None)
    ep_secs = [e["epoch_seconds"] for e in epochs]
    return {
        "reached": hit is not None,
        "epochs_to_target": hit["epoch"] if hit else None,
        "seconds_to_target": hit["seconds"] if hit else None,
        "epochs_run": len(epochs),
        "max_epochs": max_epochs,
        "seconds_total": epochs[-1]["seconds"] if epochs else None,
        "setup_seconds": (epochs[0]["seconds"] - epochs[0]["epoch_seconds"]) if epochs else None,
        "seconds_per_epoch": statistics.median(ep_secs) if ep_secs else None,
        "final_accuracy": accs[-1] if accs else None,
        "best_accuracy": max(accs) if accs else None,
        "per_epoch": epochs,
    }


def default_impls():
    impls = ["nnarray", "torch-eager"]
    try:
        if bench._torch_cuda_ok(bench._import_torch()):
            impls.append("torch-cudagraph")
    except bench.Unavailable:
        pass
    return impls


def format_header(env, s, data_desc):
    return "\n".join([
        f"time to accuracy: Fashion-MNIST test accuracy >= {s['target']}, 784-{s['hidden']}-10, {s['dtype']}",
        f"date        {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"cpu         {env['cpu']} ({', '.join(env['cpu_flags']) or 'no flags read'}); "
        f"{env['cpus_usable']} usable of {env['cpu_count']} cores",
        f"gpu         {env['gpu'] or 'none'}",
        f"versions    nnarray {env.get('nnarray')}, numpy {env['numpy']} (BLAS: {env['blas']}), torch {env['torch']}"
        + (f" ({env['torch_threads']} CPU threads)" if env["torch_threads"] else "") + f", cupy {env['cupy']}",
        f"load        1/5/15-min load average {env['loadavg_start']} at start"
        + (f"; thread settings {env['thread_env']}" if env["thread_env"] else ""),
        f"data        {data_desc}",
        f"settings    batch {s['batch_size']}, SGD lr {s['lr']} x {s['gamma']}/epoch, momentum {s['momentum']}, "
        f"CrossEntropy mean, max {s['max_epochs']} epochs, seed {s['seed']}, nnarray backend {s['backend']}",
        "clock       from network creation (data to device included, CUDA context excluded) to the end of "
        "the first epoch whose test accuracy reached the target; no warm-up",
    ])


def format_table(report):
    s = report["settings"]
    lines = ["", f"{'impl':<28}{'device':<8}{'epochs':>7}{'s to target':>13}{'s/epoch':>9}{'setup s':>9}"
             f"{'final acc':>11}{'best acc':>10}"]
    for name, r in report["results"].items():
        label = name + (f" ({r['backend']})" if r.get("backend") else "")
        if not r.get("available"):
            lines.append(f"{label:<28}not available ({r.get('reason')})")
            continue
        if r["reached"]:
            ep, sec = f"{r['epochs_to_target']:>7d}", f"{r['seconds_to_target']:>13.2f}"
        else:
            ep, sec = f"{'-':>7}", f"{'-':>13}"
        lines.append(f"{label:<28}{r['device']:<8}{ep}{sec}{r['seconds_per_epoch']:>9.2f}{r['setup_seconds']:>9.2f}"
                     f"{r['final_accuracy']:>11.4f}{r['best_accuracy']:>10.4f}")
        if not r["reached"]:
            lines.append(f"{'':<28}not reached in {r['epochs_run']} epochs, best acc {r['best_accuracy']:.4f}")
        lines.append(f"{'':<28}test acc by epoch: " + " ".join(f"{e['test_accuracy']:.4f}" for e in r["per_epoch"]))
    for key, v in report["ratios"].items():
        stt = f"{v['seconds_to_target']:.3f}" if v["seconds_to_target"] is not None else "n/a (" + v["note"] + ")"
        lines.append(f"ratio {key:<28} seconds to target {stt}   seconds/epoch {v['seconds_per_epoch']:.3f}")
    lines.append(f"target {s['target']}; s/epoch = median of (training + test evaluation) per epoch; setup s = "
                 "time from start to the first epoch (weights, data to device, graph warm-up)")
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
    p.add_argument("--impls", default=None,
                   help=f"comma list among {', '.join(IMPLS)} (default: nnarray,torch-eager, plus "
                        "torch-cudagraph when CUDA is available)")
    p.add_argument("--backend", default="auto", help="nnarray backend (default auto: cupy with a GPU, else numpy)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the report (with per-epoch records) to PATH")
    return p


def _check_args(p, a):
    for name in ("hidden", "batch_size", "max_epochs"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected a positive integer")
    if a.subset is not None and a.subset < 1:
        p.error("--subset: expected a positive integer")
    if not (a.lr > 0 and math.isfinite(a.lr)):
        p.error("--lr: expected a positive number")
    if not 0.0 <= a.momentum < 1.0:
        p.error("--momentum: expected a value in [0, 1)")
    if not (a.gamma > 0 and math.isfinite(a.gamma)):
        p.error("--gamma: expected a positive number")
    if not 0.0 < a.target <= 1.0:
        p.error("--target: expected an accuracy in (0, 1]")
    impls = [i.strip() for i in a.impls.split(",") if i.strip()] if a.impls else default_impls()
    bad = [i for i in impls if i not in IMPLS]
    if bad or not impls:
        p.error(f"--impls: expected a comma list among {', '.join(IMPLS)}, got {a.impls!r}")
    return list(dict.fromkeys(impls))


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    impls = _check_args(parser, args)

    import nnarray as nn  # noqa: PLC0415

    (X, t), (Xt, tt) = nn.datasets.load_fashion_mnist(download=False)
    if args.subset is not None:
        X, t = X[: args.subset], t[: args.subset]
    data_desc = f"Fashion-MNIST, {X.shape[0]} training samples" + (" (subset)" if args.subset else "") + \
        f", {Xt.shape[0]} test samples"
    s = {
        "hidden": args.hidden, "batch_size": args.batch_size, "lr": args.lr, "momentum": args.momentum,
        "gamma": args.gamma, "max_epochs": args.max_epochs, "target": args.target, "seed": args.seed,
        "dtype": args.dtype, "subset": args.subset, "backend": args.backend, "impls": impls,
        "n_train": int(X.shape[0]), "n_test": int(Xt.shape[0]), "data": data_desc,
        "lr_schedule": "lr * gamma**(epoch-1) in epoch 1, 2, ...",
        "loss": "cross-entropy, mean over the batch",
        "eval_batch": EVAL_BATCH,
        "argv": list(sys.argv[1:] if argv is None else argv),
    }
    env = bench.environment()
    print(format_header(env, s, data_desc), flush=True)

    results = {}
    for name in impls:
        print(f"  running {name} ...", file=sys.stderr, flush=True)
        gc.collect()
        try:
            if name == "nnarray":
                epochs, info = run_nnarray(X, t, Xt, tt, s)
            else:
                epochs, info = run_torch(X, t, Xt, tt, s, graph=(name == "torch-cudagraph"))
        except bench.Unavailable as exc:
            results[name] = {"available": False, "reason": str(exc)}
            continue
        except Exception as exc:  # noqa: BLE001 -- one failing impl must not stop the others
            results[name] = {"available": False, "reason": f"failed: {type(exc).__name__}: {exc}"}
            continue
        results[name] = {"available": True, **info, **summarize(epochs, args.target, args.max_epochs)}
        r = results[name]
        print(f"  {name}: {r['epochs_run']} epoch(s), " + ("reached" if r["reached"] else "not reached")
              + f", best acc {r['best_accuracy']:.4f}", file=sys.stderr, flush=True)

    ratios = {}
    a = results.get("nnarray", {})
    if a.get("available"):
        for y in YARDSTICKS:
            ry = results.get(y, {})
            if not ry.get("available"):
                continue
            both = a["reached"] and ry["reached"]
            ratios[f"nnarray/{y}"] = {
                "seconds_to_target": a["seconds_to_target"] / ry["seconds_to_target"] if both else None,
                "seconds_per_epoch": a["seconds_per_epoch"] / ry["seconds_per_epoch"],
                "note": "both reached the target" if both else "target not reached by "
                + " and ".join(n for n, r in (("nnarray", a), (y, ry)) if not r["reached"]),
            }
    report = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "environment": env,
        "settings": s,
        "results": results,
        "ratios": ratios,
        "loadavg_after": bench._loadavg(),
    }
    print(format_table(report), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    main()
