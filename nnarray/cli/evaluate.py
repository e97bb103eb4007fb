"""``nnarray evaluate``: the test accuracy, per-class accuracy and confusion matrix of a saved model."""

from __future__ import annotations

import contextlib
import json
import os
import sys

import numpy as np

from .. import datasets
from .._files import atomic_write
from ..metrics import confusion_matrix, per_class_accuracy
from ..saving import CheckpointError, load, load_checkpoint, load_history
from .common import UsageError
from .parser import build_evaluate_parser
from .results import class_names

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
    names = class_names(name, net.n_classes)
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


