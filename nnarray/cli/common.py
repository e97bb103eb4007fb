"""What every part of the command shares: its error type and its way of printing."""

from __future__ import annotations

__all__ = ["UsageError", "say"]


class UsageError(Exception):
    """A setting that cannot work; printed as ``error: ...`` with exit status 2 (no traceback)."""


def say(quiet, *args, **kw):
    """Print unless ``quiet`` (flushed, so lines and the progress bar interleave in order)."""
    if not quiet:
        print(*args, **kw, flush=True)
