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
    import array_api_compat.numpy as xp
    import numpy as np

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
    # A second communicator, closed twice (idempotent): its host communicator is freed before MPI finalises.
    from nnarray.distributed import MPIComm

    assert comm._finalizer.alive and comm._finalizer.atexit, "the communicator is released at exit, before MPI_Finalize"
    other = MPIComm(gpu=False)
    other.close()
    other.close()
    assert other._held.node is None
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
    """The same failure, uncaught: the excepthook installed by ``main`` (install_excepthook) must end the job."""
    import numpy as np

    if comm.rank == 1:
        raise RuntimeError("deliberate uncaught failure on rank 1")
    comm.allreduce_sum(np.zeros(3))
    _out(outdir, "abort_uncaught", comm.rank, {"survived": True})


class _Packing:
    """A one-rank communicator presented as a larger one, so that ``allreduce_gradients`` packs the
    gradients and reduces them (it returns them untouched when ``size == 1``): the one-rank NCCL and
    host-staged paths on a single GPU. The sums are still over the real ranks."""

    def __init__(self, comm):
        self.comm = comm
        self.size = max(comm.size, 2)

    def allreduce_sum(self, buf):
        return self.comm.allreduce_sum(buf)


def gpu_paths(comm, outdir):
    """CuPy arrays through NCCL and through host staging, checked against the same sums on the host.

    Run on a CUDA machine, as one process (NCCL with one rank, and staging) or under ``mpiexec -n 2``
    on one GPU (two ranks share its PCI bus id, and NCCL refuses two ranks on one device, so
    ``nccl=None`` stages through the host).
    """
    import array_api_compat.cupy as xp
    import cupy
    import numpy as np

    from nnarray.distributed import MPIComm, allreduce_gradients

    paths = {}
    choices = [True, False] if comm.size <= cupy.cuda.runtime.getDeviceCount() else [None]
    for nccl in choices:
        c = MPIComm(nccl=nccl)
        rng = np.random.default_rng(100 + c.rank)
        host = {"W1": rng.normal(size=(7, 5)), "b1": rng.normal(size=5), "W2": rng.normal(size=(5, 3)),
                "b2": rng.normal(size=3)}
        every = [{k: np.random.default_rng(100 + r).normal(size=v.shape) for k, v in host.items()}
                 for r in range(c.size)]
        for dtype in ("float64", "float32"):
            grads = {k: xp.asarray(v, dtype=getattr(xp, dtype)) for k, v in host.items()}
            red = allreduce_gradients(grads, _Packing(c), xp)
            for k in host:
                assert isinstance(red[k], cupy.ndarray)
                want = sum(e[k] for e in every).astype(dtype)
                np.testing.assert_allclose(red[k].get(), want, rtol=1e-6 if dtype == "float32" else 1e-15)
            b = xp.full((4,), float(c.rank), dtype=getattr(xp, dtype))
            c.bcast_array(b, root=0)
            assert b.get().tolist() == [0.0] * 4
        cupy.cuda.get_current_stream().synchronize()
        paths[str(nccl)] = c.gpu_path
        c.close()  # every rank: NCCL's destroy waits for the ranks of the host
        c.close()  # idempotent
    _out(outdir, "gpu_paths", comm.rank, {"paths": paths, "device": comm.device_id})


def _fit_case(case, comm):
    """Train one configuration of ``FIT_CASES``; returns host parameters and the History."""
    import numpy as np

    import nnarray as nn

    rng = np.random.default_rng(case.get("data_seed", 3))
    n, n_in, C = case["n"], 12, 4
    centres = rng.normal(scale=2.0, size=(C, n_in))
    t = rng.integers(0, C, size=n)
    X = (centres[t] + rng.normal(size=(n, n_in))).astype(case["dtype"])
    Xv, tv = X[: n // 3], t[: n // 3]
    net = nn.MLP([n_in, *case["hidden"], C], backend=case.get("backend", "numpy"), dtype=case["dtype"],
                 seed=case.get("seed", 0))
    if case["opt"] == "adam":
        opt = nn.Adam(lr=0.01)
    else:
        opt = nn.SGD(lr=case["lr"], momentum=case.get("momentum", 0.0))
    hist = nn.fit(
        net, opt, X, t, epochs=case["epochs"], batch_size=case["batch"], reduction=case["reduction"], seed=5,
        validation=(Xv, tv), options=nn.FitOptions(fast=case["fast"], comm=comm))  # fmt: skip
    return {k: nn.to_numpy(v).copy() for k, v in net.params.items()}, hist


FIT_CASES = [
    dict(hidden=[16], reduction="sum", opt="sgd", lr=0.002, batch=20),
    dict(hidden=[16], reduction="mean", opt="sgd", lr=0.1, batch=20),
    dict(hidden=[16, 8], reduction="mean", opt="sgd", lr=0.1, momentum=0.9, batch=20),
    dict(hidden=[16, 8], reduction="sum", opt="sgd", lr=0.002, momentum=0.9, batch=32),
    dict(hidden=[16, 8], reduction="mean", opt="adam", batch=20),
    dict(hidden=[16], reduction="mean", opt="sgd", lr=0.1, batch=1000),  # one batch: the whole set
    # 203 = 202 + 1: the last global batch has one row, so rank 0's share is empty (it contributes zeros).
    dict(hidden=[16, 8], reduction="mean", opt="sgd", lr=0.1, momentum=0.9, batch=202),
    dict(hidden=[16], reduction="sum", opt="sgd", lr=0.002, batch=202),
]


def fit_exact(comm, outdir, backend="numpy", name="fit_exact"):
    """``mpiexec -n P`` training against the single-process run (rank 0 runs both), every case of
    FIT_CASES in float64 and float32, fast paths on and off; N = 203 so that the last batch is partial.
    On ``backend`` (``fit_exact_cupy``: CuPy, whose arrays go through NCCL or host staging)."""
    import numpy as np

    import nnarray as nn

    results = []
    for base in FIT_CASES:
        if base["opt"] == "adam" and not hasattr(nn, "Adam"):
            continue
        for dtype in ("float64", "float32"):
            for fast in (None, False):
                case = dict(base, dtype=dtype, fast=fast, n=203, epochs=3, backend=backend)
                params, hist = _fit_case(case, comm)
                # Every rank must hold the same parameters and History (bitwise: same updates).
                others = comm.bcast_object((params, hist.to_dict()), root=comm.size - 1)
                assert all(np.array_equal(params[k], others[0][k]) for k in params), "ranks disagree on parameters"
                mine = hist.to_dict()
                for col in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "samples"):
                    assert mine[col] == others[1][col], f"ranks disagree on {col}"
                if comm.rank != 0:
                    continue
                ref_params, ref_hist = _fit_case(case, None)
                rel = max(
                    float(np.max(np.abs(params[k] - ref_params[k])) / np.max(np.abs(ref_params[k]))) for k in params
                )
                loss_rel = max(abs(a - b) / abs(b) for a, b in zip(hist.train_loss, ref_hist.train_loss, strict=True))
                results.append(
                    dict(
                        case={k: v for k, v in case.items()},
                        param_rel=rel,
                        loss_rel=loss_rel,
                        acc_equal=hist.train_accuracy == ref_hist.train_accuracy,
                        val_acc_equal=hist.val_accuracy == ref_hist.val_accuracy,
                        samples=hist.samples,
                        ref_samples=ref_hist.samples,
                    )
                )
    _out(outdir, name, comm.rank, results)


