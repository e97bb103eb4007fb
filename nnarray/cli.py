"""Command line: ``nnarray train`` and ``nnarray evaluate`` (also ``scripts/train.py``, ``scripts/evaluate.py``).

``nnarray train`` is four steps, one function each: :func:`parse` the flags, make the run's :func:`config`
(from the flags, or from the checkpoint with ``--resume``), :func:`fit` with callbacks (checkpoint, best model on
validation, early stopping, the epoch line), :func:`report` (test accuracy of the final and the best model).

A run goes into its own folder, ``runs/<date-time>/`` with the symbolic link ``runs/latest`` pointing at it
(or ``--out DIR``, refused if DIR holds a run unless ``--overwrite``; ``--resume`` writes next to its
checkpoint). The folder holds ``checkpoint.npz`` (after every epoch, atomically), ``best.npz`` (the model with
the best validation accuracy so far), ``model.npz`` (the final model), ``history.json`` and ``history.csv``
(per epoch: losses, accuracies, η, seconds), ``learning_curve.png`` and ``confusion_matrix.png``.

Validation uses images held out of the *training* set (``--val-split``), never the test set: the test set is
read once, at the end, for the report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import numpy as np

from . import __version__, datasets, optim, schedules
from ._files import atomic_write
from .backend import BACKEND_NAMES
from .history import History
from .saving import CheckpointError, load, load_checkpoint, load_history, save, save_checkpoint, save_history, save_history_csv
from .metrics import confusion_matrix, per_class_accuracy
from .model import MLP
from .train import StopTraining, TrainingDivergedError
from .train import fit as _fit

__all__ = ["main", "train_main", "evaluate_main", "parse", "config", "fit", "report"]

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

# What a plain `nnarray train` uses. Chosen so one hidden layer reaches ≥ 0.89 on Fashion-MNIST in
# 20 epochs on a CPU (README.md has the measured run): 512 hidden units, η 0.05 with momentum 0.9,
# η multiplied by γ = 0.9 after every epoch (as --gamma in PyTorch's MNIST example).
# None: resolved by _resolve (per optimizer / schedule / training-set size).
DEFAULTS = dict(
    dataset="auto",
    data=None,
    test_data=None,
    hidden=[512],
    epochs=20,
    batch_size=100,
    optimizer="sgd",
    lr=None,
    momentum=None,
    nesterov=False,
    weight_decay=None,
    schedule="exponential",
    gamma=None,
    step_size=10,
    warmup=0,
    dropout=0.0,
    reduction="mean",
    dtype="float32",
    seed=0,
    subset=None,
    val_split=None,
)
# Settings that define a run; on --resume they come from the checkpoint.
RUN_KEYS = tuple(k for k in DEFAULTS if k != "epochs")

#: The validation split when --val-split is not given: 5000 training images (the split customary for MNIST and
#: Fashion-MNIST — Keras' and PyTorch's examples hold out 5000 of the 60000 — and the issue's PyTorch reference),
#: at most a twelfth of the training images, so that small sets and --subset runs keep 11/12 for training.
DEFAULT_VAL_IMAGES = 5000
#: The validation images are drawn with this seed, not the run's --seed: runs that differ only in their seed
#: are compared on the same validation images.
SPLIT_SEED = 0

# Per optimizer: its class name in nnarray.optim, its default η, and whether it has a momentum argument.
OPTIMIZERS = {
    "sgd": ("SGD", 0.05, True),  # η 0.05: the tuned default above (PyTorch has no default for SGD)
    "adam": ("Adam", 1e-3, False),  # PyTorch's defaults
    "adamw": ("AdamW", 1e-3, False),
    "rmsprop": ("RMSprop", 1e-2, True),
    "adagrad": ("AdaGrad", 1e-2, False),
}
SCHEDULES = ("constant", "exponential", "step", "cosine")

# The files of a run; --out holding any of the first four is a run that --overwrite must be asked to replace.
RUN_FILES = ("checkpoint.npz", "model.npz", "best.npz", "history.json", "history.csv", "learning_curve.png",
             "confusion_matrix.png")


class UsageError(Exception):
    """A setting that cannot work; printed as ``error: ...`` with exit status 2 (no traceback)."""


def _say(quiet, *args, **kw):
    if not quiet:
        print(*args, **kw, flush=True)


# ============================================================================================ 1. parse
def _typed(convert, test, expected):
    """An argparse type: ``convert`` the text, check ``test``; argparse names the flag in its error."""

    def parse_value(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value

    parse_value.__name__ = expected  # shown by argparse only if the above is bypassed
    return parse_value


positive_int = _typed(int, lambda v: v >= 1, "a positive integer")
nonnegative_int = _typed(int, lambda v: v >= 0, "an integer ≥ 0")
positive_float = _typed(float, lambda v: 0 < v < float("inf"), "a positive number")
nonnegative_float = _typed(float, lambda v: 0 <= v < float("inf"), "a number ≥ 0")
fraction = _typed(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
factor = _typed(float, lambda v: 0 < v <= 1, "a factor in (0, 1]")
accuracy = _typed(float, lambda v: 0 < v <= 1, "an accuracy in (0, 1], e.g. 0.95")


def _val_split(text):
    """A count of images (``5000``) or a fraction of the training images (``0.1``); 0 turns validation off."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count of images (e.g. 5000) or a fraction in (0, 1), got {text!r}") from None
    if value == int(value) and value >= 0 and "." not in text:
        return int(value)
    if 0 < value < 1:
        return value
    raise argparse.ArgumentTypeError(f"expected a count of images (e.g. 5000) or a fraction in (0, 1), got {text}")


