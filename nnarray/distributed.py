"""Data-parallel training: the communicator protocol and the single-process default.

A communicator has ``rank``, ``size`` and ``local_rank``; :func:`nnarray.fit` with ``comm=`` splits every
global mini-batch into contiguous shares, one per rank, and all-reduces the summed gradients.
"""

from __future__ import annotations

__all__ = ["LocalComm"]


class LocalComm:
    """One process: rank 0 of 1; every collective operation leaves its argument as it is."""

    rank = 0
    size = 1
    local_rank = 0

    def allreduce_sum_(self, buf):
        """Sum ``buf`` over all ranks, in place (nothing to do for one process)."""
        return buf

    def bcast(self, obj, root=0):
        return obj

    def barrier(self):
        pass

    def abort(self, code=1):
        raise SystemExit(code)
