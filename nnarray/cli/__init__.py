"""Command line: ``nnarray train`` and ``nnarray evaluate`` (also ``scripts/train.py``, ``scripts/evaluate.py``).

``nnarray train`` is four steps: :func:`parse` the flags (:mod:`.parser`), make the run's :func:`config`
(:mod:`.settings`: from the flags, or from the checkpoint with ``--resume``), :func:`fit` — the library's
:func:`nnarray.fit` with its callbacks: checkpoint, best model on validation, history files, early stopping, the
epoch line (:mod:`.train`) — and :func:`report` (:mod:`.results`: test accuracy of the final and the best model).
The run's folder and machine (threads, processes) are :mod:`.runs`; ``nnarray evaluate`` is :mod:`.evaluate`,
``nnarray export`` :mod:`.export`.

A run goes into its own folder, ``runs/<date-time>/`` with the symbolic link ``runs/latest`` pointing at it
(or ``--out DIR``, refused if DIR holds a run unless ``--overwrite``; ``--resume`` writes next to its
checkpoint, or into ``--out``). The folder holds ``checkpoint.npz`` (after every epoch, atomically), ``best.npz``
(the model with the best validation accuracy so far), ``model.npz`` (the final model), ``history.json`` and
``history.csv`` (per epoch: losses, accuracies, η, seconds), ``learning_curve.png`` and ``confusion_matrix.png``.
Whatever can be checked before training is: a folder that cannot be written or a missing extra is refused
before the first epoch. SIGTERM ends a run as Ctrl-C does: the last finished epoch is kept and the command to
continue it is printed (exit status 143; Ctrl-C 130).

Validation uses images held out of the *training* set (``--val-split``), never the test set: the test set is
read once, at the end, for the report.
"""

from __future__ import annotations

import sys

from .. import __version__
from .common import UsageError
from .evaluate import evaluate_main
from .export import export_main
from .parser import build_evaluate_parser, build_train_parser, parse
from .results import report
from .runs import ENV_THREADS
from .settings import DEFAULTS, config, load_data, validation_size
from .train import fit, train_main

__all__ = ["main", "train_main", "evaluate_main", "export_main", "parse", "config", "fit", "report", "UsageError",
           "DEFAULTS", "load_data", "validation_size", "build_train_parser", "build_evaluate_parser", "ENV_THREADS"]

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
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    # No command, or an unknown one: the usage, on stderr, and the exit status of a usage error (as argparse).
    print(USAGE, file=sys.stderr)
    print(f"error: unknown command {argv[0]!r}" if argv else "error: a command is required: train, evaluate or export",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