def build_train_parser():
    p = argparse.ArgumentParser(
        prog="nnarray train",
        description="Train an MLP classifier (the seed network: one hidden ReLU layer, softmax, SGD) with nnarray. "
                    "Each run goes into runs/<date-time>/ (runs/latest points at the newest) unless --out is given.",
    )
    d = DEFAULTS
    p.add_argument("--version", action="version", version=f"nnarray {__version__}")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=["auto", "mnist", "fashion-mnist", "digits"], default=None,
                   help="auto: MNIST if present or downloadable, else local Fashion-MNIST, else scikit-learn's digits "
                        "(default: auto)")
    g.add_argument("--data", metavar="FILE", default=None,
                   help="train on your own data: FILE.npz with arrays X_train, t_train (optionally X_test, t_test) or "
                        "FILE.csv with the label in the first column and the features in the others")
    g.add_argument("--test-data", metavar="FILE", default=None, help="a separate test set for --data (.npz or .csv)")
    g.add_argument("--data-dir", default=None,
                   help="directory holding the IDX files (default: $NNARRAY_DATA, the cache, system dirs)")
    g.add_argument("--subset", type=positive_int, default=None, metavar="N", help="use the first N training images only (quick runs)")
    g.add_argument("--val-split", type=_val_split, default=None, metavar="N|F",
                   help=f"validation images held out of the training set: a count or a fraction; 0 for none (default: "
                        f"{DEFAULT_VAL_IMAGES}, at most a twelfth of the training images)")
    g = p.add_argument_group("network")
    g.add_argument("--hidden", type=positive_int, action="append", metavar="N",
                   help=f"units of a hidden layer; repeat for more layers (default: {d['hidden'][0]})")
    g.add_argument("--dropout", type=fraction, default=None, metavar="P",
                   help="dropout rate on the hidden layers during training (inverted dropout) (default: 0)")
    g.add_argument("--dtype", choices=["float32", "float64"], default=None, help="floating type (default: float32)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=positive_int, default=d["epochs"], metavar="N",
                   help=f"epochs to train (in all: with --resume, training continues up to this epoch) (default: {d['epochs']})")
    g.add_argument("--batch-size", type=positive_int, default=None, metavar="B", help=f"mini-batch size (default: {d['batch_size']})")
    g.add_argument("--optimizer", choices=list(OPTIMIZERS), default=None,
                   help="update rule, with PyTorch's definitions (default: sgd)")
    g.add_argument("--lr", type=positive_float, default=None, metavar="ETA",
                   help="learning rate η (default: 0.05 for sgd, else PyTorch's: adam, adamw 0.001; rmsprop, adagrad 0.01)")
    g.add_argument("--momentum", type=fraction, default=None, metavar="MU",
                   help="momentum of sgd or rmsprop; 0 for the seed's plain SGD (default: 0.9 for sgd, 0 for rmsprop)")
    g.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum (sgd)")
    g.add_argument("--weight-decay", type=nonnegative_float, default=None, metavar="WD",
                   help="weight decay (L2 for sgd, adam, rmsprop, adagrad; decoupled for adamw) "
                        "(default: the optimizer's: 0.01 for adamw, else 0)")
    g.add_argument("--schedule", choices=SCHEDULES, default=None,
                   help="learning rate per epoch: constant, exponential (η·γ^(e−1)), step (×γ every --step-size "
                        "epochs), cosine (to 0 at the last epoch) (default: exponential)")
    g.add_argument("--gamma", type=factor, default=None, metavar="G",
                   help="factor of the exponential and step schedules; 1 keeps η constant (default: 0.9 exponential, 0.1 step)")
    g.add_argument("--step-size", type=positive_int, default=None, metavar="N", help="epochs between steps of --schedule step (default: 10)")
    g.add_argument("--warmup", type=nonnegative_int, default=None, metavar="N",
                   help="linear warm-up of η over the first N epochs (default: 0)")
    g.add_argument("--reduction", choices=["mean", "sum"], default=None,
                   help="gradient over a mini-batch: mean (the book) or sum (the seed; use --lr 0.001) (default: mean)")
    g.add_argument("--seed", type=nonnegative_int, default=None, help="seed of the initial weights and batch order (default: 0)")
    g.add_argument("--early-stop", type=positive_int, default=None, metavar="PATIENCE",
                   help="stop when the validation accuracy has not improved for PATIENCE epochs")
    g = p.add_argument_group("machine")
    g.add_argument("--backend", choices=list(BACKEND_NAMES), default=None,
                   help="array backend (default: $NNARRAY_BACKEND, else auto = cupy with a GPU, else numpy)")
    g.add_argument("--fast", choices=["auto", "on", "off"], default="auto",
                   help="backend-specific fast path of the training step: auto picks one when available "
                        "($NNARRAY_FAST=0 turns it off); on requires one (e.g. CuPy's CUDA-graph step) (default: auto)")
    g.add_argument("--distributed", action="store_true",
                   help="data-parallel training under mpiexec -n P (needs nnarray[mpi]); --batch-size is the global "
                        "batch; rank 0 prints and writes the outputs")
    g.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="BLAS threads on the CPU (threadpoolctl when installed, else the OMP/OPENBLAS/MKL_NUM_THREADS "
                        "environment variables, for which the command restarts itself)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, help="output directory (default: runs/<date-time>/, with runs/latest pointing at it; "
                                                "with --resume: the checkpoint's directory)")
    g.add_argument("--overwrite", action="store_true", help="allow --out to be a directory that holds a run (its files are replaced)")
    g.add_argument("--resume", metavar="CHECKPOINT", default=None,
                   help="continue a run from its checkpoint.npz (or its directory), writing next to it")
    g.add_argument("--target-acc", type=accuracy, default=None, metavar="ACC",
                   help="exit with status 1 if the test accuracy of the model chosen on validation is below ACC")
    g.add_argument("--json", action="store_true", help="print only the final result, as one JSON line")
    g.add_argument("--no-plots", action="store_true", help="do not write the PNG pictures")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")
    return p


