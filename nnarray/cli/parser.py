"""The flags of ``nnarray train`` and ``nnarray evaluate``: argparse parsers whose choices come from the library's
registries (``optim.OPTIMIZERS``, ``schedules.SCHEDULES``, the backends) and whose values are checked by the
library's constraints (:mod:`nnarray.checks`), so a flag is refused with the words the library uses."""

from __future__ import annotations

import argparse
import numbers

from .. import __version__, checks
from ..backend import BACKEND_NAMES
from .settings import DEFAULT_VAL_IMAGES, DEFAULTS, optimizer_classes, schedule_names

__all__ = ["build_train_parser", "build_evaluate_parser", "parse"]

ACCURACY = checks.Interval(numbers.Real, 0, 1, closed="right", text="an accuracy in (0, 1], e.g. 0.95")


def _val_split(text):
    """A count of images (``5000``) or a fraction of the training images (``0.1``); 0 turns validation off."""
    expected = "a count of images (e.g. 5000) or a fraction in (0, 1)"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value == int(value) and value >= 0 and "." not in text:
        return int(value)
    if 0 < value < 1:
        return value
    raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")


# argparse types: the library's constraints read a flag's text (argparse names the flag in the error)
positive_int = checks.POSITIVE_INT.parse
nonnegative_int = checks.NONNEGATIVE_INT.parse


def _data_flags(p):
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
    g.add_argument("--subset", type=positive_int, default=None, metavar="N",
                   help="use the first N training images only (quick runs)")
    g.add_argument("--val-split", type=_val_split, default=None, metavar="N|F",
                   help=f"validation images held out of the training set: a count or a fraction; 0 for none (default: "
                        f"{DEFAULT_VAL_IMAGES}, at most a twelfth of the training images)")


def _network_flags(p):
    g = p.add_argument_group("network")
    g.add_argument("--hidden", type=positive_int, action="append", metavar="N",
                   help=f"units of a hidden layer; repeat for more layers (default: {DEFAULTS['hidden'][0]})")
    g.add_argument("--dropout", type=checks.PROBABILITY.parse, default=None, metavar="P",
                   help="dropout rate on the hidden layers during training (inverted dropout) (default: 0)")
    g.add_argument("--dtype", choices=["float32", "float64"], default=None, help="floating type (default: float32)")


def _training_flags(p):
    d = DEFAULTS
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=positive_int, default=d["epochs"], metavar="N",
                   help="epochs to train (in all: with --resume, training continues up to this epoch) "
                        f"(default: {d['epochs']})")
    g.add_argument("--batch-size", type=positive_int, default=None, metavar="B",
                   help=f"mini-batch size (default: {d['batch_size']})")
    g.add_argument("--optimizer", choices=list(optimizer_classes()), default=None,
                   help="update rule, with PyTorch's definitions (default: sgd)")
    g.add_argument("--lr", type=checks.LEARNING_RATE.parse, default=None, metavar="ETA",
                   help="learning rate η (default: 0.05 for sgd, else PyTorch's: adam, adamw 0.001; "
                        "rmsprop, adagrad 0.01)")
    g.add_argument("--momentum", type=checks.FRACTION.parse, default=None, metavar="MU",
                   help="momentum of sgd or rmsprop; 0 for the seed's plain SGD (default: 0.9 for sgd, 0 for rmsprop)")
    g.add_argument("--nesterov", action="store_true", default=None, help="Nesterov momentum (sgd)")
    g.add_argument("--weight-decay", type=checks.NONNEGATIVE.parse, default=None, metavar="WD",
                   help="weight decay (L2 for sgd, adam, rmsprop, adagrad; decoupled for adamw) "
                        "(default: the optimizer's: 0.01 for adamw, else 0)")
    g.add_argument("--schedule", choices=schedule_names(), default=None,
                   help="learning rate per epoch: constant, exponential (η·γ^(e−1)), step (×γ every --step-size "
                        "epochs), cosine (to 0 at the last epoch) (default: exponential)")
    g.add_argument("--gamma", type=checks.FACTOR.parse, default=None, metavar="G",
                   help="factor of the exponential and step schedules; 1 keeps η constant "
                        "(default: 0.9 exponential, 0.1 step)")
    g.add_argument("--step-size", type=positive_int, default=None, metavar="N",
                   help="epochs between steps of --schedule step (default: 10)")
    g.add_argument("--warmup", type=nonnegative_int, default=None, metavar="N",
                   help="linear warm-up of η over the first N epochs (default: 0)")
    g.add_argument("--reduction", choices=list(checks.REDUCTIONS), default=None,
                   help="gradient over a mini-batch: mean (the book) or sum (the seed; use --lr 0.001) (default: mean)")
    g.add_argument("--seed", type=nonnegative_int, default=None,
                   help="seed of the initial weights and batch order (default: 0)")
    g.add_argument("--early-stop", type=positive_int, default=None, metavar="PATIENCE",
                   help="stop when the validation accuracy has not improved for PATIENCE epochs")


