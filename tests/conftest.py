"""Shared fixtures: the backends every cross-backend test runs on, and small seeded problems."""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

import nnarray as nn


def _importable(module):
    """True when ``module`` imports (a broken install counts as missing)."""
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001
        return False
    return True


HAS_TORCH = _importable("torch")
HAS_CUPY_GPU = nn.cupy_available()
NO_GPU_REASON = "needs CuPy and a CUDA device (none here); run ci/gpu.sh on a GPU machine"
NO_TORCH_REASON = "torch is not installed (bash ci/test.sh installs the CPU build when a local wheel exists)"

# CPU backends that must agree with NumPy; CuPy joins them on a GPU machine.
CPU_BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("array_api_strict", id="strict"),
    pytest.param("torch", id="torch", marks=pytest.mark.skipif(not HAS_TORCH, reason=NO_TORCH_REASON)),
]
ALL_BACKENDS = CPU_BACKENDS + [
    pytest.param("cupy", id="cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_CUPY_GPU, reason=NO_GPU_REASON)])
]


@pytest.fixture(params=ALL_BACKENDS)
def backend_name(request):
    return request.param


def blobs(n=600, n_in=12, n_classes=3, seed=0, dtype=np.float64):
    """A small, learnable classification problem: Gaussian blobs around random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(n_classes, n_in))
    t = rng.integers(0, n_classes, size=n)
    X = centres[t] + rng.normal(size=(n, n_in))
    return X.astype(dtype), t.astype(np.int64)


@pytest.fixture
def problem():
    return blobs()


SCRIPTS_DIR = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="session")
def import_script():
    """``import_script("bench")``: a module of scripts/, imported by name as the scripts import each other
    (a script's own folder is ``sys.path[0]``; here the folder is put there for the session)."""
    sys.path.insert(0, str(SCRIPTS_DIR))
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(str(SCRIPTS_DIR))