def parse(argv=None):
    """The command line's flags (argparse exits with status 2 and names the flag on a bad value)."""
    args = build_train_parser().parse_args(argv)
    args.quiet = args.quiet or args.json
    return args


# ============================================================================================ 2. config
def config(args):
    """The run's settings and its starting state.

    Returns ``(cfg, state)``: ``cfg`` holds every key of :data:`DEFAULTS`, resolved; ``state`` is None for a new
    run, else the checkpoint's ``net``, ``opt``, ``rng``, ``history`` (see :func:`nnarray.load_checkpoint`).
    """
    flags = {k: getattr(args, k) for k in RUN_KEYS if getattr(args, k, None) is not None}
    if not args.resume:
        return _resolve({**DEFAULTS, **flags, "epochs": args.epochs}), None
    path = args.resume
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.npz")
    try:
        ck = load_checkpoint(path, backend=args.backend)
    except CheckpointError as exc:
        raise UsageError(f"cannot resume: {exc}") from None
    args.resume = path
    saved = dict(ck["config"])
    if "val_split" not in saved:  # written before validation splits existed: it validated on the test set
        saved["val_split"] = 0
    cfg = _resolve({**DEFAULTS, **saved})
    ignored = {k: v for k, v in flags.items() if cfg.get(k) != v}
    if ignored:
        _say(args.quiet, f"note: resuming keeps the checkpoint's settings; ignoring {ignored}")
    return cfg, ck


def _resolve(cfg):
    """Fill the defaults that depend on other settings; refuse combinations that cannot work."""
    cfg = dict(cfg)
    name = cfg["optimizer"]
    _cls, lr, has_momentum = OPTIMIZERS[name]
    if cfg["lr"] is None:
        cfg["lr"] = lr
    if cfg["momentum"] is None:
        cfg["momentum"] = 0.9 if name == "sgd" else 0.0 if has_momentum else None
    elif not has_momentum:
        raise UsageError(f"--momentum: --optimizer {name} has no momentum (its betas play that part)")
    if cfg["nesterov"] and name != "sgd":
        raise UsageError(f"--nesterov: only with --optimizer sgd, not {name}")
    if cfg["nesterov"] and not cfg["momentum"]:
        raise UsageError("--nesterov: needs a momentum > 0 (--momentum)")
    if cfg["gamma"] is None:
        cfg["gamma"] = {"exponential": 0.9, "step": 0.1}.get(cfg["schedule"], 1.0)
    elif cfg["schedule"] not in ("exponential", "step") and cfg["gamma"] != 1.0:
        raise UsageError(f"--gamma: used by --schedule exponential or step, not {cfg['schedule']}")
    if cfg["data"] is not None and cfg["dataset"] not in (None, "auto", "file"):  # "file": a resumed own-data run
        raise UsageError("--data: give either --data FILE or --dataset, not both")
    if cfg["test_data"] is not None and cfg["data"] is None:
        raise UsageError("--test-data: only with --data")
    return cfg


def _make_optimizer(cfg):
    cls_name = OPTIMIZERS[cfg["optimizer"]][0]
    cls = getattr(optim, cls_name, None)
    if cls is None:
        raise UsageError(f"--optimizer {cfg['optimizer']}: this nnarray has no nnarray.optim.{cls_name} yet")
    kw = {"lr": cfg["lr"]}
    if cfg["momentum"] is not None:
        kw["momentum"] = cfg["momentum"]
    if cfg["nesterov"]:
        kw["nesterov"] = True
    if cfg["weight_decay"] is not None:
        kw["weight_decay"] = cfg["weight_decay"]
    try:
        return cls(**kw)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            bad = str(exc).rsplit("'", 2)[-2]
            raise UsageError(f"--{bad.replace('_', '-')}: this nnarray's {cls_name} does not take {bad} yet") from None
        raise


