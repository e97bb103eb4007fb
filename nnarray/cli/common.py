"""What every part of the command shares: its error type and its way of printing."""

from __future__ import annotations

import contextlib
import sys
import warnings

from ..checks import LabelWarning
from ..words import speaking

__all__ = ["UsageError", "Terminated", "say", "FLAG_WORDS", "speaking_flags", "WarningPrinter"]


class UsageError(Exception):
    """A setting that cannot work; printed as ``error: ...`` with exit status 2 (no traceback)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, Slurm, ``docker stop``): ends the run as Ctrl-C does, with exit status 143."""


def say(quiet, *args, **kw):
    """Print unless ``quiet`` (flushed, so lines and the progress bar interleave in order)."""
    if not quiet:
        print(*args, **kw, flush=True)


def _strip_quotes(value):
    return str(value).strip("'\"")


#: How the command names the library's arguments in messages (:mod:`nnarray.words`): its flags.
FLAG_WORDS = {
    "data_dir": lambda v: f"--data-dir {_strip_quotes(v)}",
    "download": lambda v: "run the command again" if v == "True" else "no download",
    "dataset": lambda v: f"--dataset {v}",
    "fast": lambda v: {"True": "--fast on", "None": "--fast auto", "False": "--fast off"}.get(v, "--fast"),
    "backend": lambda v: f"--backend {_strip_quotes(v)}",
    "lr": lambda v: f"--lr {v}",
    "reduction": lambda v: f"--reduction {_strip_quotes(v)}",
    "epochs": lambda v: f"--epochs {v}",
    "batch_size": lambda v: f"--batch-size {v}",
}


class WarningPrinter:
    """Shows Python warnings raised inside the command as ``warning: ...`` lines on stderr, never with a source
    line, each once: the classes without a training sample are named by the file's check, the run's and fit's
    alike, and only the first (the most precise: it names the file) is shown."""

    def __init__(self):
        self.shown = set()

    def __call__(self, message, category, filename, lineno, file=None, line=None):
        key = ("classes", message.absent) if isinstance(message, LabelWarning) else str(message)
        if key not in self.shown:
            self.shown.add(key)
            print(f"warning: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def speaking_flags():
    """The command's words for its whole run: flags in messages, warnings as plain lines."""
    with warnings.catch_warnings(), speaking(FLAG_WORDS):
        warnings.simplefilter("always", LabelWarning)
        warnings.showwarning = WarningPrinter()
        yield
