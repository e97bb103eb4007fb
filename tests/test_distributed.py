"""nnarray.distributed: the communicators, checked in-process (LocalComm, errors) and under
``mpiexec -n 2`` (MPIComm: all-reduce, broadcast, barrier, abort on one rank's exception).

The multi-process tests need mpi4py and an ``mpiexec`` (``pip install "nnarray[mpi]"``). Without them they
skip, unless ``$NNARRAY_REQUIRE_MPI=1`` (set by ci/test.sh), where a missing MPI is a failure: CI must run them.
Every launch is bounded by a timeout, so a hang fails the test instead of the CI job.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import nnarray as nn
import nnarray.distributed as dist

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "mpi_worker.py"
LAUNCH_TIMEOUT = 60  # seconds per mpiexec run; each scenario takes about a second


def find_mpiexec():
    """The ``mpiexec`` of this Python's environment (the MPI wheel puts it beside python), else on PATH."""
    env = os.environ.get("NNARRAY_MPIEXEC")
    if env:
        return env
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    return shutil.which("mpiexec")


def mpi_missing():
    """Why the multi-process tests cannot run here, or None."""
    if importlib.util.find_spec("mpi4py") is None:
        return f"mpi4py is not installed ({dist.INSTALL_HINT})"
    if find_mpiexec() is None:
        return f"no mpiexec beside {sys.executable} or on PATH ({dist.INSTALL_HINT})"
    return None


@pytest.fixture
def mpi():
    reason = mpi_missing()
    if reason is not None:
        if os.environ.get("NNARRAY_REQUIRE_MPI", "") not in ("", "0"):
            pytest.fail(f"NNARRAY_REQUIRE_MPI is set but MPI cannot run: {reason}")
        pytest.skip(reason)
    return find_mpiexec()


def mpi_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # Open MPI refuses to start as root without these (CI runs as root); MPICH ignores them.
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    # Two processes on two cores: one BLAS thread each.
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    return env


def launch(mpiexec, args, n=2, timeout=LAUNCH_TIMEOUT):
    """Run ``mpiexec -n n python ARGS``; a run past ``timeout`` fails the test (a hang is a bug)."""
    cmd = [mpiexec, "-n", str(n), sys.executable, *map(str, args)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=mpi_env(), cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(cmd)} did not finish within {timeout} s (a hang):\n{exc.stdout}\n{exc.stderr}")
    proc.seconds = time.perf_counter() - t0
    return proc


def run_scenario(mpiexec, scenario, tmp_path, n=2):
    proc = launch(mpiexec, [WORKER, scenario, tmp_path], n=n)
    assert proc.returncode == 0, f"{scenario} failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    for r in range(n):
        assert f"OK {scenario} rank {r}/{n}" in proc.stdout
    return [json.loads((tmp_path / f"{scenario}.rank{r}.json").read_text()) for r in range(n)]


# ----------------------------------------------------------------- in-process
def test_local_comm_is_a_do_nothing_communicator():
    comm = dist.LocalComm()
    assert isinstance(comm, dist.Communicator)
    buf = np.arange(3.0)
    assert comm.allreduce_sum(buf) is buf and buf.tolist() == [0.0, 1.0, 2.0]
    assert comm.bcast_array(buf) is buf
    obj = {"a": 1}
    assert comm.bcast_object(obj) is obj
    comm.barrier()
    with pytest.raises(ValueError, match="root"):
        comm.bcast_array(buf, root=1)
    with pytest.raises(SystemExit):
        comm.abort(3)
    assert dist.get_comm(None).size == 1


def test_get_comm_rejects_non_communicators():
    with pytest.raises(TypeError, match="comm: expected a communicator.*allreduce_sum"):
        dist.get_comm(object())


class _Duck:
    """A communicator of its own (not derived from any of nnarray's): the protocol is all it needs."""

    rank, size, local_rank = 0, 1, 0

    def allreduce_sum(self, buf):
        return buf

    def bcast_array(self, buf, root=0):
        return buf

    def bcast_object(self, obj, root=0):
        return obj

    def barrier(self):
        return None

    def abort(self, code=1):
        raise SystemExit(code)


