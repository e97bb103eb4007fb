"""The default CPU threads: the idle cores at start, at least 1, at most the usable cores; limits are applied
and undone."""

import sys

import pytest

from nnarray import threads


def test_usable_and_idle_cores_are_within_the_machine():
    cores = threads.usable_cores()
    assert 1 <= cores
    assert 0.0 <= threads.idle_cores(interval=0.05) <= cores


@pytest.mark.parametrize("idle,share,expected", [(0.0, 1, 1), (0.4, 1, 1), (0.6, 1, 1), (1.6, 1, 2), (8.0, 4, 2),
                                                 (1000.0, 1, "all")])
def test_choose_threads_rounds_the_idle_cores(idle, share, expected):
    cores = threads.usable_cores()
    chosen = threads.choose_threads(idle=idle, share=share)
    assert chosen["threads"] == (cores if expected == "all" else min(cores, expected))
    assert chosen["cores"] == cores and 1 <= chosen["threads"] <= cores
    assert chosen["why"].startswith(f"{idle:.1f} of {cores} cores idle at start")
    assert ("shared by 4 processes" in chosen["why"]) == (share == 4)


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
