"""Command line: ``nnarray train`` and ``nnarray evaluate`` (also ``scripts/train.py``, ``scripts/evaluate.py``).

``nnarray train`` trains the seed network (or a deeper one) on MNIST, Fashion-MNIST or the 8×8 digits,
with a progress bar, a line per epoch, and writes into ``--out``: ``checkpoint.npz`` (after every epoch,
atomically; ``--resume`` continues from it), ``model.npz``, ``history.json``, ``learning_curve.png`` and
``confusion_matrix.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from . import __version__, datasets
from ._files import atomic_write
from .backend import BACKEND_NAMES
from .history import History
from .io import CheckpointError, load_checkpoint, save, save_checkpoint, save_history
from .metrics import confusion_matrix, per_class_accuracy
from .model import MLP
from .optim import SGD
from .schedules import Exponential
from .train import TrainingDivergedError, fit

__all__ = ["main", "train_main", "evaluate_main"]

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

# What a plain `nnarray train` uses. Chosen so one hidden layer reaches ≥ 0.89 on Fashion-MNIST in
# 20 epochs on a CPU (README.md has the measured run): 512 hidden units, η 0.05 with momentum 0.9,
# η multiplied by γ = 0.9 after every epoch (as --gamma in PyTorch's MNIST example).
DEFAULTS = dict(
    dataset="auto",
    hidden=[512],
    epochs=20,
    batch_size=100,
    lr=0.05,
    momentum=0.9,
    gamma=0.9,
    reduction="mean",
    dtype="float32",
    seed=0,
    subset=None,
)
# Settings that define a run; on --resume they come from the checkpoint.
RUN_KEYS = ("dataset", "hidden", "batch_size", "lr", "momentum", "gamma", "reduction", "dtype", "seed", "subset")


def _say(quiet, *args, **kw):
    if not quiet:
        print(*args, **kw, flush=True)


# ------------------------------------------------------------------------------------------- data
def _subset(data, n):
    (X, t), test = data
    return ((X[:n], t[:n]), test) if n else data


# ------------------------------------------------------------------------------------------- train
def build_train_parser():
    p = argparse.ArgumentParser(
        prog="nnarray train",
        description="Train an MLP classifier (the seed network: one hidden ReLU layer, softmax, SGD) with nnarray.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", choices=["auto", "mnist", "fashion-mnist", "digits"], default=None,
                   help=f"auto: MNIST if present or downloadable, else local Fashion-MNIST, else digits (default: {DEFAULTS['dataset']})")
    p.add_argument("--backend", choices=[b for b in BACKEND_NAMES], default=None,
                   help="array backend (default: $NNARRAY_BACKEND, else auto = cupy with a GPU, else numpy)")
    p.add_argument("--hidden", type=int, action="append", metavar="N",
                   help=f"units of a hidden layer; repeat for more layers (default: {DEFAULTS['hidden'][0]})")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], metavar="N",
                   help="epochs to train (in all: with --resume, training continues up to this epoch)")
    p.add_argument("--batch-size", type=int, default=None, metavar="B", help=f"mini-batch size (default: {DEFAULTS['batch_size']})")
    p.add_argument("--lr", type=float, default=None, metavar="ETA", help=f"learning rate η (default: {DEFAULTS['lr']})")
    p.add_argument("--momentum", type=float, default=None, metavar="MU", help=f"SGD momentum, 0 for the seed's plain SGD (default: {DEFAULTS['momentum']})")
    p.add_argument("--gamma", type=float, default=None, metavar="G",
                   help=f"learning-rate decay: epoch e uses lr·G^(e−1); 1 keeps it constant (default: {DEFAULTS['gamma']})")
    p.add_argument("--reduction", choices=["mean", "sum"], default=None,
                   help="gradient over a mini-batch: mean (the book) or sum (the seed; use --lr 0.001) (default: mean)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None, help="floating type (default: float32)")
    p.add_argument("--seed", type=int, default=None, help="seed of the initial weights and batch order (default: 0)")
    p.add_argument("--fast", choices=["auto", "on", "off"], default="auto",
                   help="backend-specific fast path of the training step: auto picks one when available "
                        "(also $NNARRAY_FAST=0 turns it off); on requires one (e.g. CuPy's CUDA-graph step)")
    p.add_argument("--subset", type=int, default=None, metavar="N", help="train on the first N training samples only (quick runs)")
    p.add_argument("--data-dir", default=None, help="directory holding the IDX files (else $NNARRAY_DATA, the cache, system dirs)")
    p.add_argument("--out", default="runs/latest", help="output directory (checkpoint, history, plots)")
    p.add_argument("--resume", metavar="CHECKPOINT", default=None, help="continue a run from its checkpoint.npz")
    p.add_argument("--target-acc", type=float, default=None, metavar="ACC", help="exit with status 1 if the final test accuracy is below ACC")
    p.add_argument("--no-plots", action="store_true", help="do not write the PNG pictures")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    # --- data-parallel hook (issue 10): see _distributed_setup
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel training under mpiexec -n P (needs nnarray[mpi]); --batch-size is the global "
                        "batch; rank 0 prints and writes the outputs")
    return p


# --- data-parallel hook (issue 10) ------------------------------------------------------------------
def _distributed_setup(args):
    """The communicator for ``--distributed`` (None without it); on ranks other than 0, silence.

    Created before any backend or checkpoint is loaded, so that each rank's CuPy arrays land on GPU
    ``local_rank``. Ranks other than 0 print nothing on stdout and show no progress bar; fit runs the
    per-epoch callback (checkpoint, history, the epoch line) on rank 0 only.
    """
    if not getattr(args, "distributed", False):
        return None
    from .distributed import MPIComm  # noqa: PLC0415 -- mpi4py only when asked for

    comm = MPIComm()
    if comm.rank != 0:
        args.quiet = True
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- for the life of this process
    return comm
# ------------------------------------------------------------------------------------------------------


def _progress_bar(epoch, epochs, n_batches):
    """A tqdm bar for one epoch (None when tqdm is missing)."""
    try:
        from tqdm.auto import tqdm  # noqa: PLC0415
    except ImportError:
        return None
    return tqdm(total=n_batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False, dynamic_ncols=True, file=sys.stderr)


def train_main(argv=None):
    args = build_train_parser().parse_args(argv)
    comm = _distributed_setup(args)  # data-parallel hook (issue 10); None without --distributed
    quiet = args.quiet
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        print(f"error: --out: {args.out} exists and is not a directory", file=sys.stderr)
        return 2
    given = {k: getattr(args, k) for k in RUN_KEYS if getattr(args, k, None) is not None}

    if args.resume:
        try:
            ck = load_checkpoint(args.resume, backend=args.backend)
        except CheckpointError as exc:
            print(f"error: cannot resume: {exc}", file=sys.stderr)
            return 2
        config = {**DEFAULTS, **ck["config"]}
        ignored = {k: v for k, v in given.items() if config.get(k) != v}
        if ignored:
            _say(quiet, f"note: resuming keeps the checkpoint's settings; ignoring {ignored}")
        net, opt, rng, history = ck["net"], ck["opt"], ck["rng"], ck["history"]
    else:
        config = {**DEFAULTS, **given}
        net = opt = rng = history = None

    try:
        name, data, why = datasets.choose(config["dataset"], args.data_dir)
    except Exception as exc:  # DatasetError and friends: say it plainly, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config["dataset"] = name
    (X, t), (Xt, tt) = _subset(data, config["subset"])
    n_in, n_classes = X.shape[1], int(max(t.max(), tt.max())) + 1
    sizes = [n_in, *config["hidden"], n_classes]

    if net is None:
        try:
            net = MLP(sizes, backend=args.backend, dtype=config["dtype"], seed=config["seed"])
            opt = SGD(config["lr"], momentum=config["momentum"])
        except (ValueError, TypeError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        rng = np.random.default_rng(config["seed"])
        history = History()
    elif net.layer_sizes != sizes:
        print(f"error: the checkpoint's network {net.layer_sizes} does not fit dataset {name} {sizes}", file=sys.stderr)
        return 2

    done = history.epoch[-1] if len(history) else 0
    os.makedirs(args.out, exist_ok=True)
    _say(quiet, f"nnarray {__version__}")
    _say(quiet, f"backend:  {net.backend.describe()}")
    _say(quiet, f"network:  {'-'.join(map(str, net.layer_sizes))} (ReLU hidden, softmax output), {net.dtype_name}")
    _say(quiet, f"dataset:  {name} ({why}): {X.shape[0]} training, {Xt.shape[0]} test samples of {n_in} inputs")
    _say(quiet, f"training: {args.epochs} epochs, batch {config['batch_size']}, SGD lr {config['lr']} (×{config['gamma']} per epoch) "
                f"momentum {config['momentum']}, "
                f"reduction {config['reduction']}, seed {config['seed']}")
    if done:
        _say(quiet, f"resuming: from {args.resume} after epoch {done}")
    _say(quiet, f"output:   {args.out}")
    remaining = args.epochs - done
    if remaining < 1:
        _say(quiet, f"nothing to do: the checkpoint already has {done} epochs (ask for more with --epochs)")
    ck_path = os.path.join(args.out, "checkpoint.npz")
    n_batches = -(-X.shape[0] // config["batch_size"])
    state = {"bar": None, "epoch": done + 1}

    schedule = Exponential(config["lr"], config["gamma"])  # η·γ^(e−1): a function of the epoch, resumes exactly

    def on_batches(b, n, read_loss):
        if quiet:
            return
        if state["bar"] is None:
            state["bar"] = _progress_bar(state["epoch"], args.epochs, n_batches)
            if state["bar"] is None:
                return
        state["bar"].update(b - state["bar"].n)
        state["bar"].set_postfix(loss=f"{read_loss():.4f}", refresh=False)

    def close_bar():
        if state["bar"] is not None:
            state["bar"].close()
            state["bar"] = None

    def after_epoch(rec):
        close_bar()
        state["epoch"] = rec["epoch"] + 1
        save_checkpoint(ck_path, net, opt, rng, history, config=config)
        _write_history(args.out, history, config, net)
        _say(quiet, f"epoch {rec['epoch']:3d}/{args.epochs}  train loss {rec['train_loss']:.4f}  "
                    f"train acc {rec['train_accuracy']:.4f}  test loss {rec['val_loss']:.4f}  test acc {rec['val_accuracy']:.4f}  "
                    f"{rec['seconds']:6.2f} s  {rec['samples'] / rec['seconds']:9.0f} samples/s")

    if remaining >= 1:
        try:
            # One call for all epochs: the data go to the device and are checked once.
            fit(net, opt, X, t, epochs=remaining, batch_size=config["batch_size"], reduction=config["reduction"],
                seed=rng, validation=(Xt, tt), history=history, callbacks=after_epoch, on_batches=on_batches, schedule=schedule,
                log_every=max(1, n_batches // 50), fast={"auto": None, "on": True, "off": False}[args.fast],
                comm=comm)  # data-parallel hook (issue 10)
        except TrainingDivergedError as exc:
            close_bar()
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except (ValueError, TypeError) as exc:
            close_bar()
            print(f"error: {exc}", file=sys.stderr)
            return 2

    cm = confusion_matrix(net, Xt, tt)
    root = comm is None or comm.rank == 0  # data-parallel hook (issue 10): rank 0 alone writes
    if root:
        save(net, os.path.join(args.out, "model.npz"))
        _write_history(args.out, history, config, net, cm)
    if root and not args.no_plots:
        from .plots import plot_confusion_matrix, plot_learning_curve  # noqa: PLC0415

        title = f"{name}, {'-'.join(map(str, net.layer_sizes))}, {net.backend.name}"
        plot_learning_curve(history, os.path.join(args.out, "learning_curve.png"), title=title)
        plot_confusion_matrix(cm, os.path.join(args.out, "confusion_matrix.png"), _class_names(name, n_classes), title=f"confusion matrix, {name} test set")
    if comm is not None:
        comm.barrier()  # the outputs are complete when any rank exits
    acc = float(np.trace(cm) / cm.sum())
    total_s = sum(history.seconds)
    _say(quiet, f"done: test accuracy {acc:.4f} after {len(history)} epochs ({total_s:.1f} s training); outputs in {args.out}")
    if quiet:
        print(f"test accuracy {acc:.4f}")
    if args.target_acc is not None and acc < args.target_acc:
        print(f"error: test accuracy {acc:.4f} is below --target-acc {args.target_acc}", file=sys.stderr)
        return 1
    return 0


def _class_names(name, n_classes):
    return FASHION_CLASSES if name == "fashion-mnist" and n_classes == 10 else [str(i) for i in range(n_classes)]


def _write_history(out, history, config, net, cm=None):
    meta = {"nnarray": __version__, "config": config, "backend": net.backend.describe(),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if cm is not None:
        meta["confusion_matrix"] = np.asarray(cm).tolist()
    save_history(os.path.join(out, "history.json"), history, meta)


# ------------------------------------------------------------------------------------------- evaluate
def build_evaluate_parser():
    p = argparse.ArgumentParser(prog="nnarray evaluate", description="Evaluate a checkpoint or model file on a test set.")
    p.add_argument("checkpoint", help="checkpoint.npz or model.npz written by nnarray")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist", "digits"], default=None,
                   help="test set (default: the dataset recorded in the checkpoint)")
    p.add_argument("--backend", choices=list(BACKEND_NAMES), default=None, help="array backend (default: $NNARRAY_BACKEND, else auto)")
    p.add_argument("--data-dir", default=None, help="directory holding the IDX files")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON")
    return p


def evaluate_main(argv=None):
    args = build_evaluate_parser().parse_args(argv)
    from . import datasets  # noqa: PLC0415
    from .io import load  # noqa: PLC0415

    try:
        net = load(args.checkpoint, backend=args.backend)
        name = args.dataset
        if name is None:
            try:
                name = load_checkpoint(args.checkpoint, backend="numpy")["config"].get("dataset")
            except CheckpointError:
                name = None
        if name is None:
            print("error: the model file does not record its dataset; pass --dataset", file=sys.stderr)
            return 2
        _, (Xt, tt) = datasets.load(name, data_dir=args.data_dir)
        cm = confusion_matrix(net, Xt, tt)
    except (CheckpointError, datasets.DatasetError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = _class_names(name, net.n_classes)
    pca = per_class_accuracy(cm)
    acc = float(np.trace(cm) / cm.sum())
    print(f"model:    {'-'.join(map(str, net.layer_sizes))} {net.dtype_name} from {args.checkpoint}")
    print(f"backend:  {net.backend.describe()}")
    print(f"test set: {name}, {int(cm.sum())} samples")
    print(f"test accuracy: {acc:.4f} ({int(np.trace(cm))}/{int(cm.sum())})")
    print("per-class accuracy:")
    width = max(len(n) for n in names)
    for n, a, row in zip(names, pca, cm):
        print(f"  {n:>{width}}  {a:.4f}  ({row.sum()} samples)")
    print("confusion matrix (rows: true class, columns: predicted):")
    cw = max(5, len(str(cm.max())) + 1)
    print(" " * (width + 2) + "".join(f"{i:>{cw}}" for i in range(net.n_classes)))
    for i, row in enumerate(cm):
        print(f"  {names[i]:>{width}}" + "".join(f"{v:>{cw}}" for v in row))
    if args.json:
        doc = {"checkpoint": os.fspath(args.checkpoint), "dataset": name, "test_accuracy": acc,
               "per_class_accuracy": dict(zip(names, [float(a) for a in pca])), "confusion_matrix": cm.tolist()}
        text = json.dumps(doc, indent=1)
        atomic_write(args.json, lambda f: f.write(text.encode()))
    return 0


# ------------------------------------------------------------------------------------------- entry
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": train_main, "evaluate": evaluate_main}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: nnarray {train,evaluate} [options]   (nnarray train --help for the options)")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