def test_get_comm_takes_any_implementation_of_the_protocol_and_names_what_is_missing():
    duck = _Duck()
    assert dist.get_comm(duck) is duck
    lame = type("Lame", (), {k: v for k, v in vars(_Duck).items() if k != "barrier"})()
    with pytest.raises(TypeError, match=r"Lame lacks barrier$"):
        dist.get_comm(lame)


def _fake_cupy_backend(device_id):
    import array_api_compat.numpy as xp

    from nnarray.backend import Backend

    return Backend("cupy", xp, SimpleNamespace(id=device_id))


def test_check_device_refuses_a_net_on_another_gpu_than_the_communicators():
    comm = SimpleNamespace(rank=1, size=2, device_id=1)
    dist.check_device(comm, _fake_cupy_backend(1))  # the same device
    dist.check_device(comm, nn.get_backend("numpy"))  # host arrays: reduced through the host
    dist.check_device(SimpleNamespace(rank=0, size=2), _fake_cupy_backend(0))  # a communicator without a device
    with pytest.raises(ValueError,
                       match=r"net: its arrays are on CUDA device 0, but the communicator of rank 1 runs on device 1"):
        dist.check_device(comm, _fake_cupy_backend(0))


def test_fit_checks_the_device_before_any_work(blobs):
    X, t = blobs(n=40, n_in=4, n_classes=3)
    net = nn.MLP([4, 5, 3], backend="numpy", seed=0)
    before = {k: v.copy() for k, v in net.params.items()}
    net.backend = _fake_cupy_backend(0)
    comm = _DoublingComm()
    comm.device_id = 1
    with pytest.raises(ValueError, match="CUDA device 0.*device 1"):
        nn.fit(net, nn.SGD(0.1), X, t, epochs=1, batch_size=10, options=nn.FitOptions(comm=comm))
    assert comm.calls == 0
    assert all(np.array_equal(net.params[k], v) for k, v in before.items())


def test_release_destroys_nccl_then_the_host_communicator_and_abort_abandons_them():
    events = []

    class Nccl:
        def destroy(self):
            events.append("nccl destroy")

        def abort(self):
            events.append("nccl abort")

    class Node:
        def Free(self):
            events.append("node free")

    def held(finalized=False):
        h = dist._Held(SimpleNamespace(Is_finalized=lambda: finalized), Node())
        h.nccl = Nccl()
        return h

    h = held()
    h.release()
    h.release()  # idempotent
    assert events == ["nccl destroy", "node free"]
    events.clear()
    held().release(abandon=True)  # MPIComm.abort: NCCL's abort, and MPI_Abort ends the rest
    assert events == ["nccl abort"]
    events.clear()
    held(finalized=True).release()  # after MPI_Finalize, no MPI call
    assert events == ["nccl destroy"]


class _Node:
    """A stand-in for the host's MPI communicator: ``allgather`` returns what the ranks of the host give."""

    def __init__(self, others):
        self.others, self.calls = others, 0

    def allgather(self, value):
        self.calls += 1
        return [value, *self.others]


def test_nccl_eligibility_comes_from_the_ranks_pci_bus_ids():
    # A rank that cannot use NCCL still takes part in the host's gathering (or the others would hang).
    node = _Node(["0000:3B:00.0"])
    assert dist._gpu_sharing(node, "nccl=False") == "nccl=False" and node.calls == 1
    # CUDA_VISIBLE_DEVICES shows each rank one GPU as device 0: distinct bus ids, NCCL is fine.
    assert dist._shared_gpu_reason(["0000:3B:00.0", "0000:5E:00.0", None]) is None
    assert "local ranks 1 and 2 share the GPU at PCI bus 0000:5E:00.0" in dist._shared_gpu_reason(
        ["0000:3B:00.0", "0000:5E:00.0", "0000:5E:00.0"]
    )


def test_allreduce_gradients_single_process_is_identity():
    import array_api_compat.numpy as xp

    g = {"W1": xp.ones((2, 3)), "b1": xp.zeros((3,))}
    assert dist.allreduce_gradients(g, dist.LocalComm(), xp) is g


