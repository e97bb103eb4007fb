"""``nnarray train``: parse → config → run (fit with callbacks) → report.

The run is :func:`nnarray.fit` with the library's callbacks (:mod:`nnarray.callbacks`): a training checkpoint
after every epoch and the best model on validation accuracy (:class:`~nnarray.callbacks.ModelCheckpoint`), the
history files (:class:`~nnarray.callbacks.HistoryLogger`), early stopping, the progress bar, and the epoch line.
Everything that can be checked before training is: the settings, the data, the output folder, the extras the
outputs need, the schedule over the epochs (fit's preflight).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import sys
import threading
import time

from .. import __version__, datasets
from ..callbacks import EarlyStopping, HistoryLogger, ModelCheckpoint, ProgressBar
from ..checks import class_count
from ..fused import describe_updates
from ..threads import torch_threads
from ..train import FitOptions, TrainingDivergedError
from ..train import fit as _fit
from ..words import plural
from .common import Terminated, UsageError, say, speaking_flags
from .parser import parse
from .results import EpochLine, report
from .runs import (
    default_threads,
    distributed_setup,
    limit_threads,
    on_rank0,
    output_dir,
    preflight_outputs,
    prepare_dir,
)
from .settings import config, load_data, make_schedule, new_state

__all__ = ["train_main", "fit", "Run", "Terminated"]

FAST = {"auto": None, "on": True, "off": False}


class Run:
    """One training run's pieces, files and callbacks."""

    def __init__(self, args, cfg, out, data, state, threads, comm=None):
        self.args, self.cfg, self.out, self.threads, self.comm = args, cfg, out, threads, comm
        self.name, self.why, self.train, self.val, self.test = data
        self.net, self.opt, self.rng, self.history = state
        self.schedule = make_schedule(cfg)
        self.root = comm is None or comm.rank == 0  # rank 0 alone writes (data-parallel runs)
        self.done = self.history.epoch[-1] if len(self.history) else 0
        self.interrupt = None  # the KeyboardInterrupt (or Terminated) that ended training, if one did
        self.best = ModelCheckpoint(self.path("best.npz"), monitor="val_accuracy")
        self.best.resume_from(self.history)
        self.checkpoint = ModelCheckpoint(self.path("checkpoint.npz"), config=cfg)
        self.logger = HistoryLogger(json=self.path("history.json"), csv=self.path("history.csv"), meta=self.meta)
        self.logger.history = self.history
        self.early = EarlyStopping("val_accuracy", patience=args.early_stop) if args.early_stop else None

    @property
    def best_epoch(self):
        return self.best.best_epoch or 0

    @property
    def best_val(self):
        return self.best.best if self.best.best is not None else -1.0

    def path(self, name):
        return os.path.join(self.out, name)

    def callbacks(self):
        """The run as callbacks, in order: progress bar, checkpoint, best model, history files, the epoch line,
        early stopping (each sees the epoch before early stopping ends it)."""
        cbs = []
        if not self.args.quiet:
            if importlib.util.find_spec("tqdm") is not None:
                cbs.append(ProgressBar())
            else:
                say(False, "note: no progress bar (it needs tqdm: pip install \"nnarray[scripts]\")")
        cbs += [self.checkpoint] + ([self.best] if self.val is not None else []) + [self.logger, EpochLine(self)]
        return cbs + ([self.early] if self.early else [])

    def meta(self, extra=None):
        """The run's description written into history.json."""
        return {"nnarray": __version__, "config": self.cfg, "dataset": self.name,
                "backend": self.net.backend.describe(),
                "optimizer": self.opt.hyperparameters() | {"type": type(self.opt).__name__},
                "schedule": self.schedule.config() if hasattr(self.schedule, "config") else repr(self.schedule),
                "validation_images": 0 if self.val is None else int(self.val[0].shape[0]),
                "best_epoch": self.best_epoch or None, "threads": self.threads,
                "processes": 1 if self.comm is None else self.comm.size,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {})}