def _make_schedule(cfg):
    """The schedule object of the run (a function of the epoch only, so a resumed run gets the same η)."""
    lr, kind = cfg["lr"], cfg["schedule"]
    if cfg["warmup"] >= cfg["epochs"]:
        raise UsageError(f"--warmup: expected fewer warm-up epochs than --epochs {cfg['epochs']}, got {cfg['warmup']}")

    def need(name):
        cls = getattr(schedules, name, None)
        if cls is None:
            raise UsageError(f"--schedule {kind}: this nnarray has no nnarray.schedules.{name} yet")
        return cls

    if kind == "constant":
        s = schedules.Constant(lr)
    elif kind == "exponential":
        s = schedules.Exponential(lr, cfg["gamma"])
    elif kind == "step":
        s = need("Step")(lr, step_size=cfg["step_size"], gamma=cfg["gamma"])
    else:  # cosine: from η down to 0 over the run's epochs after the warm-up (the first run's on --resume)
        s = need("Cosine")(lr, epochs=cfg["epochs"] - cfg["warmup"])
    if cfg["warmup"]:
        s = need("Warmup")(s, epochs=cfg["warmup"])
    return s


def _make_net(cfg, sizes, backend):
    kw = {}
    if cfg["dropout"]:
        kw["dropout"] = cfg["dropout"]
    try:
        return MLP(sizes, backend=backend, dtype=cfg["dtype"], seed=cfg["seed"], **kw)
    except TypeError as exc:
        if "dropout" in str(exc):
            raise UsageError("--dropout: this nnarray's MLP has no dropout yet") from None
        raise


# -------------------------------------------------------------------------------------------- data
def load_data(cfg, data_dir=None):
    """The run's data: ``(name, why, train, val, test)``, each set ``(X, t)`` or None.

    Training images: the dataset's (its first ``subset``), less a validation split drawn with
    :data:`SPLIT_SEED`. ``test`` is None for own data without a test set.
    """
    if cfg["data"] is not None:
        train, test = datasets.load_file(cfg["data"], cfg["test_data"])
        name, why = "file", f"--data {cfg['data']}" + (f", --test-data {cfg['test_data']}" if cfg["test_data"] else "")
    else:
        name, (train, test), why = datasets.choose(cfg["dataset"], data_dir)
    X, t = train
    if cfg["subset"]:
        X, t = X[: cfg["subset"]], t[: cfg["subset"]]
    n_val = validation_size(cfg["val_split"], X.shape[0])
    if not n_val:
        return name, why, (X, t), None, test
    order = np.random.default_rng(SPLIT_SEED).permutation(X.shape[0])
    val, keep = np.sort(order[:n_val]), np.sort(order[n_val:])
    return name, why, (X[keep], t[keep]), (X[val], t[val]), test


def validation_size(val_split, n):
    """Images held out of ``n`` training images for ``--val-split`` (None: the default rule)."""
    if val_split is None:
        return min(DEFAULT_VAL_IMAGES, n // 12)
    count = int(round(val_split * n)) if isinstance(val_split, float) else int(val_split)
    if val_split and not 1 <= count < n:
        raise UsageError(f"--val-split {val_split}: expected between 1 and {n - 1} validation images "
                         f"(the training set has {n}), got {count}")
    return count


# -------------------------------------------------------------------------------------------- output folder
def output_dir(args, root="runs"):
    """Where the run writes; a new run never replaces another (``--overwrite`` must ask for it)."""
    if args.out is None and args.resume:
        return os.path.dirname(os.path.abspath(args.resume)), False
    if args.out is not None:
        out = args.out
        if os.path.exists(out) and not os.path.isdir(out):
            raise UsageError(f"--out: {out} exists and is not a directory")
        same = args.resume and os.path.abspath(out) == os.path.dirname(os.path.abspath(args.resume))
        held = [f for f in RUN_FILES if os.path.exists(os.path.join(out, f))]
        if held and not same and not args.overwrite:
            raise UsageError(f"--out: {out} holds a run ({', '.join(held)}); pass --overwrite to replace it, "
                             f"or continue it with --resume {os.path.join(out, 'checkpoint.npz')}")
        return out, False
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out, n = os.path.join(root, stamp), 1
    while os.path.exists(out):  # two runs in one second
        n += 1
        out = os.path.join(root, f"{stamp}-{n}")
    return out, True


def _prepare_dir(out, new_run, overwrite, quiet, root="runs"):
    os.makedirs(out, exist_ok=True)
    if overwrite:  # nothing of the replaced run may be mistaken for this one's
        for f in RUN_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(out, f))
    if not new_run:
        return
    latest = os.path.join(root, "latest")
    if os.path.exists(latest) and not os.path.islink(latest):
        _say(quiet, f"note: {latest} is a directory (an older run), so it was left alone; this run is in {out}")
        return
    tmp = f"{latest}.{os.getpid()}.tmp"
    os.symlink(os.path.basename(out), tmp)  # relative: the runs folder may be moved
    os.replace(tmp, latest)  # atomic: latest always points at a whole run