class _DoublingComm(dist.LocalComm):
    """A fake two-rank communicator whose all-reduce doubles (both ranks holding the same values)."""

    size = 2
    calls = 0

    def allreduce_sum(self, buf):
        self.calls += 1
        return buf * 2


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_allreduce_gradients_packs_one_buffer(backend):
    """One all-reduce per step, of every gradient at once, unpacked to the original shapes (any namespace)."""
    import nnarray as nn

    be = nn.get_backend(backend)
    xp = be.xp
    rng = np.random.default_rng(0)
    host = {"W1": rng.normal(size=(4, 3)), "b1": rng.normal(size=3), "W2": rng.normal(size=(3, 2)),
            "b2": rng.normal(size=2)}
    grads = {k: be.asarray(v, dtype=xp.float64) for k, v in host.items()}
    comm = _DoublingComm()
    out = dist.allreduce_gradients(grads, comm, xp)
    assert comm.calls == 1
    assert list(out) == list(host)
    for k, v in host.items():
        assert tuple(out[k].shape) == v.shape
        np.testing.assert_array_equal(nn.to_numpy(out[k]), 2 * v)


def test_mpicomm_without_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes "import mpi4py" raise ImportError
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)
    with pytest.raises(dist.MPIUnavailableError, match=r'pip install "nnarray\[mpi\]"'):
        dist.MPIComm()


# -------------------------------------------------------------- mpiexec -n 2
def test_allreduce_sum_over_two_processes(mpi, tmp_path):
    res = run_scenario(mpi, "allreduce", tmp_path)
    # Every rank ends with the same sums: 0..4 + (0..4 + 10) = 2·(0..4) + 10.
    for r in res:
        assert r["float64"] == [10.0, 12.0, 14.0, 16.0, 18.0]
        assert r["int64"] == [10, 12, 14, 16, 18]
        assert r["grads_W1"] == [[3.0] * 4] * 3
    assert res[0] == res[1]


def test_broadcast_over_two_processes(mpi, tmp_path):
    res = run_scenario(mpi, "bcast", tmp_path)
    for r in res:
        assert r["a"] == [0.0] * 6 and r["b"] == [101] * 3 and r["seed"] == 7
    # Both processes run on this host: the local rank is the rank.
    assert [r["local_rank"] for r in res] == [0, 1]


def test_barrier_waits_for_every_process(mpi, tmp_path):
    run_scenario(mpi, "barrier", tmp_path)


@pytest.mark.parametrize("scenario", ["abort_guarded", "abort_uncaught"])
def test_an_exception_on_one_rank_aborts_the_job(mpi, tmp_path, scenario):
    """Rank 1 raises while rank 0 waits in an all-reduce: the job must end, non-zero, with rank 1's traceback."""
    proc = launch(mpi, [WORKER, scenario, tmp_path], timeout=45)
    assert proc.returncode != 0
    assert "[rank 1/2]" in proc.stderr and "deliberate" in proc.stderr and "RuntimeError" in proc.stderr
    assert not list(tmp_path.glob(f"{scenario}.rank*.json")), "a rank went on after the failure"
    assert proc.seconds < 30, f"the abort took {proc.seconds:.1f} s"


# ------------------------------------------------------------------ GPU (ci/gpu.sh)
@pytest.mark.gpu  # skipped without CuPy and CUDA (conftest), failed instead under NNARRAY_REQUIRE_GPU=1
@pytest.mark.parametrize("n", [1, 2])
def test_cupy_arrays_through_nccl_and_host_staging(mpi, tmp_path, n):
    """One rank: NCCL (a one-rank communicator) and host staging; two ranks on one GPU: host staging.

    Each is checked against the sums computed on the host. Needs CuPy, a CUDA device and MPI.
    """
    res = run_scenario(mpi, "gpu_paths", tmp_path, n=n)
    if n == 1:
        assert res[0]["paths"] == {"True": "nccl", "False": "host-staged"}
    else:
        assert all(r["paths"] == {"None": "host-staged"} or r["paths"]["True"] == "nccl" for r in res)