def fit(run):
    """Train ``run`` (a :class:`Run`); returns ``"done"``, ``"stopped"`` (early stop) or ``"interrupted"``."""
    cfg, args = run.cfg, run.args
    remaining = args.epochs - run.done
    if remaining < 1:
        say(args.quiet,
            f"nothing to do: the checkpoint already has {plural(run.done, 'epoch')} (ask for more with --epochs)")
        return "done"
    X, t = run.train
    try:
        # One call for all epochs: the data go to the device and are checked once.
        _fit(run.net, run.opt, X, t, epochs=remaining, batch_size=cfg["batch_size"], reduction=cfg["reduction"],
             seed=run.rng, validation=run.val, schedule=run.schedule, callbacks=run.callbacks(),
             options=FitOptions(history=run.history, fast=FAST[args.fast], comm=run.comm))
    except KeyboardInterrupt as exc:  # the checkpoint holds the last epoch it finished writing
        run.done, run.interrupt = run.checkpoint.saved_epoch or run.done, exc
        return "interrupted"
    except (ValueError, TypeError, ImportError) as exc:  # settings fit() refuses (e.g. --fast on without a fast path)
        raise UsageError(str(exc)) from None
    run.done = run.history.epoch[-1]
    if run.early is not None and run.early.stopped_epoch is not None:
        say(args.quiet, f"early stop: no better validation accuracy for {plural(args.early_stop, 'epoch')} "
                        f"(best {run.best_val:.4f} at epoch {run.best_epoch})")
        return "stopped"
    return "done"


