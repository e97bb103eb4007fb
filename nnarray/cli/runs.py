"""A run's folder and machine: where it writes (``runs/<date-time>/`` or ``--out``), the checks that it can write
there before anything is trained, the BLAS threads and the processes of a data-parallel run."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import sys
import time

from .._files import check_writable
from .common import UsageError, say

__all__ = ["RUN_FILES", "ENV_THREADS", "output_dir", "prepare_dir", "preflight_outputs", "limit_threads",
           "distributed_setup", "on_rank0", "PLOTS_INSTALL", "mpiexec_command", "default_threads"]

# The files of a run; --out holding any of the first four is a run that --overwrite must be asked to replace.
RUN_FILES = ("checkpoint.npz", "model.npz", "best.npz", "history.json", "history.csv", "learning_curve.png",
             "confusion_matrix.png")
PLOTS_INSTALL = 'pip install "nnarray[scripts]"  (or: pip install matplotlib)'


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


def preflight_outputs(args, out, history):
    """Before anything is trained: the folder can be written, the pictures can be drawn, a resumed run's best
    model can go with it. Nothing is written (a probe file is made and removed at once)."""
    flag = "--out" if args.out is not None else "the run folder (choose another with --out)"
    try:
        check_writable(os.path.join(out, "checkpoint.npz"), flag)
    except OSError as exc:
        raise UsageError(str(exc)) from None
    if not args.no_plots and not _importable("matplotlib"):
        raise UsageError(f"the pictures (learning_curve.png, confusion_matrix.png) need matplotlib, which is not "
                         f"installed: {PLOTS_INSTALL}; or pass --no-plots to train without them")
    if args.resume and _best_epoch(history):
        source = os.path.join(os.path.dirname(os.path.abspath(args.resume)), "best.npz")
        if not os.path.isfile(source):
            raise UsageError(f"--resume: the run's best model {source} is missing (its history has a best epoch); "
                             "restore it, or start a new run")


def _importable(name):
    """Whether ``import name`` works here (installed and importable, not merely present)."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _best_epoch(history):
    return any(v is not None for v in history.val_accuracy)


def prepare_dir(out, new_run, args, history, root="runs"):
    """Make the folder; with --overwrite clear the replaced run's files; a resumed run written into another
    folder (--resume with --out) takes its best model along; a new run becomes runs/latest."""
    os.makedirs(out, exist_ok=True)
    if args.overwrite and not args.resume:  # nothing of the replaced run may be mistaken for this one's
        for f in RUN_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(out, f))
    if args.resume and _best_epoch(history):
        source = os.path.join(os.path.dirname(os.path.abspath(args.resume)), "best.npz")
        target = os.path.join(out, "best.npz")
        if os.path.abspath(source) != os.path.abspath(target):
            shutil.copyfile(source, target)
    if not new_run:
        return
    latest = os.path.join(root, "latest")
    if os.path.exists(latest) and not os.path.islink(latest):
        say(args.quiet, f"note: {latest} is a directory (an older run), so it was left alone; this run is in {out}")
        return
    tmp = f"{latest}.{os.getpid()}.tmp"
    os.symlink(os.path.basename(out), tmp)  # relative: the runs folder may be moved
    os.replace(tmp, latest)  # atomic: latest always points at a whole run


# -------------------------------------------------------------------------------------------- threads
ENV_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")


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
    except ImportError:  # not installed, or installed but not importable here
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


# -------------------------------------------------------------------------------------------- processes
def distributed_setup(args, options=None):
    """The communicator for ``--distributed`` (None without it); on ranks other than 0, silence.

    Created before any backend or checkpoint is loaded, so that each rank's CuPy arrays land on GPU
    ``local_rank``. Ranks other than 0 print nothing on stdout and show no progress bar; fit runs the
    callbacks (checkpoint, best model, history, the epoch line) on rank 0 only. Started as one process (no
    ``mpiexec``), it says so and shows how to start P of them (``options``: the command's options).
    """
    if not getattr(args, "distributed", False):
        return None
    from .. import distributed  # noqa: PLC0415 -- mpi4py only when asked for

    try:
        comm = distributed.MPIComm()
    except distributed.MPIUnavailableError as exc:  # a missing extra: refused before anything is loaded
        raise UsageError(f"--distributed: {exc}") from None
    distributed.install_excepthook(comm)  # an uncaught exception on one rank ends the job
    if comm.size == 1:
        print(f"note: --distributed in a single process: this run trains in 1 process. Start P processes with: "
              f"{mpiexec_command(options)}", file=sys.stderr, flush=True)
    if comm.rank != 0:
        args.quiet = True
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- for the life of this process
    return comm


def _near(path):
    """``path`` relative to the working folder when it lies below it (``.venv/bin/mpiexec``), else absolute."""
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else path


def mpiexec_command(options=None):
    """``.venv/bin/mpiexec -n P .venv/bin/python -m nnarray train ...``: this environment's launcher and Python."""
    import shlex  # noqa: PLC0415

    bindir = os.path.dirname(sys.executable)
    launcher = os.path.join(bindir, "mpiexec")
    launcher = _near(launcher) if os.path.exists(launcher) else "mpiexec"
    rest = " ".join(shlex.quote(o) for o in (options or ["--distributed"]))
    return f"{launcher} -n P {_near(sys.executable)} -m nnarray train {rest}"


def default_threads(stack, share=1):
    """The run's CPU threads when ``--threads`` is not given: the idle cores at start
    (:func:`nnarray.threads.choose_threads`), applied for the rest of ``stack``; the header's description."""
    from .. import threads  # noqa: PLC0415

    chosen = threads.choose_threads(share=share)
    manager, method = threads.limit_threads(chosen["threads"])
    stack.enter_context(manager)
    info = {"threads": chosen["threads"], "method": method or "none", "why": chosen["why"]}
    if method is None:
        info["note"] = (f"the default of {chosen['threads']} threads ({chosen['why']}) needs threadpoolctl "
                        "(pip install threadpoolctl) to take effect; or pass --threads N")
    return info


def on_rank0(comm, fn):
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
