"""Programs that tests/test_distributed.py runs under ``mpiexec -n P python tests/mpi_worker.py SCENARIO OUTDIR``.

Each scenario checks its own results on every rank (an AssertionError aborts the job with a non-zero
status) and writes ``OUTDIR/<scenario>.rank<r>.json`` for the test to inspect. Nothing runs on import
(pytest imports this file for its doctests).
"""

import json
import os
import sys
import time


def _out(outdir, scenario, rank, payload):
    with open(os.path.join(outdir, f"{scenario}.rank{rank}.json"), "w") as f:
        json.dump(payload, f)


def allreduce(comm, outdir):
    import numpy as np

    import array_api_compat.numpy as xp
    from nnarray.distributed import allreduce_gradients

    r, P = comm.rank, comm.size
    results = {}
    for dtype in ("float64", "float32", "int64"):
        buf = (np.arange(5) + 10 * r).astype(dtype)
        out = comm.allreduce_sum(buf)
        assert out is buf, "NumPy buffers are reduced in place"
        expected = P * np.arange(5) + 10 * sum(range(P))
        np.testing.assert_array_equal(buf, expected.astype(dtype))
        results[dtype] = buf.tolist()
    # The packed all-reduce of a gradient dict: shapes kept, sums exact for small integers.
    grads = {
        "W1": xp.full((3, 4), float(r + 1)),
        "b1": xp.full((4,), 2.0 * (r + 1)),
        "W2": xp.reshape(xp.arange(8, dtype=xp.float64), (4, 2)) * (r + 1),
        "b2": xp.full((2,), -1.0),
    }
    red = allreduce_gradients(grads, comm, xp)
    s = P * (P + 1) / 2
    assert list(red) == list(grads)
    for k in grads:
        assert red[k].shape == grads[k].shape, k
    np.testing.assert_array_equal(red["W1"], np.full((3, 4), s))
    np.testing.assert_array_equal(red["b1"], np.full((4,), 2 * s))
    np.testing.assert_array_equal(red["W2"], np.arange(8.0).reshape(4, 2) * s)
    np.testing.assert_array_equal(red["b2"], np.full((2,), -float(P)))
    # Other namespaces go through the host and come back in their own namespace.
    import array_api_strict as xs

    sbuf = xs.asarray([1.0, 2.0 * r], dtype=xs.float64)
    sred = comm.allreduce_sum(sbuf)
    assert type(sred) is type(sbuf)
    assert float(sred[0]) == P and float(sred[1]) == 2.0 * sum(range(P))
    results["grads_W1"] = red["W1"].tolist()
    _out(outdir, "allreduce", r, results)


def bcast(comm, outdir):
    import numpy as np

    r, P = comm.rank, comm.size
    a = np.full(6, float(r))
    comm.bcast_array(a, root=0)
    np.testing.assert_array_equal(a, np.zeros(6))
    b = np.full(3, 100 + r, dtype=np.int64)
    comm.bcast_array(b, root=P - 1)
    np.testing.assert_array_equal(b, np.full(3, 100 + P - 1))
    obj = {"seed": 7, "w": np.arange(3.0), "rng": np.random.default_rng(5).bit_generator.state} if r == 0 else None
    got = comm.bcast_object(obj, root=0)
    assert got["seed"] == 7 and got["w"].tolist() == [0.0, 1.0, 2.0]
    assert got["rng"] == np.random.default_rng(5).bit_generator.state
    _out(outdir, "bcast", r, {"a": a.tolist(), "b": b.tolist(), "seed": got["seed"], "local_rank": comm.local_rank})


def barrier(comm, outdir):
    # The last rank writes a marker only after a delay; after the barrier every rank must see it.
    marker = os.path.join(outdir, "barrier.marker")
    if comm.rank == comm.size - 1:
        time.sleep(0.5)
        with open(marker, "w") as f:
            f.write("written before the barrier")
    comm.barrier()
    assert os.path.exists(marker), f"rank {comm.rank} left the barrier before the last rank reached it"
    _out(outdir, "barrier", comm.rank, {"seen": True})


def abort_guarded(comm, outdir):
    """Rank 1 fails inside abort_on_error while rank 0 waits in an all-reduce that never completes."""
    import numpy as np

    from nnarray.distributed import abort_on_error

    with abort_on_error(comm):
        if comm.rank == 1:
            raise RuntimeError("deliberate failure on rank 1")
        comm.allreduce_sum(np.zeros(3))
        time.sleep(60)  # not reached: rank 1 never joins; the abort must end this process
    _out(outdir, "abort_guarded", comm.rank, {"survived": True})


def abort_uncaught(comm, outdir):
    """The same failure, uncaught: MPIComm's excepthook must end the job."""
    import numpy as np

    if comm.rank == 1:
        raise RuntimeError("deliberate uncaught failure on rank 1")
    comm.allreduce_sum(np.zeros(3))
    _out(outdir, "abort_uncaught", comm.rank, {"survived": True})


def gpu_paths(comm, outdir):
    """CuPy arrays through NCCL and through host staging, checked against the same sums on the host.

    Run on a CUDA machine, as one process (NCCL with one rank, and staging) or under ``mpiexec -n 2``
    on one GPU (two ranks cannot share a device in NCCL, so ``nccl=None`` stages through the host).
    """
    import cupy
    import numpy as np

    import array_api_compat.cupy as xp
    from nnarray.distributed import MPIComm, allreduce_gradients

    paths = {}
    choices = [True, False] if comm.size <= cupy.cuda.runtime.getDeviceCount() else [None]
    for nccl in choices:
        c = MPIComm(nccl=nccl)
        c.force_reduce = True  # exercise the packing even with one rank
        rng = np.random.default_rng(100 + c.rank)
        host = {"W1": rng.normal(size=(7, 5)), "b1": rng.normal(size=5), "W2": rng.normal(size=(5, 3)), "b2": rng.normal(size=3)}
        every = [{k: np.random.default_rng(100 + r).normal(size=v.shape) for k, v in host.items()} for r in range(c.size)]
        for dtype in ("float64", "float32"):
            grads = {k: xp.asarray(v, dtype=getattr(xp, dtype)) for k, v in host.items()}
            red = allreduce_gradients(grads, c, xp)
            for k in host:
                assert isinstance(red[k], cupy.ndarray)
                want = sum(e[k] for e in every).astype(dtype)
                np.testing.assert_allclose(red[k].get(), want, rtol=1e-6 if dtype == "float32" else 1e-15)
            b = xp.full((4,), float(c.rank), dtype=getattr(xp, dtype))
            c.bcast_array(b, root=0)
            assert b.get().tolist() == [0.0] * 4
        cupy.cuda.get_current_stream().synchronize()
        paths[str(nccl)] = c.gpu_path
    _out(outdir, "gpu_paths", comm.rank, {"paths": paths, "device": comm.device_id})


SCENARIOS = {f.__name__: f for f in (allreduce, bcast, barrier, abort_guarded, abort_uncaught, gpu_paths)}


def main(argv):
    scenario, outdir = argv[1], argv[2]
    from nnarray.distributed import MPIComm

    comm = MPIComm()
    SCENARIOS[scenario](comm, outdir)
    print(f"OK {scenario} rank {comm.rank}/{comm.size}", flush=True)


if __name__ == "__main__":
    main(sys.argv)
