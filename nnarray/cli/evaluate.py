"""``nnarray evaluate``: the test accuracy, per-class accuracy and confusion matrix of a saved model."""

from __future__ import annotations

import contextlib
import json
import os
import sys

import numpy as np

from .. import datasets
from ..metrics import confusion_matrix, per_class_accuracy
from ..saving import CheckpointError, load, load_checkpoint, load_history
from .common import UsageError, speaking_flags
from .parser import build_evaluate_parser
from .results import class_names
from .settings import own_files

__all__ = ["evaluate_main"]


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
    """``nnarray evaluate``: the report of a saved model on its run's test set, a named dataset or a file."""
    args = build_evaluate_parser().parse_args(argv)
    path = args.checkpoint
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.npz")
    with speaking_flags():
        try:
            net = load(path, backend=args.backend)
            name, (Xt, tt) = _test_set(args, path, net)
            cm = confusion_matrix(net, Xt, tt)
        except (UsageError, CheckpointError, datasets.DatasetError, ValueError, TypeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    names = class_names(name, net.n_classes)
    acc = float(np.trace(cm) / cm.sum())
    if args.json:
        doc = {"checkpoint": os.path.abspath(path), "dataset": name, "samples": int(cm.sum()), "test_accuracy": acc,
               "per_class_accuracy": dict(zip(names, [float(a) for a in per_class_accuracy(cm)], strict=True)),
               "confusion_matrix": cm.tolist()}
        print(json.dumps(doc))
        return 0
    _print_report(net, path, name, names, cm, acc)
    return 0


def _test_set(args, path, net):
    """``(name, (X, t))``: ``--data FILE``, else ``--dataset``, else the dataset recorded with the run."""
    if args.data is not None:
        (X, t), test = datasets.load_file(args.data)
        return os.path.basename(args.data), _fitting(net, test if test is not None else (X, t), f"--data {args.data}")
    cfg = _recorded_config(path)
    name = args.dataset or cfg.get("dataset")
    if name is None:
        raise UsageError(f"{path}: no dataset recorded with it (no checkpoint or history.json beside it); "
                         "pass --dataset NAME or --data FILE")
    if args.dataset is None and name == "file":
        own_files(cfg)  # the run's file by its record: from any folder, refused if it changed
        _, test = datasets.load_file(cfg["data"], cfg.get("test_data"))
        if test is None:
            raise UsageError(f"the run's data file {cfg['data']} has no test set; test the model on another file "
                             "with --data FILE")
        return os.path.basename(cfg["data"]), test
    return name, datasets.load(name, data_dir=args.data_dir)[1]


def _fitting(net, data, source):
    """``data`` when the model can be tested on it: as many features as its inputs, labels among its outputs."""
    X, t = data
    if X.shape[1] != net.n_in:
        raise UsageError(f"{source}: expected samples of {net.n_in} features (the model's inputs), got {X.shape[1]}")
    if int(t.max()) >= net.n_classes:
        raise UsageError(f"{source}: expected labels in 0..{net.n_classes - 1} (the model's {net.n_classes} classes), "
                         f"got labels up to {int(t.max())}")
    return X, t


def _print_report(net, path, name, names, cm, acc):
    print(f"model:    {'-'.join(map(str, net.layer_sizes))} {net.dtype_name} from {path}")
    print(f"backend:  {net.backend.describe()}")
    print(f"test set: {name}, {int(cm.sum())} samples")
    print(f"test accuracy: {acc:.4f} ({int(np.trace(cm))}/{int(cm.sum())})")
    print("per-class accuracy:")
    width = max(len(n) for n in names)
    for n, a, row in zip(names, per_class_accuracy(cm), cm, strict=True):
        print(f"  {n:>{width}}  {a:.4f}  ({row.sum()} samples)")
    print("confusion matrix (rows: true class, columns: predicted):")
    cw = max(5, len(str(cm.max())) + 1)
    print(" " * (width + 2) + "".join(f"{i:>{cw}}" for i in range(net.n_classes)))
    for i, row in enumerate(cm):
        print(f"  {names[i]:>{width}}" + "".join(f"{v:>{cw}}" for v in row))