# --------------------------------------------------- fit(comm=MPIComm()) exactness
def test_two_processes_train_exactly_like_one(mpi, tmp_path):
    """``mpiexec -n 2`` fit equals single-process fit: 1e-12 relative in float64, the guide's float32
    tolerances (rtol 1e-3 after ≤100 steps); 1- and 2-hidden-layer nets, sum and mean, momentum, Adam
    (when nn.Adam exists), a partial last batch (203 = 10·20 + 3 rows, split 1/2 over the ranks; and
    203 = 202 + 1, where rank 0's share of the last batch is empty), fast
    paths on and off. Every rank holds bitwise the same parameters and History (checked in the worker)."""
    _assert_exact(run_scenario(mpi, "fit_exact", tmp_path)[0])


@pytest.mark.gpu
def test_two_processes_train_exactly_like_one_on_cupy(mpi, tmp_path):
    """The same on CuPy: two ranks on this host's GPU(s), gradients through NCCL (one GPU each) or host staging."""
    _assert_exact(run_scenario(mpi, "fit_exact_cupy", tmp_path)[0])


def _assert_exact(res):
    assert len(res) >= 24
    for r in res:
        c = r["case"]
        tol = 1e-12 if c["dtype"] == "float64" else 1e-3
        assert r["param_rel"] <= tol, f"parameters differ by {r['param_rel']:.2e} relative: {c}"
        assert r["loss_rel"] <= tol, f"train loss differs by {r['loss_rel']:.2e} relative: {c}"
        assert r["samples"] == r["ref_samples"]
        if c["dtype"] == "float64":
            assert r["acc_equal"] and r["val_acc_equal"], c


def test_rank_zero_state_wins_and_ranks_stop_together(mpi, tmp_path):
    """Different weights, optimizer state, RNG and history per rank before fit: the run equals one process
    started from rank 0's; callbacks run on rank 0 only; its StopTraining and a divergence stop every rank."""
    r0, r1 = run_scenario(mpi, "fit_sync", tmp_path)
    assert r0["param_rel"] <= 1e-12 and r0["loss_rel"] <= 1e-12, r0
    assert r0["epochs"] == r1["epochs"] == r0["ref_epochs"] == [1, 2, 3]  # rank 0's 1 earlier epoch, 2 more
    assert r0["train_loss"] == r1["train_loss"]
    assert r0["calls"] == [2, 3] and r1["calls"] == []
    assert r0["diverged"] == r1["diverged"] == "training diverged in epoch 1"


# ------------------------------------------------------------------------- command line
def test_cli_distributed_trains_once_and_resumes_on_another_process_count(mpi, tmp_path):
    """``mpiexec -n 2 nnarray train --distributed``: one line per epoch (rank 0), one set of outputs; resumed
    from its checkpoint in one process it ends where a single-process run of all epochs ends."""
    pytest.importorskip("sklearn")  # the digits dataset
    args = ["--dataset", "digits", "--backend", "numpy", "--dtype", "float64", "--hidden", "32",
            "--batch-size", "64", "--no-plots"]  # fmt: skip
    dist_out, single_out = tmp_path / "dist", tmp_path / "single"
    proc = launch(mpi, ["-m", "nnarray", "train", "--distributed", *args, "--epochs", "2", "--out", dist_out])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("epoch   1/2") == 1 and proc.stdout.count("epoch   2/2") == 1
    assert proc.stdout.count("done: test accuracy") == 1
    assert sorted(p.name for p in dist_out.iterdir()) == ["best.npz", "checkpoint.npz", "history.csv", "history.json",
                                                          "model.npz"]
    env = mpi_env()
    resume = [sys.executable, "-m", "nnarray", "train", "--distributed", *args, "--epochs", "3", "--quiet",
              "--resume", str(dist_out / "checkpoint.npz"), "--out", str(dist_out)]  # fmt: skip
    single = [sys.executable, "-m", "nnarray", "train", *args, "--epochs", "3", "--quiet", "--out", str(single_out)]
    for cmd in (resume, single):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT, env=env, cwd=ROOT)
        assert p.returncode == 0, p.stderr
    a = json.loads((dist_out / "history.json").read_text())["history"]
    b = json.loads((single_out / "history.json").read_text())["history"]
    assert a["epoch"] == b["epoch"] == [1, 2, 3]
    for col in ("train_loss", "val_loss"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-12, atol=0)
    assert a["val_accuracy"] == b["val_accuracy"]
