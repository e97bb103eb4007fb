"""CPU threads for the matrix products: how many, chosen from the cores that are idle when training starts.

NumPy's BLAS (OpenBLAS, MKL) and PyTorch start one thread per core they see. On a machine whose cores are
busy with other work those threads wait for each other at every matrix product, and an epoch can take several
times longer than with one thread (README, "Threads on a shared machine", has the measurement). So the default
is not "every core" but the cores that are idle now: :func:`choose_threads` counts them (over a short
interval, from ``/proc/stat`` where it exists, else from the load average), never below 1 and never above the
cores this process may run on (its CPU affinity and, in a container, its CPU quota).

:func:`limit_threads` applies a number: through threadpoolctl (the ``scripts`` extra) for NumPy's BLAS and
OpenMP, and ``torch.set_num_threads`` when PyTorch is loaded; both are restored on exit.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time

__all__ = ["usable_cores", "idle_cores", "choose_threads", "limit_threads", "torch_threads", "cores_beyond_limit"]


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, lowered by a cgroup CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def _cgroup_quota():
    """CPUs granted by cgroup v2's ``cpu.max`` ("max 100000" means no quota), or None."""
    with contextlib.suppress(OSError, ValueError):
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    return None


def _cpu_times(cpus):
    """``(idle, total)`` jiffies summed over the CPUs ``cpus`` from /proc/stat, or None where unreadable."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            lines = [line.split() for line in fh if line.startswith("cpu") and not line.startswith("cpu ")]
    except OSError:
        return None
    idle = total = 0
    for fields in lines:
        if int(fields[0][3:]) in cpus:
            values = [int(v) for v in fields[1:]]
            idle += values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
            total += sum(values[:8])  # user..steal (guest time is counted in user already)
    return (idle, total) if total else None


def idle_cores(interval: float = 0.25) -> float:
    """How many of this process's cores were idle over the next ``interval`` seconds (a float ≥ 0).

    From ``/proc/stat`` (the CPUs of this process's affinity); elsewhere from the 1-minute load average
    (cores minus runnable processes), which reacts more slowly.
    """
    try:
        cpus = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        cpus = set(range(os.cpu_count() or 1))
    before = _cpu_times(cpus)
    if before is not None:
        time.sleep(interval)
        after = _cpu_times(cpus)
        if after is not None and after[1] > before[1]:
            share = (after[0] - before[0]) / (after[1] - before[1])
            return max(0.0, min(share * len(cpus), float(usable_cores())))
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return float(usable_cores())
    return max(0.0, usable_cores() - load)


def choose_threads(idle: float | None = None, share: int = 1) -> dict:
    """The default thread count: the idle cores at start, rounded, at least 1, at most the usable cores.

    Returns ``{"threads": n, "cores": usable cores, "idle": idle cores (one decimal), "why": words}``; ``idle``
    may be given (measured elsewhere, or for a test) instead of measured. ``share``: processes that start
    together on this host and split the idle cores (the ranks of a data-parallel run).

    >>> choose_threads(idle=0.3)["threads"]
    1
    """
    cores = usable_cores()
    idle_now = idle_cores() if idle is None else float(idle)
    n = max(1, min(cores, int(idle_now / share + 0.5)))
    why = f"{idle_now:.1f} of {cores} cores idle at start" + (f", shared by {share} processes" if share > 1 else "")
    return {"threads": n, "cores": cores, "idle": round(idle_now, 1), "why": why}


@contextlib.contextmanager
def torch_threads(n):
    """PyTorch's intra-op threads set to ``n`` for the block, when PyTorch is loaded (else nothing)."""
    torch = sys.modules.get("torch")  # only when PyTorch is in use: never imported for this
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def limit_threads(n):
    """A context manager running its block with ``n`` CPU threads; returns ``(manager, method)``.

    ``method`` says what limits them: ``"threadpoolctl"`` (NumPy's BLAS and OpenMP, and PyTorch when loaded),
    ``"torch"`` (PyTorch only: threadpoolctl is not installed) or None (nothing here can: without threadpoolctl,
    NumPy's BLAS takes ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS`` only when set before Python starts).
    """
    stack = contextlib.ExitStack()
    method = None
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 -- optional (the scripts extra)
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        stack.enter_context(threadpool_limits(limits=n))
        method = "threadpoolctl"
    if "torch" in sys.modules:
        stack.enter_context(torch_threads(n))
        method = method or "torch"
    return stack, method


def cores_beyond_limit(limit):
    """The cores this process may run on when that is more than a thread ``limit`` (else None): what JAX uses
    regardless, since XLA's CPU runtime reads no thread setting and sizes its pool by the usable cores."""
    cores = usable_cores()
    return cores if limit and limit < cores else None