def fit_sync(comm, outdir):
    """Rank 0's start wins: ranks begin with different weights, optimizer state, RNG and history (as after
    a resume that only rank 0 did right); the run must equal one process started from rank 0's state.
    Callbacks run on rank 0 only and its StopTraining stops every rank; divergence stops all together."""
    import numpy as np

    import nnarray as nn

    rng = np.random.default_rng(3)
    X = rng.normal(size=(150, 6))
    t = rng.integers(0, 3, size=150)

    def start(r):
        net = nn.MLP([6, 10, 3], backend="numpy", dtype="float64", seed=r)
        opt = nn.SGD(lr=0.05, momentum=0.9)
        # A rank-dependent earlier run leaves rank-dependent velocities and history (a "resume").
        hist = nn.fit(net, opt, X[: 40 + r], t[: 40 + r], epochs=1 + r, batch_size=16, seed=r)
        return net, opt, np.random.default_rng(100 + r), hist

    net, opt, g, hist = start(comm.rank)
    calls = []
    stop_at = 1 + 2  # rank 0's earlier run had 1 epoch; its callback stops after 2 more

    def cb(rec):
        calls.append(rec["epoch"])
        if rec["epoch"] == stop_at:
            raise nn.StopTraining

    hist = nn.fit(net, opt, X, t, epochs=5, batch_size=32, seed=g, callbacks=cb,
                  options=nn.FitOptions(history=hist, comm=comm))
    assert opt.hooks == [], f"fit left its all-reduce hook on the optimizer: {opt.hooks}"
    params = {k: v.copy() for k, v in net.params.items()}
    out = {"calls": calls, "epochs": hist.epoch, "train_loss": hist.train_loss}
    if comm.rank == 0:
        rnet, ropt, rg, rhist = start(0)
        calls0 = []

        def cb0(rec):
            calls0.append(rec["epoch"])
            if rec["epoch"] == stop_at:
                raise nn.StopTraining

        rhist = nn.fit(rnet, ropt, X, t, epochs=5, batch_size=32, seed=rg, callbacks=cb0,
                       options=nn.FitOptions(history=rhist))
        out["ref_epochs"] = rhist.epoch
        out["param_rel"] = max(float(np.max(np.abs(params[k] - rnet.params[k])) / np.max(np.abs(rnet.params[k])))
                               for k in params)
        out["loss_rel"] = max(abs(a - b) / abs(b) for a, b in zip(hist.train_loss, rhist.train_loss, strict=True))
    # Divergence: every rank must raise at the same epoch (decided from all-reduced metrics).
    net2 = nn.MLP([6, 16, 3], backend="numpy", dtype="float32", seed=0)
    opt2 = nn.SGD(lr=1e3)
    try:
        nn.fit(net2, opt2, X * 50, t, epochs=3, batch_size=20, options=nn.FitOptions(comm=comm))
        out["diverged"] = False
    except nn.TrainingDivergedError as exc:
        out["diverged"] = str(exc).split(":")[0]
    assert opt2.hooks == [], f"fit left its all-reduce hook on the optimizer after an error: {opt2.hooks}"
    _out(outdir, "fit_sync", comm.rank, out)


def fit_exact_cupy(comm, outdir):
    fit_exact(comm, outdir, backend="cupy", name="fit_exact_cupy")


SCENARIOS = {
    f.__name__: f
    for f in (allreduce, bcast, barrier, abort_guarded, abort_uncaught, gpu_paths, fit_exact, fit_exact_cupy, fit_sync)
}


def main(argv):
    scenario, outdir = argv[1], argv[2]
    from nnarray.distributed import MPIComm, install_excepthook

    before = sys.excepthook
    comm = MPIComm()
    assert sys.excepthook is before, "constructing an MPIComm must leave sys.excepthook alone"
    install_excepthook(comm)  # as a launcher does: abort_uncaught relies on it
    SCENARIOS[scenario](comm, outdir)
    print(f"OK {scenario} rank {comm.rank}/{comm.size}", flush=True)


if __name__ == "__main__":
    main(sys.argv)
