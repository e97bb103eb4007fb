"""The run's settings (``config``) and what they make: the optimizer, the schedule, the network, the data.

The choices are the library's registries — the optimizers of :data:`nnarray.optim.OPTIMIZERS` by their
lower-case names, the schedules of :data:`nnarray.schedules.SCHEDULES` — and what each takes is read from its
constructor before it is called, so a flag an optimizer or schedule has no use for is refused by name.
"""

from __future__ import annotations

import inspect
import os

import numpy as np

from .. import datasets, optim, schedules
from ..history import History
from ..model import MLP
from ..saving import CheckpointError, load_checkpoint
from .common import UsageError, say

__all__ = ["DEFAULTS", "RUN_KEYS", "config", "load_data", "own_files", "record_own_files", "validation_size",
           "make_optimizer", "make_schedule", "make_net", "optimizer_classes", "schedule_names", "resolve", "new_state"]

# What a plain `nnarray train` uses. Chosen so one hidden layer reaches ≥ 0.89 on Fashion-MNIST in
# 20 epochs on a CPU (README.md has the measured run): 512 hidden units, η 0.05 with momentum 0.9,
# η multiplied by γ = 0.9 after every epoch (as --gamma in PyTorch's MNIST example).
# None: resolved by resolve (per optimizer / schedule / training-set size).
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
    data_file=None,  # what identifies --data and --test-data later (datasets.file_record); set by the run
    test_data_file=None,
)
# Settings that define a run; on --resume they come from the checkpoint.
RUN_KEYS = tuple(k for k in DEFAULTS if k not in ("epochs", "data_file", "test_data_file"))

#: The command's own recipe where it departs from an optimizer's defaults (PyTorch's): SGD's tuned η and momentum
#: above (PyTorch has no default η for SGD).
RECIPE = {"sgd": {"lr": 0.05, "momentum": 0.9}}
#: The γ of the schedules that take one, when --gamma is not given.
GAMMA = {"exponential": 0.9, "step": 0.1}

#: The validation split when --val-split is not given: 5000 training images (the split customary for MNIST and
#: Fashion-MNIST — Keras' and PyTorch's examples hold out 5000 of the 60000 — and the issue's PyTorch reference),
#: at most a twelfth of the training images, so that small sets and --subset runs keep 11/12 for training.
DEFAULT_VAL_IMAGES = 5000
#: The validation images are drawn with this seed, not the run's --seed: runs that differ only in their seed
#: are compared on the same validation images.
SPLIT_SEED = 0


def optimizer_classes() -> dict:
    """``--optimizer`` choices: the classes of :data:`nnarray.optim.OPTIMIZERS` by lower-case name."""
    return optim.by_name()


def schedule_names() -> list:
    """``--schedule`` choices: :data:`nnarray.schedules.SCHEDULES` but the warm-up (that is ``--warmup``)."""
    return [name for name in schedules.SCHEDULES if name != "warmup"]


def _arguments(cls: type) -> dict:
    """Constructor arguments of ``cls`` and their defaults."""
    return {k: p.default for k, p in inspect.signature(cls).parameters.items() if k != "self"}


def config(args):
    """The run's settings and its starting state.

    Returns ``(cfg, state)``: ``cfg`` holds every key of :data:`DEFAULTS`, resolved; ``state`` is None for a new
    run, else the checkpoint's ``net``, ``opt``, ``rng``, ``history`` (see :func:`nnarray.load_checkpoint`).
    """
    flags = {k: getattr(args, k) for k in RUN_KEYS if getattr(args, k, None) is not None}
    if not args.resume:
        return resolve({**DEFAULTS, **flags, "epochs": args.epochs}), None
    path = args.resume
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.npz")
    try:
        ck = load_checkpoint(path, backend=args.backend)
    except CheckpointError as exc:
        raise UsageError(f"cannot resume: {exc}") from None
    args.resume = path
    saved = dict(ck["config"])
    if "val_split" not in saved:  # a checkpoint file of a run that validated on the test set (no split)
        saved["val_split"] = 0
    cfg = resolve({**DEFAULTS, **saved})
    ignored = {k: v for k, v in flags.items() if cfg.get(k) != v}
    if ignored:
        words = ", ".join(_as_flag(k, v) for k, v in ignored.items())
        say(args.quiet, f"note: resuming keeps the checkpoint's settings; ignoring {words}")
    return cfg, ck


def _as_flag(key, value):
    """A setting as it is typed: ``--hidden 16 --hidden 8``, ``--nesterov``, ``--lr 0.1``."""
    flag = "--" + key.replace("_", "-")
    if value is True:
        return flag
    if isinstance(value, (list, tuple)):
        return " ".join(f"{flag} {v}" for v in value)
    return f"{flag} {value}"


