"""The default CPU threads: the idle cores at start, at least 1, at most the usable cores; limits are applied
and undone."""

import sys

import pytest

from nnarray import threads


def test_usable_and_idle_cores_are_within_the_machine():
    cores = threads.usable_cores()
    assert 1 <= cores
    assert 0.0 <= threads.idle_cores(interval=0.05) <= cores


@pytest.mark.parametrize("idle,expected", [(0.0, 1), (0.4, 1), (0.6, 1), (1.6, 2), (1000.0, None)])
def test_choose_threads_rounds_the_idle_cores(idle, expected):
    chosen = threads.choose_threads(idle=idle)
    cores = threads.usable_cores()
    assert chosen["threads"] == min(cores, max(1, round(idle + 1e-9))) if expected is None else min(cores, expected)
    assert chosen["cores"] == cores and 1 <= chosen["threads"] <= cores
    assert chosen["why"] == f"{idle:.1f} of {cores} cores idle at start"


def test_limit_threads_limits_blas_and_restores_it():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import numpy as np

    np.ones((2, 2)) @ np.ones((2, 2))  # BLAS loaded
    before = [p["num_threads"] for p in threadpoolctl.threadpool_info()]
    manager, method = threads.limit_threads(1)
    assert method == "threadpoolctl"
    with manager:
        assert all(p["num_threads"] == 1 for p in threadpoolctl.threadpool_info())
    assert [p["num_threads"] for p in threadpoolctl.threadpool_info()] == before


def test_limit_threads_sets_torch_when_it_is_loaded():
    torch = pytest.importorskip("torch")
    assert "torch" in sys.modules
    before = torch.get_num_threads()
    manager, method = threads.limit_threads(1)
    assert method in ("threadpoolctl", "torch")
    with manager:
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