# -------------------------------------------------------------------------------------------- threads
ENV_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def limit_threads(n, restart_argv=None):
    """Limit the BLAS threads to ``n``; returns ``(context manager, description)``.

    With threadpoolctl (``nnarray[scripts]``) the running BLAS is limited directly. Without it only the
    environment variables work, and only before NumPy loads BLAS: the command then restarts itself with them set
    (``restart_argv``, the options of ``nnarray train``), or, called from Python, says that it cannot.
    """
    if n is None:
        return contextlib.nullcontext(), None
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        return threadpool_limits(limits=n), {"threads": n, "method": "threadpoolctl"}
    if all(os.environ.get(v) == str(n) for v in ENV_THREADS):  # set before this process started (or restarted)
        return contextlib.nullcontext(), {"threads": n, "method": "environment"}
    if restart_argv is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        env = {**os.environ, **{v: str(n) for v in ENV_THREADS}}
        os.execve(sys.executable, [sys.executable, "-m", "nnarray", "train", *restart_argv], env)
    return contextlib.nullcontext(), {"threads": None, "method": "none",
                                      "note": f"--threads {n} needs threadpoolctl (pip install threadpoolctl) or "
                                              f"OPENBLAS_NUM_THREADS={n} OMP_NUM_THREADS={n} set before Python starts"}


# -------------------------------------------------------------------------------------------- data-parallel hook
def _distributed_setup(args):
    """The communicator for ``--distributed`` (None without it); on ranks other than 0, silence.

    Created before any backend or checkpoint is loaded, so that each rank's CuPy arrays land on GPU
    ``local_rank``. Ranks other than 0 print nothing on stdout and show no progress bar; fit runs the
    per-epoch callback (checkpoint, best model, history, the epoch line) on rank 0 only.
    """
    if not getattr(args, "distributed", False):
        return None
    from . import distributed  # noqa: PLC0415 -- mpi4py only when asked for

    comm = distributed.MPIComm()
    if comm.rank != 0:
        args.quiet = True
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- for the life of this process
    return comm


def _on_rank0(comm, fn):
    """``fn()`` on rank 0, its result (or its UsageError) on every rank: one decision, e.g. the run's folder."""
    if comm is None:
        return fn()
    outcome = None
    if comm.rank == 0:
        try:
            outcome = ("ok", fn())
        except UsageError as exc:
            outcome = ("error", str(exc))
    outcome = comm.bcast_object(outcome, root=0)
    if outcome[0] == "error":
        raise UsageError(outcome[1])
    return outcome[1]


