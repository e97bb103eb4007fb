"""The plumbing of ci/gpu.sh, checked where CI runs: a lent GPU's first run must not be lost to it.

* both scripts parse (``bash -n``); the stage caps add up inside the budget (``GPU_SH_PLAN=1``);
* a dry run of stages a and c on the CPU (``NNARRAY_GPU_SH_CPU=1 GPU_SH_STAGES=a,c``, about 20 s): the carried
  path, the imports, the kernel-cache warm-up and the parity stage work from this Python;
* the CuPy probe of tests/conftest.py: a warning while importing CuPy neither hides a GPU nor raises, and a
  broken CuPy says why; child Pythons keep the parent's PYTHONPATH (where ci/gpu.sh puts carried wheels).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import conftest

ROOT = Path(__file__).resolve().parents[1]
GPU_SH = ROOT / "ci" / "gpu.sh"


@pytest.mark.parametrize("script", ["gpu.sh", "prepare_gpu_carry.sh"])
def test_scripts_parse(script):
    res = subprocess.run(["bash", "-n", str(ROOT / "ci" / script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("budget", [300, 480])
def test_stage_caps_add_up_inside_the_budget(budget):
    env = {**os.environ, "GPU_SH_PLAN": "1", "GPU_SH_BUDGET": str(budget)}
    res = subprocess.run(["bash", str(GPU_SH)], capture_output=True, text=True, env=env, timeout=30)
    assert res.returncode == 0, res.stderr
    caps = {m[0]: int(m[1]) for m in re.findall(r"^cap (\w+) (\d+)$", res.stdout, re.M)}
    assert list(caps) == ["imports", "cuda", "mpi", "warm", "gpu_tests", "distributed", "parity", "train", "bench",
                          "tta"]
    assert sum(caps.values()) <= budget - 15, caps  # 15 s left for the checksums, nvidia-smi and the notes
    assert min(caps.values()) > 0
    if budget == 300:  # the test stages are not starved at the default budget
        assert caps["gpu_tests"] >= 45 and caps["distributed"] >= 40, caps


def test_cpu_dry_run_of_stages_a_and_c(tmp_path):
    """The carried path, the imports, the warm-up and the parity stage, end to end from this Python."""
    out = tmp_path / "out"
    env = {**os.environ, "NNARRAY_GPU_SH_CPU": "1", "GPU_SH_STAGES": "a,c", "PYTHON": sys.executable, "OUT": str(out)}
    for var in ("GPU_SH_BUDGET", "GPU_SH_PLAN", "CUPY_TF32", "NNARRAY_REQUIRE_GPU"):
        env.pop(var, None)
    res = subprocess.run(["bash", str(GPU_SH)], capture_output=True, text=True, env=env, timeout=90, cwd=tmp_path)
    summary = (out / "summary.txt").read_text()
    assert res.returncode == 0, summary + res.stdout[-3000:] + res.stderr[-3000:]
    for line in ("(a) imports and data: ok", "(a) kernel cache warm-up: ok", "(c) parity: ok"):
        assert line in summary, summary
    assert "(b) " not in summary and "(g) " not in summary  # not selected
    report = json.loads((out / "parity.json").read_text())
    strict = report["backends"]["strict"]
    assert strict["available"] and strict["ok"]
    assert set(strict["checks"]) == {"float64, 300 steps", "float32, 100 steps", "float32, one forward/backward"}
    assert sorted(p.name for p in out.iterdir()) == ["parity.json", "parity.log", "summary.txt"]


def _fake_cupy(path, body):
    pkg = path / "cupy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(body)


@pytest.fixture
def fresh_cupy(tmp_path, monkeypatch):
    """A stand-in ``cupy`` package written to ``tmp_path``, imported afresh by the probe and forgotten after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    saved = sys.modules.pop("cupy", None)
    yield tmp_path
    sys.modules.pop("cupy", None)
    if saved is not None:
        sys.modules["cupy"] = saved


def test_cupy_probe_survives_a_warning_while_importing(fresh_cupy):
    _fake_cupy(fresh_cupy, "import types, warnings\n"
                           "warnings.warn('CuPy may not function correctly: duplicate installations', UserWarning)\n"
                           "cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))\n")
    usable, why, caught = conftest._probe_cupy()
    assert usable and why is None
    assert [str(w.message) for w in caught] == ["CuPy may not function correctly: duplicate installations"]


def test_cupy_probe_says_why_cupy_is_unusable(fresh_cupy):
    _fake_cupy(fresh_cupy, "import types\n"
                           "def count():\n    raise RuntimeError('cudaErrorInsufficientDriver')\n"
                           "cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=count))\n")
    usable, why, _ = conftest._probe_cupy()
    assert not usable
    assert why == "CuPy is installed but unusable: RuntimeError: cudaErrorInsufficientDriver"


def test_child_pythons_keep_the_parents_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    env = conftest.child_env(EXTRA="1")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), str(tmp_path)]
    assert env["EXTRA"] == "1"