def train_main(argv=None, restart=None):
    """``nnarray train``: parse → config → fit with callbacks → report. Returns the exit status.

    ``restart``: may the command restart itself for ``--threads`` (only when it is the process's command line;
    default: when ``argv`` is None). SIGTERM ends the run as Ctrl-C does (exit status 143 instead of 130).
    """
    options = list(sys.argv[1:] if argv is None else argv)
    args = parse(options)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_sigterm_as_interrupt())
            stack.enter_context(speaking_flags())  # messages name flags; warnings are plain lines
            may_restart = argv is None if restart is None else restart
            limiter, threads = limit_threads(args.threads, options if may_restart else None)
            stack.enter_context(limiter)
            comm = distributed_setup(args, options)
            if threads is None:  # the default: the cores idle now (shared by this host's ranks)
                threads = default_threads(stack, share=getattr(comm, "local_size", 1))
            run = setup(args, threads, comm)
            if threads["threads"]:
                stack.enter_context(torch_threads(threads["threads"]))  # PyTorch, when the backend loaded it
            return report(run, fit(run))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingDivergedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # before training started (loading data) or while writing the final outputs
        print("interrupted", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except OSError as exc:  # a disk that fills up while writing the outputs
        print(f"error: {exc}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While the command runs, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def setup(args, threads, comm=None):
    """Config, data, network and output folder of a run, each checked before anything is written or trained."""
    cfg, ck = config(args)
    try:
        name, why, train, val, test = load_data(cfg, args.data_dir)
    except (datasets.DatasetError, ValueError, ImportError) as exc:  # say it plainly, no traceback
        raise UsageError(str(exc)) from None
    cfg["dataset"] = name
    X, t = train
    sizes = [X.shape[1], *cfg["hidden"], _classes(train, val, test)]
    if ck is None:
        state = new_state(cfg, sizes, args.backend)
    else:
        state = ck["net"], ck["opt"], ck["rng"], ck["history"]
        if state[0].layer_sizes != sizes:
            raise UsageError(f"the checkpoint's network {state[0].layer_sizes} does not fit dataset {name} {sizes}")
    if args.early_stop and val is None:
        raise UsageError("--early-stop: needs a validation split (--val-split > 0)")
    out, new_run = on_rank0(comm, lambda: _output(args, state[3]))  # one folder (one time stamp) for all ranks
    shown = os.path.basename(cfg["data"]) if name == "file" else name  # own data by its file's name
    run = Run(args, cfg, out, (shown, why, train, val, test), state, threads, comm)
    last = run.schedule.last_epoch
    if last is not None and args.epochs > last:
        raise UsageError(f"--epochs {args.epochs}: this run's {cfg['schedule']} schedule ends at epoch {last} "
                         "(start a new run to train longer)")
    if run.root:
        prepare_dir(out, new_run, args, run.history)
    _header(run)
    return run


def _classes(train, val, test):
    """C, the network's outputs: the labels of every set as class indices 0..C−1 (:func:`nnarray.checks.class_count`:
    a single class or a label far beyond the others is refused; classes without a training sample are named)."""
    others = [(s[1], name) for s, name in ((val, "validation labels"), (test, "test labels")) if s is not None]
    try:
        return class_count(train[1], "training labels", others)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _output(args, history):
    out, new_run = output_dir(args)
    preflight_outputs(args, out, history)
    return out, new_run


def _threads_text(threads):
    """The header's words for the CPU threads: how many, and why."""
    if not threads or not threads["threads"]:
        return "the libraries' default (not limited)"
    if "why" in threads:
        return f"{threads['threads']} ({threads['why']}; --threads N sets them)"
    return f"{threads['threads']} (--threads)"


def _jax_threads_note(backend, threads):
    """Why a thread limit below the usable cores does not bind JAX (None where it binds or nothing is limited):
    XLA's CPU runtime reads no thread setting and sizes its pool by the cores the process may run on."""
    from ..threads import cores_beyond_limit  # noqa: PLC0415

    if backend.name != "jax" or not threads or (cores := cores_beyond_limit(threads.get("threads"))) is None:
        return None
    return (f"JAX does not take the thread limit: XLA's products use all {cores} cores this process may run on "
            f"(limit the process instead, e.g. taskset -c 0-{threads['threads'] - 1})")


def _header(run):
    """What the run is, printed before it starts."""
    args, cfg, net, threads, q = run.args, run.cfg, run.net, run.threads, run.args.quiet
    X = run.train[0]
    say(q, f"nnarray {__version__}")
    say(q, f"backend:  {net.backend.describe()}")
    say(q, f"updates:  {describe_updates(run.opt, net.backend)}")
    say(q, f"threads:  {_threads_text(threads)}")
    if threads and threads.get("note"):
        print(f"note: {threads['note']}", file=sys.stderr)
    if (note := _jax_threads_note(net.backend, threads)) is not None:
        print(f"note: {note}", file=sys.stderr)
    P = 1 if run.comm is None else run.comm.size
    say(q, f"processes: {P}" + (" (data-parallel over MPI; --batch-size is the global batch)" if P > 1 else ""))
    say(q, f"network:  {'-'.join(map(str, net.layer_sizes))} (ReLU hidden, softmax output), {net.dtype_name}"
           + (f", dropout {cfg['dropout']}" if cfg["dropout"] else ""))
    n_val = 0 if run.val is None else run.val[0].shape[0]
    say(q, f"dataset:  {run.name} ({run.why}): {X.shape[0]} training, "
           f"{n_val} validation (held out of the training set), "
           f"{'no' if run.test is None else run.test[0].shape[0]} test samples of {X.shape[1]} inputs")
    early = f", early stop after {args.early_stop}" if args.early_stop else ""
    say(q, f"training: {plural(args.epochs, 'epoch')}, batch {cfg['batch_size']}, {run.opt!r}, "
           f"schedule {run.schedule!r}, reduction {cfg['reduction']}, seed {cfg['seed']}{early}")
    if run.done:
        say(q, f"resuming: from {args.resume} after epoch {run.done}")
    say(q, f"output:   {run.out}")