# ============================================================================================ 3. fit
def fit(run):
    """Train ``run`` (a :class:`Run`); returns ``"done"``, ``"stopped"`` (early stop) or ``"interrupted"``."""
    cfg, args, state = run.cfg, run.args, {"bar": None}
    X, t = run.train
    n_batches = -(-X.shape[0] // cfg["batch_size"])

    def on_batches(b, n, read_loss):
        if args.quiet:
            return
        if state["bar"] is None:
            state["bar"] = _progress_bar(run.done + 1, args.epochs, n_batches)
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
        run.save_epoch()  # checkpoint first: whatever follows, this epoch is safe
        run.done = rec["epoch"]
        improved = run.update_best(rec)
        _say(args.quiet, _epoch_line(rec, args.epochs, improved))
        if args.early_stop and run.val is not None and rec["epoch"] - run.best_epoch >= args.early_stop:
            _say(args.quiet, f"early stop: no better validation accuracy for {args.early_stop} epochs "
                             f"(best {run.best_val:.4f} at epoch {run.best_epoch})")
            run.stopped = True
            raise StopTraining

    remaining = args.epochs - run.done
    if remaining < 1:
        _say(args.quiet, f"nothing to do: the checkpoint already has {run.done} epochs (ask for more with --epochs)")
        return "done"
    try:
        # One call for all epochs: the data go to the device and are checked once.
        _fit(run.net, run.opt, X, t, epochs=remaining, batch_size=cfg["batch_size"], reduction=cfg["reduction"],
             seed=run.rng, validation=run.val, history=run.history, callbacks=after_epoch, on_batches=on_batches,
             schedule=run.schedule, log_every=max(1, n_batches // 50),
             fast={"auto": None, "on": True, "off": False}[args.fast], comm=run.comm)
    except KeyboardInterrupt:
        close_bar()
        return "interrupted"
    except (ValueError, TypeError) as exc:  # settings fit() refuses (e.g. --fast on without a fast path)
        close_bar()
        raise UsageError(str(exc)) from None
    except BaseException:
        close_bar()
        raise
    return "stopped" if run.stopped else "done"


def _progress_bar(epoch, epochs, n_batches):
    """A tqdm bar for one epoch (None when tqdm is missing)."""
    try:
        from tqdm.auto import tqdm  # noqa: PLC0415
    except ImportError:
        return None
    return tqdm(total=n_batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False, dynamic_ncols=True, file=sys.stderr)


def _epoch_line(rec, epochs, improved):
    line = f"epoch {rec['epoch']:3d}/{epochs}  train loss {rec['train_loss']:.4f}  train acc {rec['train_accuracy']:.4f}  "
    if rec["val_loss"] is not None:
        line += f"val loss {rec['val_loss']:.4f}  val acc {rec['val_accuracy']:.4f}{' *' if improved else '  '}  "
    return line + f"lr {rec['lr']:.3g}  {rec['seconds']:6.2f} s  {rec['samples'] / rec['seconds']:9.0f} samples/s"


class Run:
    """One training run's pieces and files (what the callbacks of :func:`fit` write)."""

    def __init__(self, args, cfg, out, name, why, train, val, test, net, opt, rng, history, threads, comm=None):
        self.args, self.cfg, self.out, self.name, self.why = args, cfg, out, name, why
        self.train, self.val, self.test = train, val, test
        self.net, self.opt, self.rng, self.history = net, opt, rng, history
        self.schedule = _make_schedule(cfg)
        self.threads, self.comm = threads, comm
        self.root = comm is None or comm.rank == 0  # rank 0 alone writes (data-parallel runs)
        self.done = history.epoch[-1] if len(history) else 0
        self.stopped = False
        # The best epoch so far on validation (resumed runs: from their history; best.npz is next to it).
        vals = [(v, e) for e, v in zip(history.epoch, history.val_accuracy) if v is not None]
        self.best_val, self.best_epoch = max(vals, key=lambda p: (p[0], -p[1])) if vals else (-1.0, 0)

    def path(self, name):
        return os.path.join(self.out, name)

    def save_epoch(self):
        save_checkpoint(self.path("checkpoint.npz"), self.net, self.opt, self.rng, self.history, config=self.cfg)
        self.write_history()

    def update_best(self, rec):
        """Save ``best.npz`` when this epoch has the best validation accuracy so far (the first of ties)."""
        if rec["val_accuracy"] is None or rec["val_accuracy"] <= self.best_val:
            return False
        self.best_val, self.best_epoch = rec["val_accuracy"], rec["epoch"]
        save(self.net, self.path("best.npz"))
        self.write_history()
        return True

    def meta(self, extra=None):
        return {"nnarray": __version__, "config": self.cfg, "dataset": self.name, "backend": self.net.backend.describe(),
                "optimizer": self.opt.hyperparameters() | {"type": type(self.opt).__name__},
                "schedule": self.schedule.config() if hasattr(self.schedule, "config") else repr(self.schedule),
                "validation_images": 0 if self.val is None else int(self.val[0].shape[0]),
                "best_epoch": self.best_epoch or None, "threads": self.threads,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {})}

    def write_history(self, extra=None):
        save_history(self.path("history.json"), self.history, self.meta(extra))
        save_history_csv(self.path("history.csv"), self.history)


# ============================================================================================ 4. report
def report(run, outcome):
    """Test the final and the best model, write model.npz and the pictures, print the result; the exit status."""
    args, quiet = run.args, run.args.quiet
    if outcome == "interrupted":
        k = run.done + 1
        cont = f"nnarray train --resume {run.path('checkpoint.npz')} --epochs {args.epochs}"
        if run.done:
            print(f"interrupted during epoch {k}; the checkpoint holds epoch {run.done}; continue with: {cont}", file=sys.stderr)
        else:
            print(f"interrupted during epoch {k}; no epoch finished, so there is nothing to resume", file=sys.stderr)
        return 130
    if not run.root:
        run.comm.barrier()  # rank 0 writes the outputs; they are complete when any rank exits
        return 0
    save(run.net, run.path("model.npz"))
    best_net = load(run.path("best.npz"), backend=run.net.backend) if run.best_epoch else run.net
    result = {"dataset": run.name, "network": run.net.layer_sizes, "epochs": run.done, "stopped_early": outcome == "stopped",
              "final_val_accuracy": run.history.val_accuracy[-1] if len(run.history) else None,
              "best_epoch": run.best_epoch or run.done, "best_val_accuracy": run.best_val if run.best_epoch else None,
              "final_test_accuracy": None, "best_test_accuracy": None,
              "seconds": round(sum(run.history.seconds), 3), "out": os.fspath(run.out)}
    extra = {}
    if run.test is not None:
        Xt, tt = run.test
        cm_final = confusion_matrix(run.net, Xt, tt)
        cm_best = confusion_matrix(best_net, Xt, tt)
        result["final_test_accuracy"] = float(np.trace(cm_final) / cm_final.sum())
        result["best_test_accuracy"] = float(np.trace(cm_best) / cm_best.sum())
        extra = {"result": result, "confusion_matrix": cm_best.tolist(), "confusion_matrix_of": "best.npz" if run.best_epoch else "model.npz"}
    else:
        extra = {"result": result}
    run.write_history(extra)
    if not args.no_plots:
        from .plots import plot_confusion_matrix, plot_learning_curve  # noqa: PLC0415

        title = f"{run.name}, {'-'.join(map(str, run.net.layer_sizes))}, {run.net.backend.name}"
        plot_learning_curve(run.history, run.path("learning_curve.png"), title=title)
        if run.test is not None:
            plot_confusion_matrix(cm_best, run.path("confusion_matrix.png"), _class_names(run.name, run.net.n_classes),
                                  title=f"confusion matrix, {run.name} test set, epoch {result['best_epoch']}")
    if run.comm is not None:
        run.comm.barrier()
    if args.json:
        print(json.dumps(result))
    else:
        _say(quiet, _result_text(result))
        if quiet:
            fin, best = result["final_test_accuracy"], result["best_test_accuracy"]
            if fin is None:
                print(f"validation accuracy {result['final_val_accuracy']}")
            elif result["best_val_accuracy"] is None:  # no validation split: the final model is the result
                print(f"test accuracy {fin:.4f}")
            else:
                print(f"test accuracy {fin:.4f} (final), {best:.4f} (best on validation, epoch {result['best_epoch']})")
    target = result["best_test_accuracy"]
    if args.target_acc is not None and target is not None and target < args.target_acc:
        print(f"error: test accuracy {target:.4f} is below --target-acc {args.target_acc}", file=sys.stderr)
        return 1
    return 0


def _result_text(r):
    if r["final_test_accuracy"] is not None:
        s = f"done: test accuracy {r['final_test_accuracy']:.4f} (final model)"
        if r["best_val_accuracy"] is not None:
            s += f", {r['best_test_accuracy']:.4f} (best.npz: epoch {r['best_epoch']}, val acc {r['best_val_accuracy']:.4f})"
    else:
        s = f"done: no test set; validation accuracy {r['final_val_accuracy']}"
    s += f" after {r['epochs']} epochs{' (stopped early)' if r['stopped_early'] else ''} ({r['seconds']:.1f} s training)"
    return s + f"; outputs in {r['out']}"


def _class_names(name, n_classes):
    return FASHION_CLASSES if name == "fashion-mnist" and n_classes == 10 else [str(i) for i in range(n_classes)]


# ============================================================================================ train_main
def train_main(argv=None, restart=None):
    """``nnarray train``: parse → config → fit with callbacks → report. Returns the exit status.

    ``restart``: may the command restart itself for ``--threads`` (only when it is the process's command line;
    default: when ``argv`` is None).
    """
    options = list(sys.argv[1:] if argv is None else argv)
    args = parse(options)
    try:
        with contextlib.ExitStack() as stack:
            limiter, threads = limit_threads(args.threads, options if (argv is None if restart is None else restart) else None)
            stack.enter_context(limiter)
            run = _setup(args, threads, _distributed_setup(args))
            return report(run, fit(run))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingDivergedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before training started (loading data) or while writing the final outputs
        print("interrupted", file=sys.stderr)
        return 130


def _setup(args, threads, comm=None):
    """Config, data, network and output folder of a run (nothing is written before all of them work)."""
    cfg, ck = config(args)
    try:
        name, why, train, val, test = load_data(cfg, args.data_dir)
    except (datasets.DatasetError, ValueError, ImportError) as exc:  # say it plainly, no traceback
        raise UsageError(str(exc)) from None
    cfg["dataset"] = name
    X, t = train
    labels = [t] + [s[1] for s in (val, test) if s is not None]
    sizes = [X.shape[1], *cfg["hidden"], int(max(int(v.max()) for v in labels)) + 1]
    if ck is None:
        try:
            net = _make_net(cfg, sizes, args.backend)
            opt = _make_optimizer(cfg)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise UsageError(str(exc)) from None
        rng, history = np.random.default_rng(cfg["seed"]), History()
    else:
        net, opt, rng, history = ck["net"], ck["opt"], ck["rng"], ck["history"]
        if net.layer_sizes != sizes:
            raise UsageError(f"the checkpoint's network {net.layer_sizes} does not fit dataset {name} {sizes}")
        if cfg["schedule"] == "cosine" and args.epochs > cfg["epochs"]:
            raise UsageError(f"--epochs {args.epochs}: this run's cosine schedule ends at epoch {cfg['epochs']} "
                             "(start a new run to train longer)")
    if args.early_stop and val is None:
        raise UsageError("--early-stop: needs a validation split (--val-split > 0)")
    out, new_run = _on_rank0(comm, lambda: output_dir(args))  # one folder (one time stamp) for all ranks
    run = Run(args, cfg, out, name, why, train, val, test, net, opt, rng, history, threads, comm)
    if run.root:
        _prepare_dir(out, new_run, args.overwrite and not args.resume, args.quiet)
    q = args.quiet
    _say(q, f"nnarray {__version__}")
    _say(q, f"backend:  {net.backend.describe()}" + (f", {threads['threads']} BLAS threads ({threads['method']})" if threads else ""))
    if threads and threads.get("note"):
        print(f"note: {threads['note']}", file=sys.stderr)
    _say(q, f"network:  {'-'.join(map(str, net.layer_sizes))} (ReLU hidden, softmax output), {net.dtype_name}"
            + (f", dropout {cfg['dropout']}" if cfg["dropout"] else ""))
    n_val = 0 if val is None else val[0].shape[0]
    _say(q, f"dataset:  {name} ({why}): {X.shape[0]} training, {n_val} validation (held out of the training set), "
            f"{'no' if test is None else test[0].shape[0]} test samples of {X.shape[1]} inputs")
    _say(q, f"training: {args.epochs} epochs, batch {cfg['batch_size']}, {opt!r}, schedule {run.schedule!r}, "
            f"reduction {cfg['reduction']}, seed {cfg['seed']}" + (f", early stop after {args.early_stop}" if args.early_stop else ""))
    if run.done:
        _say(q, f"resuming: from {args.resume} after epoch {run.done}")
    _say(q, f"output:   {out}")
    return run


# ============================================================================================ evaluate
def build_evaluate_parser():
    p = argparse.ArgumentParser(prog="nnarray evaluate", description="Evaluate a checkpoint or model file on a test set.")
    p.add_argument("checkpoint", help="a run's folder (its checkpoint.npz), or a checkpoint.npz, model.npz or best.npz written by nnarray")
    p.add_argument("--dataset", choices=["mnist", "fashion-mnist", "digits"], default=None,
                   help="test set (default: the dataset recorded with the run)")
    p.add_argument("--backend", choices=list(BACKEND_NAMES), default=None, help="array backend (default: $NNARRAY_BACKEND, else auto)")
    p.add_argument("--data-dir", default=None, help="directory holding the IDX files")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON")
    return p


def _recorded_config(path):
    """The run's config: from the checkpoint itself, else from history.json or checkpoint.npz beside the file."""
    folder = os.path.dirname(os.path.abspath(path))
    with contextlib.suppress(CheckpointError):
        return load_checkpoint(path, backend="numpy")["config"]
    with contextlib.suppress(CheckpointError):
        return load_history(os.path.join(folder, "history.json"))[1].get("config", {})
    with contextlib.suppress(CheckpointError):
        return load_checkpoint(os.path.join(folder, "checkpoint.npz"), backend="numpy")["config"]
    return {}


def evaluate_main(argv=None):
    args = build_evaluate_parser().parse_args(argv)
    path = args.checkpoint
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.npz")
    try:
        net = load(path, backend=args.backend)
        cfg = _recorded_config(path)
        name = args.dataset or cfg.get("dataset")
        if name is None:
            raise UsageError(f"{path}: no dataset recorded with it (no checkpoint or history.json beside it); pass --dataset")
        if args.dataset is None and name == "file":
            _, test = datasets.load_file(cfg["data"], cfg.get("test_data"))
            if test is None:
                raise UsageError(f"the run's data file {cfg['data']} has no test set; nothing to evaluate on")
            Xt, tt = test
        else:
            _, (Xt, tt) = datasets.load(name, data_dir=args.data_dir)
        cm = confusion_matrix(net, Xt, tt)
    except (UsageError, CheckpointError, datasets.DatasetError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    names = _class_names(name, net.n_classes)
    pca = per_class_accuracy(cm)
    acc = float(np.trace(cm) / cm.sum())
    print(f"model:    {'-'.join(map(str, net.layer_sizes))} {net.dtype_name} from {path}")
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
        doc = {"checkpoint": os.fspath(path), "dataset": name, "test_accuracy": acc,
               "per_class_accuracy": dict(zip(names, [float(a) for a in pca])), "confusion_matrix": cm.tolist()}
        text = json.dumps(doc, indent=1)
        atomic_write(args.json, lambda f: f.write(text.encode()))
    return 0


# ============================================================================================ export
def build_export_parser():
    p = argparse.ArgumentParser(prog="nnarray export", description="Write a trained model as an ONNX file "
                                "(input X (N, n_in), output Y (N, C) class probabilities; needs nnarray[onnx]).")
    p.add_argument("run", help="a run's folder (its best.npz, else model.npz, else checkpoint.npz) or a model/checkpoint file")
    p.add_argument("--out", default=None, help="the ONNX file to write (default: beside the model, ending .onnx)")
    return p


def export_main(argv=None):
    from .export import export_onnx  # noqa: PLC0415

    args = build_export_parser().parse_args(argv)
    path = args.run
    if os.path.isdir(path):
        path = next((os.path.join(path, f) for f in ("best.npz", "model.npz") if os.path.isfile(os.path.join(path, f))),
                    os.path.join(path, "checkpoint.npz"))
    out = args.out or os.path.splitext(path)[0] + ".onnx"
    try:
        net = load(path, backend="numpy")
        export_onnx(net, out)
    except (CheckpointError, ImportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {'-'.join(map(str, net.layer_sizes))} {net.dtype_name}, input X (N, {net.n_in}), output Y (N, {net.n_classes})")
    return 0


# ============================================================================================ entry
USAGE = "usage: nnarray {train,evaluate,export} [options]   (nnarray train --help for the options; nnarray --version)"


def main(argv=None):
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("--version", "-V"):
        print(f"nnarray {__version__}")
        return 0
    if argv and argv[0] == "train":
        return train_main(argv[1:], restart=from_command_line)
    if argv and argv[0] == "evaluate":
        return evaluate_main(argv[1:])
    if argv and argv[0] == "export":
        return export_main(argv[1:])
    print(USAGE)
    if argv and argv[0] not in ("-h", "--help"):
        print(f"error: unknown command {argv[0]!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
