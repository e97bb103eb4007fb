"""Shared fixtures: the backends every cross-backend test runs on, and small seeded problems.

* ``backend`` — parametrised over numpy, array_api_strict, torch, jax and cupy. torch or a CUDA device
  missing is skipped with the reason (cupy is marked ``gpu`` automatically); jax, in the test extra, is not.
* ``blobs`` — a factory of small learnable classification problems (Gaussian blobs).
* markers ``torch`` and ``gpu`` skip, with the reason, where torch or a CUDA device is missing; with
  ``$NNARRAY_REQUIRE_GPU=1`` (ci/gpu.sh on a GPU machine) a ``gpu`` test without CuPy and a device fails
  instead, naming why CuPy is unusable.
* ``child_env(**extra)`` — the environment for a child Python: this checkout first on ``PYTHONPATH``, the
  rest of the parent's path kept (ci/gpu.sh carries wheels there).
* ``import_script`` — ``import_script("bench")`` imports a module of ``scripts/`` by name, as the scripts
  import each other.
"""

import importlib
import importlib.util
import os
import sys
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest

from nnarray.datasets import loaders


def _importable(module):
    """True when ``module`` imports (a broken install counts as missing)."""
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001
        return False
    return True


def _probe_cupy():
    """``(usable, why not, warnings raised while importing)`` for CuPy and a CUDA device.

    Runs at collection, where pytest turns warnings into errors: CuPy's import may warn (a duplicate
    installation, a library it preloads), which must neither hide a working GPU nor pass silently, so the
    warnings are recorded and reported in the session's header.
    """
    if importlib.util.find_spec("cupy") is None:
        return False, "CuPy is not installed", []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            import cupy  # noqa: PLC0415

            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # noqa: BLE001 -- any failure is the reason reported
            return False, f"CuPy is installed but unusable: {type(exc).__name__}: {exc}", caught
    if count == 0:
        return False, "CuPy finds no CUDA device", caught
    return True, None, caught


HAS_TORCH = _importable("torch")
HAS_CUPY_GPU, CUPY_PROBLEM, CUPY_IMPORT_WARNINGS = _probe_cupy()
NO_GPU_REASON = f"needs CuPy and a CUDA device ({CUPY_PROBLEM}); run ci/gpu.sh on a GPU machine"
REQUIRE_GPU = os.environ.get("NNARRAY_REQUIRE_GPU", "") not in ("", "0")
NO_TORCH_REASON = "torch is not installed (bash ci/test.sh installs the CPU build when a local wheel exists)"

BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("array_api_strict", id="strict"),
    pytest.param("torch", id="torch", marks=pytest.mark.torch),
    # JAX's arrays are immutable: every update must be stored, never made in place. In the test extra, so
    # never skipped; the float64 comparisons need its 64-bit mode (see jax_x64).
    pytest.param("jax", id="jax"),
    pytest.param("cupy", id="cupy", marks=pytest.mark.gpu),
]


def pytest_configure(config):
    config.addinivalue_line("markers", "torch: needs PyTorch (skipped elsewhere, with the reason)")


def pytest_report_header(config):
    lines = [f"cupy: {'a CUDA device answers' if HAS_CUPY_GPU else CUPY_PROBLEM}"
             + ("; NNARRAY_REQUIRE_GPU: gpu tests fail without one" if REQUIRE_GPU else "")]
    lines += [f"cupy import warned: {w.category.__name__}: {w.message}" for w in CUPY_IMPORT_WARNINGS]
    return lines


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") is not None and not HAS_CUPY_GPU:
        if REQUIRE_GPU:
            pytest.fail(f"NNARRAY_REQUIRE_GPU is set, but this gpu test cannot run: {CUPY_PROBLEM}", pytrace=False)
        pytest.skip(NO_GPU_REASON)
    if item.get_closest_marker("torch") is not None and not HAS_TORCH:
        pytest.skip(NO_TORCH_REASON)


def enable_jax_x64():
    """Switch on JAX's 64-bit mode for this test process (float64 arrays; int64 indices).

    nnarray itself never changes JAX's global configuration: without the mode it refuses float64 with an
    error saying how to enable it (tests/test_jax.py checks that, and float32 training, in a fresh process).
    """
    import jax  # noqa: PLC0415

    jax.config.update("jax_enable_x64", True)


@pytest.fixture
def jax_x64():
    """JAX with its 64-bit mode on (:func:`enable_jax_x64`)."""
    enable_jax_x64()


@pytest.fixture(params=BACKENDS)
def backend(request):
    """A backend name: numpy, array_api_strict, torch (marked ``torch``), jax (64-bit mode on), cupy (marked
    ``gpu``)."""
    if request.param == "jax":
        enable_jax_x64()
    return request.param


@pytest.fixture(params=[p for p in BACKENDS if p.values[0] != "numpy"])
def other_backend(request):
    """Every backend of :data:`BACKENDS` but NumPy: for tests that compare a backend's run with NumPy's."""
    if request.param == "jax":
        enable_jax_x64()
    return request.param


def make_blobs(n=600, n_in=12, n_classes=3, seed=0, dtype=np.float64):
    """A small, learnable classification problem: Gaussian blobs around random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(n_classes, n_in))
    t = rng.integers(0, n_classes, size=n)
    X = centres[t] + rng.normal(size=(n, n_in))
    return X.astype(dtype), t.astype(np.int64)


@pytest.fixture(scope="session")
def blobs():
    """The :func:`make_blobs` factory: ``X, t = blobs(n=600, n_in=12, n_classes=3, seed=0)``."""
    return make_blobs


ROOT = Path(__file__).resolve().parents[1]
SCRIPTS_DIR = ROOT / "scripts"


def child_env(**extra):
    """The environment of a child Python that imports this checkout's nnarray: ``PYTHONPATH`` starts with
    the checkout and keeps the parent's entries (where ci/gpu.sh puts the carried wheels)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


@pytest.fixture(scope="session")
def import_script():
    """``import_script("bench")``: a module of scripts/, imported by name as the scripts import each other
    (a script's own folder is ``sys.path[0]``; here the folder is put there for the session)."""
    sys.path.insert(0, str(SCRIPTS_DIR))
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(str(SCRIPTS_DIR))


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """For the dataset tests: no $NNARRAY_DATA, a fresh $HOME, no system dirs, and a network that is always down."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("NNARRAY_DATA", raising=False)
    monkeypatch.setattr(loaders, "FASHION_MNIST_SYSTEM_DIRS", [])
    monkeypatch.setattr(loaders, "MNIST_SYSTEM_DIRS", [])
    calls = []

    def offline(url, timeout):
        calls.append((url, timeout))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(loaders, "_fetch", offline)
    return calls
