"""The CuPy graph fast path against the generic path (GPU), and what of it can be checked on a CPU."""

import os
import shutil
import subprocess

import numpy as np
import pytest

import nnarray as nn
from nnarray.fast import cupy_graph


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
def test_gemm_geometry_reads_the_intended_operands(trans_a, trans_b):
    """Emulate the kernel's indexing (op(A)(i,k) = A.flat[i*sa0 + k*sa1]) on the host."""
    rng = np.random.default_rng(0)
    opA, opB = rng.normal(size=(5, 7)), rng.normal(size=(7, 3))
    A = np.ascontiguousarray(opA.T) if trans_a else opA
    B = np.ascontiguousarray(opB.T) if trans_b else opB
    M, N, K, sa0, sa1, sb0, sb1 = cupy_graph.gemm_geometry(A.shape, trans_a, B.shape, trans_b)
    assert (M, N, K) == (5, 3, 7)
    a, b = A.reshape(-1), B.reshape(-1)
    C = np.array([[sum(a[i * sa0 + k * sa1] * b[k * sb0 + j * sb1] for k in range(K)) for j in range(N)] for i in range(M)])
    np.testing.assert_allclose(C, opA @ opB, rtol=1e-13)
    with pytest.raises(ValueError, match="inner dimensions differ"):
        cupy_graph.gemm_geometry((5, 7), False, (6, 3), False)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed here")
@pytest.mark.parametrize("real", ["float", "double"])
def test_kernels_compile(tmp_path, real):
    """The kernel source compiles for Hopper (sm_90) with nvcc, no GPU needed."""
    src = cupy_graph._SOURCE.replace("REAL", real).replace("TILE", str(cupy_graph._TILE))
    (tmp_path / "k.cu").write_text(src)
    res = subprocess.run(["nvcc", "--std=c++14", "-arch=sm_90", "-ptx", str(tmp_path / "k.cu"), "-o", str(tmp_path / "k.ptx")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    ptx = (tmp_path / "k.ptx").read_text()
    for name in ("gemm", "gather", "softmax_ce", "bias_update", "axpy", "advance"):
        assert f".entry {name}" in ptx, name


def test_not_chosen_automatically_until_validated():
    assert cupy_graph.VALIDATED is False, "flip only with a passing GPU run of this file"


@pytest.fixture
def tf32_off():
    assert os.environ.get("CUPY_TF32", "0") in ("", "0"), "unset CUPY_TF32 for parity tests"


def _run(blobs, fast, sizes, dtype, momentum, reduction, lr, epochs, n=1000, batch_size=32):
    X, t = blobs(n=n, n_in=sizes[0], n_classes=sizes[-1], seed=4)
    net = nn.MLP(sizes, backend="cupy", dtype=dtype, seed=1)
    hist = nn.fit(net, nn.SGD(lr, momentum=momentum), X, t, epochs=epochs, batch_size=batch_size, seed=2,
                  reduction=reduction, fast=fast)
    return net, hist


@pytest.mark.parametrize("sizes", [[20, 64, 5], [20, 48, 32, 5]], ids=["one-hidden", "two-hidden"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("reduction,lr", [("mean", 0.05), ("sum", 0.002)])
@pytest.mark.parametrize("dtype,epochs,rtol,atol", [("float64", 10, 1e-10, 1e-10), ("float32", 3, 1e-3, 1e-4)])
@pytest.mark.usefixtures("tf32_off")
@pytest.mark.gpu
def test_graph_step_matches_the_generic_step(sizes, momentum, reduction, lr, dtype, epochs, rtol, atol, blobs):
    # 1000 samples in batches of 32: 31 full batches and one of 8 per epoch (two captured graphs).
    g_net, g_hist = _run(blobs, False, sizes, dtype, momentum, reduction, lr, epochs)
    f_net, f_hist = _run(blobs, True, sizes, dtype, momentum, reduction, lr, epochs)
    for k, v in g_net.params.items():
        ref = nn.to_numpy(v)
        np.testing.assert_allclose(nn.to_numpy(f_net.params[k]), ref, rtol=rtol, atol=atol * np.max(np.abs(ref)))
    np.testing.assert_allclose(f_hist.train_loss, g_hist.train_loss, rtol=rtol * 10)
    assert all(abs(a - b) <= 2 / 1000 for a, b in zip(f_hist.train_accuracy, g_hist.train_accuracy))


@pytest.mark.gpu
@pytest.mark.usefixtures("tf32_off")
def test_graph_step_on_fashion_mnist_shapes_and_progress_reads():
    """The seed network's real shapes (784-100-10, batch 100, tail batch of 50), progress callbacks on."""
    rng = np.random.default_rng(0)
    X = rng.random((1050, 784), dtype=np.float32)
    t = rng.integers(0, 10, size=1050)
    reads = []
    nets = {}
    for fast in (False, True):
        net = nn.MLP([784, 100, 10], backend="cupy", seed=0)
        nn.fit(net, nn.SGD(0.1), X, t, epochs=2, batch_size=100, seed=0, fast=fast,
               on_batches=lambda b, n, read: reads.append(read()), log_every=5)
        nets[fast] = net
    assert all(np.isfinite(reads))
    for k in nets[False].params:
        ref = nn.to_numpy(nets[False].params[k])
        np.testing.assert_allclose(nn.to_numpy(nets[True].params[k]), ref, rtol=1e-3, atol=1e-4 * np.max(np.abs(ref)))