def resolve(cfg):
    """Fill the defaults that depend on other settings; refuse combinations that cannot work."""
    cfg = dict(cfg)
    name = cfg["optimizer"]
    takes = _arguments(optimizer_classes()[name])
    defaults = {**takes, **RECIPE.get(name, {})}
    if cfg["lr"] is None:
        cfg["lr"] = defaults["lr"]
    if cfg["momentum"] is None:
        cfg["momentum"] = defaults.get("momentum")
    elif "momentum" not in takes:
        raise UsageError(f"--momentum: --optimizer {name} has no momentum (its betas play that part)")
    if cfg["nesterov"] and "nesterov" not in takes:
        raise UsageError(f"--nesterov: only with --optimizer sgd, not {name}")
    if cfg["nesterov"] and not cfg["momentum"]:
        raise UsageError("--nesterov: needs a momentum > 0 (--momentum)")
    if cfg["gamma"] is None:
        cfg["gamma"] = GAMMA.get(cfg["schedule"], 1.0)
    elif "gamma" not in schedules.parameters(cfg["schedule"]) and cfg["gamma"] != 1.0:
        users = " or ".join(n for n in schedule_names() if "gamma" in schedules.parameters(n))
        raise UsageError(f"--gamma: used by --schedule {users}, not {cfg['schedule']}")
    if cfg["data"] is not None and cfg["dataset"] not in (None, "auto", "file"):  # "file": a resumed own-data run
        raise UsageError("--data: give either --data FILE or --dataset, not both")
    if cfg["test_data"] is not None and cfg["data"] is None:
        raise UsageError("--test-data: only with --data")
    return cfg


def make_optimizer(cfg):
    """The optimizer of the run: its class from the registry, with the settings its constructor takes."""
    cls = optimizer_classes()[cfg["optimizer"]]
    takes = _arguments(cls)
    kw = {k: cfg[k] for k in ("lr", "momentum", "nesterov", "weight_decay") if k in takes and cfg[k] is not None}
    return cls(**kw)


def make_schedule(cfg):
    """The schedule object of the run (a function of the epoch only, so a resumed run gets the same η).

    A cosine spans the run's epochs after the warm-up (the first run's on --resume)."""
    if cfg["warmup"] >= cfg["epochs"]:
        raise UsageError(f"--warmup: expected fewer warm-up epochs than --epochs {cfg['epochs']}, got {cfg['warmup']}")
    return schedules.make(cfg["schedule"], cfg["lr"], epochs=cfg["epochs"], warmup=cfg["warmup"], gamma=cfg["gamma"],
                          step_size=cfg["step_size"])


def make_net(cfg, sizes, backend):
    return MLP(sizes, backend=backend, dtype=cfg["dtype"], seed=cfg["seed"], dropout=cfg["dropout"])


def new_state(cfg, sizes, backend):
    """Network, optimizer, generator and history of a new run (errors of the library become usage errors)."""
    try:
        net = make_net(cfg, sizes, backend)
        opt = make_optimizer(cfg)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UsageError(str(exc)) from None
    return net, opt, np.random.default_rng(cfg["seed"]), History()


def load_data(cfg, data_dir=None):
    """The run's data: ``(name, why, train, val, test)``, each set ``(X, t)`` or None.

    Training images: the dataset's (its first ``subset``), less a validation split drawn with
    :data:`SPLIT_SEED`. ``test`` is None for own data without a test set.
    """
    if cfg["data"] is not None:
        own_files(cfg)
        train, test = datasets.load_file(cfg["data"], cfg["test_data"])
        record_own_files(cfg)
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


def own_files(cfg):
    """The run's own data files (``data``, ``test_data``) as absolute paths, in place in ``cfg``.

    A run that recorded its files (:func:`record_own_files`) finds them by that record from any folder and
    refuses one that changed since (:func:`nnarray.datasets.check_file_record`); runs recorded without one keep
    the path as it was given.
    """
    for key, what in (("data", "--data file"), ("test_data", "--test-data file")):
        if cfg.get(key) is None:
            continue
        record = cfg.get(f"{key}_file")
        if record:
            cfg[key] = datasets.check_file_record(record, what=f"{what} of the run")
        else:
            cfg[key] = os.path.abspath(cfg[key])
    return cfg


def record_own_files(cfg):
    """Record each own data file of a new run, once it has loaded: absolute path, size, SHA-256
    (:func:`nnarray.datasets.file_record`), stored with the run's settings in its checkpoint and history."""
    for key in ("data", "test_data"):
        if cfg.get(key) is not None and not cfg.get(f"{key}_file"):
            cfg[f"{key}_file"] = datasets.file_record(cfg[key])
    return cfg


def validation_size(val_split, n):
    """Images held out of ``n`` training images for ``--val-split`` (None: the default rule)."""
    if val_split is None:
        return min(DEFAULT_VAL_IMAGES, n // 12)
    count = int(round(val_split * n)) if isinstance(val_split, float) else int(val_split)
    if val_split and not 1 <= count < n:
        raise UsageError(f"--val-split {val_split}: expected between 1 and {n - 1} validation images "
                         f"(the training set has {n}), got {count}")
    return count