def _machine_flags(p):
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


def _output_flags(p):
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None,
                   help="output directory (default: runs/<date-time>/, with runs/latest pointing at it; "
                        "with --resume: the checkpoint's directory)")
    g.add_argument("--overwrite", action="store_true",
                   help="allow --out to be a directory that holds a run (its files are replaced)")
    g.add_argument("--resume", metavar="CHECKPOINT", default=None,
                   help="continue a run from its checkpoint.npz (or its directory), writing next to it (or into --out)")
    g.add_argument("--target-acc", type=ACCURACY.parse, default=None, metavar="ACC",
                   help="exit with status 1 if the test accuracy of the model chosen on validation is below ACC")
    g.add_argument("--json", action="store_true", help="print only the final result, as one JSON line")
    g.add_argument("--no-plots", action="store_true", help="do not write the PNG pictures")
    g.add_argument("--quiet", action="store_true", help="no progress bar and no per-epoch lines")


def build_train_parser():
    p = argparse.ArgumentParser(
        prog="nnarray train",
        description="Train an MLP classifier (the seed network: one hidden ReLU layer, softmax, SGD) with nnarray. "
                    "Each run goes into runs/<date-time>/ (runs/latest points at the newest) unless --out is given.",
    )
    p.add_argument("--version", action="version", version=f"nnarray {__version__}")
    for add in (_data_flags, _network_flags, _training_flags, _machine_flags, _output_flags):
        add(p)
    return p


def parse(argv=None):
    """The command line's flags (argparse exits with status 2 and names the flag on a bad value)."""
    args = build_train_parser().parse_args(argv)
    args.quiet = args.quiet or args.json
    return args


def build_evaluate_parser():
    p = argparse.ArgumentParser(prog="nnarray evaluate",
                                description="Evaluate a checkpoint or model file on a test set.")
    p.add_argument("--version", action="version", version=f"nnarray {__version__}")
    p.add_argument("checkpoint", help="a run's folder (its checkpoint.npz), or a checkpoint.npz, model.npz or best.npz "
                                      "written by nnarray")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--dataset", choices=["mnist", "fashion-mnist", "digits"], default=None,
                   help="test set (default: the dataset recorded with the run)")
    g.add_argument("--data", metavar="FILE", default=None,
                   help="test on your own file instead: its X_test, t_test (.npz), else all its samples (.npz or .csv, "
                        "as nnarray train --data reads them)")
    p.add_argument("--backend", choices=list(BACKEND_NAMES), default=None,
                   help="array backend (default: $NNARRAY_BACKEND, else auto)")
    p.add_argument("--data-dir", default=None, help="directory holding the IDX files")
    p.add_argument("--json", action="store_true",
                   help="print only the result, as one JSON line (as nnarray train --json)")
    return p
