"""The CuPy graph fast path against the generic path (GPU), and what of it can be checked on a CPU."""

import dataclasses
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import nnarray as nn
import nnarray.optim as nn_optim
import nnarray.step as nn_step
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
    C = np.array([[sum(a[i * sa0 + k * sa1] * b[k * sb0 + j * sb1] for k in range(K)) for j in range(N)]
                  for i in range(M)])
    np.testing.assert_allclose(C, opA @ opB, rtol=1e-13)
    with pytest.raises(ValueError, match="inner dimensions differ"):
        cupy_graph.gemm_geometry((5, 7), False, (6, 3), False)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed here")
@pytest.mark.parametrize("real", ["float", "double"])
def test_kernels_compile(tmp_path, real):
    """The kernel source compiles for Hopper (sm_90) with nvcc, no GPU needed."""
    src = cupy_graph._SOURCE.replace("REAL", real).replace("TILE", str(cupy_graph._TILE))
    (tmp_path / "k.cu").write_text(src)
    res = subprocess.run(["nvcc", "--std=c++14", "-arch=sm_90", "-ptx", str(tmp_path / "k.cu"), "-o",
                          str(tmp_path / "k.ptx")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    ptx = (tmp_path / "k.ptx").read_text()
    for name in ("gemm", "gather", "softmax_ce", "bias_update", "axpy", "advance"):
        assert f".entry {name}" in ptx, name


def test_not_chosen_automatically_until_validated(fake_cupy, monkeypatch):
    """Unvalidated, the graph runs only when asked for (fast=True); validated, the automatic choice takes it."""
    net, Xd, Td = _stub_net(fake_cupy, [784, 100, 10])
    ok = cupy_graph.CupyGraphStep.unsupported
    monkeypatch.setattr(cupy_graph, "VALIDATED", False)
    assert "experimental until validated" in ok(net, nn.SGD(0.1), Xd, Td, 100, explicit=False)
    assert ok(net, nn.SGD(0.1), Xd, Td, 100, explicit=True) is None
    monkeypatch.setattr(cupy_graph, "VALIDATED", True)
    assert ok(net, nn.SGD(0.1), Xd, Td, 100, explicit=False) is None


@pytest.fixture
def tf32_off():
    assert os.environ.get("CUPY_TF32", "0") in ("", "0"), "unset CUPY_TF32 for parity tests"


def _run(blobs, fast, sizes, dtype, momentum, reduction, lr, epochs, n=1000, batch_size=32):
    X, t = blobs(n=n, n_in=sizes[0], n_classes=sizes[-1], seed=4)
    net = nn.MLP(sizes, backend="cupy", dtype=dtype, seed=1)
    hist = nn.fit(net, nn.SGD(lr, momentum=momentum), X, t, epochs=epochs, batch_size=batch_size, seed=2,
                  reduction=reduction, options=nn.FitOptions(fast=fast))
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
    assert all(abs(a - b) <= 2 / 1000 for a, b in zip(f_hist.train_accuracy, g_hist.train_accuracy, strict=True))


@pytest.mark.gpu
@pytest.mark.usefixtures("tf32_off")
def test_graph_step_on_fashion_mnist_shapes_and_progress_reads():
    """The seed network's real shapes (784-100-10, batch 100, tail batch of 50), progress callbacks on."""
    rng = np.random.default_rng(0)
    X = rng.random((1050, 784), dtype=np.float32)
    t = rng.integers(0, 10, size=1050)
    reads = []
    nets = {}

    class Reads(nn.callbacks.Callback):
        log_every = 5

        def on_batches(self, run, done, n_batches, read_loss):
            reads.append(read_loss())

    for fast in (False, True):
        net = nn.MLP([784, 100, 10], backend="cupy", seed=0)
        nn.fit(net, nn.SGD(0.1), X, t, epochs=2, batch_size=100, seed=0, callbacks=[Reads()],
               options=nn.FitOptions(fast=fast))
        nets[fast] = net
    assert all(np.isfinite(reads))
    for k in nets[False].params:
        ref = nn.to_numpy(nets[False].params[k])
        np.testing.assert_allclose(nn.to_numpy(nets[True].params[k]), ref, rtol=1e-3, atol=1e-4 * np.max(np.abs(ref)))


# ------------------------------------------------------------------------------------------------------
# Host-side test of the orchestration: a stand-in for ``cupy`` that records the launches made during stream
# capture and replays them, at ``graph.launch()``, against NumPy transliterations of the kernels.
#
# What it checks: which kernel runs when, on which buffers (the graph bakes in the arrays passed at capture,
# as CUDA bakes in their addresses), with which geometry (the GEMM reads op(A), op(B), C, the mask through the
# element strides the step passes, as the kernel does), with which modes (alpha/beta/bias/ReLU/mask,
# momentum), batch offsets (gather reads perm[off + i]; advance moves off) and η/μ (read from the hp buffer at
# replay time). What it does not check: the kernels' arithmetic. Each transliteration computes its result
# with the same NumPy operations, in the same order, as the generic step (e.g. the GEMM as op(A) @ op(B) then
# the epilogue; ΔB as xp.sum(a, axis=0) where the CUDA kernel sums sequentially), so the parameters must come
# out bit-identical to nn.fit(options=nn.FitOptions(fast=False)) — any difference is an orchestration error (a
# wrong buffer, order, offset, mode or η), not rounding. The CUDA arithmetic itself is compared with the generic
# step on a GPU (the `gpu` tests above).
# ------------------------------------------------------------------------------------------------------
class _Ptr:
    def __init__(self, ptr):
        self.ptr = ptr


class FakeDeviceArray(np.ndarray):
    """``cupy.ndarray`` stand-in: a NumPy array with ``.data.ptr`` (its address) and ``.set(host)``."""

    @property
    def data(self):
        return _Ptr(self.__array_interface__["data"][0])

    def set(self, host):
        self[...] = host


def _flat(buf):
    """The memory behind a device pointer: the C-contiguous array as 1-D (a view, writes go through)."""
    a = np.asarray(buf)
    assert a.flags.c_contiguous, "kernels index dense rows: a non-contiguous array was passed"
    return a.reshape(-1)


def _strided(buf, shape, strides):
    """The (rows, cols) matrix a kernel reads as buf[i*strides[0] + j*strides[1]] (bounds-checked)."""
    flat = _flat(buf)
    last = sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
    assert 0 <= last < flat.size, f"kernel would read element {last} of a buffer of {flat.size}"
    return as_strided(flat, shape, tuple(s * flat.itemsize for s in strides), writeable=True)


_XP = nn.get_backend("numpy").xp  # the namespace the generic step uses: reductions round the same way


def _k_gemm(A, sa0, sa1, B, sb0, sb1, C, sc0, M, N, K, hp, alpha_mode, beta_mode, bias, use_bias, relu,
            mask, sm0, use_mask):
    hp = _flat(hp)
    v = _strided(A, (M, K), (sa0, sa1)) @ _strided(B, (K, N), (sb0, sb1))  # as the generic step's op(A) @ op(B)
    if alpha_mode:
        v = -hp[0] * v  # SGD's −η ΔW
    if use_bias:
        v += _flat(bias)[:N]  # Z += b
    if relu:
        v = _XP.maximum(v, 0.0)
    if use_mask:
        v *= _XP.astype(_strided(mask, (M, N), (sm0, 1)) > 0, v.dtype)  # relu_backward's mask
    Cv = _strided(C, (M, N), (sc0, 1))
    if beta_mode == 0:
        Cv[...] = v
    elif beta_mode == 1:
        Cv += v  # W += −η ΔW
    else:
        Cv[...] = hp[1] * Cv + v  # V = μV − ηΔW (a − b ≡ a + (−b) exactly)


def _k_gather(X, labels, perm, off_p, Xb, tb, B, D):
    off = int(_flat(off_p)[0])
    assert 0 <= off and off + B <= _flat(perm).size, f"gather past the permutation: rows {off}..{off + B}"
    rows = _flat(perm)[off:off + B]
    _flat(Xb)[:B * D] = np.asarray(X)[rows].reshape(-1)  # xp.take(Xd, idx, axis=0)
    _flat(tb)[:B] = _flat(labels)[rows]


def _k_softmax_ce(A, tb, B, C, mean, loss, correct):
    A2 = _strided(A, (B, C), (C, 1))
    t = _flat(tb)[:B]
    T = _XP.astype(t[:, None] == _XP.arange(C, dtype=t.dtype), A2.dtype)
    S = A2 - _XP.max(A2, axis=1, keepdims=True)
    ES = _XP.exp(S)
    Z = _XP.sum(ES, axis=1, keepdims=True)
    S_t = S[np.arange(B), t]
    _flat(loss)[0] += np.sum((np.log(Z[:, 0]) - S_t).astype(np.float64))  # per-row atomicAdd in double
    _flat(correct)[0] += np.uint64(np.count_nonzero(S_t == 0))
    a = ES / Z - T
    A2[...] = a / B if mean else a


def _k_bias_update(a, B, N, b, vb, hp, momentum):
    hp, b, vb = _flat(hp), _flat(b)[:N], _flat(vb)[:N]
    s = _XP.sum(_strided(a, (B, N), (N, 1)), axis=0)  # ΔB as the generic step sums it
    if momentum:
        v = hp[1] * vb - hp[0] * s
        vb[...] = v
        b += v
    else:
        b += -hp[0] * s


def _k_axpy(W, V, n):
    _flat(W)[:n] += _flat(V)[:n]


def _k_advance(off_p, B):
    _flat(off_p)[0] += B


KERNELS = {"gemm": _k_gemm, "gather": _k_gather, "softmax_ce": _k_softmax_ce, "bias_update": _k_bias_update,
           "axpy": _k_axpy, "advance": _k_advance}


class FakeCupy(types.ModuleType):
    """The part of ``cupy`` the graph step uses, on NumPy. Kernel launches on a capturing stream are
    recorded as (name, grid, block, args) — arrays by reference, as CUDA records their addresses — and run
    when the graph is launched; launches outside capture run at once. ``on_capture(calls) -> calls`` may
    rewrite a captured launch list (mutation tests); ``fail_launch``/``fail_end_capture`` inject errors.
    """

    def __init__(self):
        super().__init__("cupy")
        self.ndarray = FakeDeviceArray
        self.dtype = np.dtype
        self.int32, self.int64, self.uint64, self.float64 = np.int32, np.int64, np.uint64, np.float64
        self.captured = []  # one list of launches per captured graph
        self.on_capture = None
        self.fail_launch = None
        self.fail_end_capture = False
        self.events_made = 0
        self._streams = []  # current-stream stack (``with stream:``)
        self._capturing = set()
        fake = self

        class Event:
            def __init__(self, block=False, disable_timing=False, interprocess=False):
                fake.events_made += 1

        class Stream:
            def __init__(self, non_blocking=False):
                self.calls = None

            def __enter__(self):
                fake._streams.append(self)
                return self

            def __exit__(self, *exc):
                fake._streams.pop()

            def synchronize(self):
                assert not fake._capturing, "synchronize during capture"

            def record(self, event=None):
                return Event() if event is None else event

            def wait_event(self, event):
                assert isinstance(event, Event)

            def begin_capture(self):
                assert self.calls is None, "capture already begun"
                self.calls = []
                fake._capturing.add(self)

            def end_capture(self):
                calls, self.calls = self.calls, None
                fake._capturing.discard(self)
                if fake.fail_end_capture:
                    raise RuntimeError("cudaErrorStreamCaptureInvalidated")
                if fake.on_capture is not None:
                    calls = fake.on_capture(list(calls))
                fake.captured.append(calls)
                return Graph(calls)

        class Graph:
            def __init__(self, calls):
                self.calls = calls

            def launch(self, stream=None):
                for name, _grid, _block, args in self.calls:
                    KERNELS[name](*args)

        self._null = Stream()
        self.cuda = types.SimpleNamespace(Stream=Stream, Event=Event,
                                          get_current_stream=lambda: (fake._streams or [fake._null])[-1])

        class Kernel:
            def __init__(self, name):
                self.name = name

            def __call__(self, grid, block, args):
                if fake.fail_launch == self.name:
                    raise RuntimeError(f"launch of {self.name} failed")
                stream = fake.cuda.get_current_stream()
                assert not fake._capturing or stream in fake._capturing, "launch on another stream during capture"
                args = tuple(a if isinstance(a, np.ndarray) else int(a) for a in args)  # arrays by reference
                if stream.calls is not None:
                    stream.calls.append((self.name, grid, block, args))
                else:
                    KERNELS[self.name](*args)

        class RawModule:
            def __init__(self, code, options=()):
                assert "extern \"C\" __global__ void gemm(" in code

            def get_function(self, name):
                assert name in KERNELS, name
                return Kernel(name)

        self.RawModule = RawModule

    def _alloc(self, a):
        assert not self._capturing, "allocation during stream capture"
        return a.view(FakeDeviceArray)

    def zeros(self, shape, dtype=float):
        return self._alloc(np.zeros(shape, dtype))

    def empty(self, shape, dtype=float):
        # Garbage that cannot pass unnoticed: NaN in floats, an out-of-range index in integers.
        dt = np.dtype(dtype)
        return self._alloc(np.full(shape, np.nan if dt.kind == "f" else 2**30, dt))

    def argmax(self, a, axis=None):
        return self._alloc(np.asarray(np.argmax(np.asarray(a), axis=axis)))


@pytest.fixture
def fake_cupy(monkeypatch):
    """``import cupy`` gives a :class:`FakeCupy` in this test; the graph step's kernels compile afresh."""
    fake = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(cupy_graph, "_MODULES", {})
    # What array_api_compat gives for a cupy parameter: zeros on the device (SGD's missing velocities).
    monkeypatch.setattr(nn_optim, "_zeros_like", lambda p: fake.zeros(p.shape, p.dtype))
    return fake


class _HostGraphStep(cupy_graph.CupyGraphStep):
    """The graph step, unchanged, admitted for a numpy-backend net whose parameters are fake device arrays; it
    asks the optimizer for its fused form on a backend named cupy (the fake one)."""

    @classmethod
    def unsupported(cls, net, opt, Xd, Td, batch_size=None, explicit=False):
        return None

    def __init__(self, net, opt, Xd, Td, reduction):
        super().__init__(net, opt, Xd, Td, reduction)
        self.backend = dataclasses.replace(net.backend, name="cupy")


def _fit_pair(monkeypatch, blobs, sizes, dtype, momentum, reduction, n, batch_size, epochs=3, schedule=True, lr=0.2):
    """The same training by the generic step and by the graph step on the fake cupy: (nets, opts, hists)."""
    X, t = blobs(n=n, n_in=sizes[0], n_classes=sizes[-1], seed=4)
    lr = lr if reduction == "mean" else lr / batch_size
    sched = nn.schedules.Exponential(lr, gamma=0.7) if schedule else None  # η changes every epoch
    out = []
    for fast in (False, True):
        net = nn.MLP(sizes, backend="numpy", dtype=dtype, seed=1)
        opt = nn.SGD(lr, momentum=momentum)
        if fast:
            net.params = {k: v.view(FakeDeviceArray) for k, v in net.params.items()}
            monkeypatch.setitem(nn_step._FAST_PATHS, "numpy", lambda: _HostGraphStep)
        hist = nn.fit(net, opt, X, t, epochs=epochs, batch_size=batch_size, seed=2, reduction=reduction, schedule=sched,
                      options=nn.FitOptions(fast=fast))
        out.append((net, opt, hist))
    return out


def _assert_same_training(pair, dtype):
    (g_net, g_opt, g_hist), (f_net, f_opt, f_hist) = pair
    assert f_opt.t == g_opt.t, "the graph step counts the optimizer's updates as Optimizer.update does"
    for k, v in g_net.params.items():
        np.testing.assert_array_equal(np.asarray(f_net.params[k]), v, err_msg=k, strict=True)
    for k, v in g_opt.state["velocity"].items():
        np.testing.assert_array_equal(np.asarray(f_opt.state["velocity"][k]), v, err_msg=f"velocity {k}")
    assert f_hist.train_accuracy == g_hist.train_accuracy
    assert f_hist.lr == g_hist.lr
    # The loss is summed per row in double (the kernel's atomicAdd), the generic step in the net's dtype.
    np.testing.assert_allclose(f_hist.train_loss, g_hist.train_loss, rtol=1e-13 if dtype == "float64" else 1e-5)


SIZES = {1: [6, 9, 3], 2: [6, 9, 7, 3], 3: [6, 9, 7, 5, 4]}


@pytest.mark.parametrize("hidden", [1, 2, 3])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_replayed_graph_is_bit_identical_to_the_generic_step(fake_cupy, monkeypatch, blobs, hidden, momentum,
                                                             reduction, dtype):
    # 203 rows in batches of 32: 6 full batches and a tail of 11 (two graphs); η ×0.7 per epoch.
    pair = _fit_pair(monkeypatch, blobs, SIZES[hidden], dtype, momentum, reduction, n=203, batch_size=32)
    _assert_same_training(pair, dtype)
    assert sorted(calls[0][3][6] for calls in fake_cupy.captured) == [11, 32]  # gather's B: one graph per size
    assert len(fake_cupy.captured) == 2, "captured once per batch size, replayed for every batch and epoch"


def test_no_full_batch_graph_when_the_data_are_fewer_than_a_batch(fake_cupy, monkeypatch, blobs):
    pair = _fit_pair(monkeypatch, blobs, SIZES[2], "float64", 0.9, "mean", n=20, batch_size=32)
    _assert_same_training(pair, "float64")
    assert [calls[0][3][6] for calls in fake_cupy.captured] == [20]


def test_step_call_matches_the_generic_step(fake_cupy, blobs):
    X, t = blobs(n=50, n_in=6, n_classes=3, seed=4)
    idx = np.array([7, 3, 41, 0, 19, 8, 33])
    nets = []
    for cls in (nn_step.TrainStep, _HostGraphStep):
        net = nn.MLP(SIZES[2], backend="numpy", dtype="float64", seed=1)
        if cls is _HostGraphStep:
            net.params = {k: v.view(FakeDeviceArray) for k, v in net.params.items()}
        opt = nn.SGD(0.1, momentum=0.9)
        step = cls(net, opt, X, np.eye(3)[t], "mean")
        for lr in (0.1, 0.05):
            opt.lr = lr
            step(idx)
        nets.append(net)
    for k, v in nets[0].params.items():
        np.testing.assert_array_equal(np.asarray(nets[1].params[k]), v, err_msg=k)
    assert fake_cupy.events_made == 2, "the two stream-ordering events are made once and reused by every call"


# -------------------------------------------------------------------- mutations the comparison must catch
def _update_before_h(calls):
    """Move each masked GEMM (h = a Wᵀ) after the update of that W (its gemm with alpha = −η, and axpy)."""
    calls = list(calls)
    masked = [i for i, c in enumerate(calls) if c[0] == "gemm" and c[3][19]]
    for i in reversed(masked):
        call = calls.pop(i)
        j = next(j for j in range(i, len(calls)) if calls[j][0] == "gemm" and calls[j][3][12] == 1)
        if j + 1 < len(calls) and calls[j + 1][0] == "axpy":
            j += 1
        calls.insert(j + 1, call)
    return calls


def _no_advance(calls):
    return [c for c in calls if c[0] != "advance"]


@pytest.mark.parametrize("mutation", [_update_before_h, _no_advance], ids=["W-updated-before-h", "offset-not-advanced"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_the_comparison_catches_orchestration_errors(fake_cupy, monkeypatch, blobs, mutation, momentum):
    fake_cupy.on_capture = mutation
    # A small η: with h taken from the updated W the training runs away at η = 0.2 (fit would raise
    # TrainingDivergedError first); here it must be the parameter comparison that notices.
    pair = _fit_pair(monkeypatch, blobs, SIZES[2], "float64", momentum, "mean", n=203, batch_size=32, lr=0.02)
    assert fake_cupy.captured  # the graphs were captured, and rewritten by the mutation
    with pytest.raises(AssertionError):
        _assert_same_training(pair, "float64")


def test_mutation_hooks_change_the_launch_list(fake_cupy, monkeypatch, blobs):
    _fit_pair(monkeypatch, blobs, SIZES[2], "float64", 0.9, "mean", n=64, batch_size=32, epochs=1)
    (calls,) = fake_cupy.captured
    names = [c[0] for c in calls]
    assert names[-1] == "advance" and "advance" not in [c[0] for c in _no_advance(calls)]
    moved = [c[0] for c in _update_before_h(calls)]
    assert moved != names and sorted(moved) == sorted(names)


# -------------------------------------------------------------------- capture errors, refusals
def _graph_step(fake, blobs, sizes=(6, 9, 3), momentum=0.0):
    X, t = blobs(n=40, n_in=sizes[0], n_classes=sizes[-1], seed=4)
    net = nn.MLP(list(sizes), backend="numpy", dtype="float64", seed=1)
    net.params = {k: v.view(FakeDeviceArray) for k, v in net.params.items()}
    return _HostGraphStep(net, nn.SGD(0.1, momentum=momentum), X, np.eye(sizes[-1])[t], "mean")


@pytest.mark.parametrize("end_fails", [False, True])
def test_an_error_inside_capture_is_raised_as_itself(fake_cupy, blobs, end_fails):
    step = _graph_step(fake_cupy, blobs)
    fake_cupy.fail_launch, fake_cupy.fail_end_capture = "softmax_ce", end_fails
    with pytest.raises(RuntimeError, match="launch of softmax_ce failed") as info:
        step.epoch(np.arange(40), 16)
    assert not fake_cupy._capturing, "the capture was ended"
    if sys.version_info >= (3, 11):  # the second error is attached as a note
        notes = getattr(info.value, "__notes__", [])
        assert any("StreamCaptureInvalidated" in n for n in notes) == end_fails
    assert step._graphs == {}, "no partial graph kept"
    fake_cupy.fail_launch = fake_cupy.fail_end_capture = False
    step.epoch(np.arange(40), 16)  # the stream is usable again: 2 batches of 16, a tail of 8
    assert sorted(step._graphs) == [8, 16]
    assert all(g.calls[-1][0] == "advance" for g, _ in step._graphs.values())


def _stub_net(fake, sizes, dtype="float32"):
    params = {}
    for l, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        params[f"W{l}"], params[f"b{l}"] = fake.zeros((a, b), dtype), fake.zeros((b,), dtype)
    return types.SimpleNamespace(backend=types.SimpleNamespace(name="cupy"), params=params, layer_sizes=list(sizes),
                                 dtype_name=dtype), fake.zeros((4, sizes[0]), dtype), fake.zeros((4, sizes[-1]), dtype)


def test_unsupported_refuses_what_the_kernels_cannot_run(fake_cupy, monkeypatch):
    net, Xd, Td = _stub_net(fake_cupy, [784, 100, 10])
    ok = cupy_graph.CupyGraphStep.unsupported
    assert ok(net, nn.SGD(0.1, momentum=0.9), Xd, Td, 100, explicit=True) is None
    assert "experimental" in ok(net, nn.SGD(0.1), Xd, Td, 100, explicit=False)

    class Same(nn.SGD):  # SGD's rule: its heavy-ball form holds
        pass

    class Other(nn.SGD):  # a rule of its own: SGD's fused form does not describe it
        def rule(self, p, g, state, scalars):
            return super().rule(p, 2.0 * g, state, scalars)

    assert ok(net, Same(0.1), Xd, Td, 100, explicit=True) is None
    assert "has no heavy-ball SGD form" in ok(net, Other(0.1), Xd, Td, 100, explicit=True)
    for attr, value in (("nesterov", True), ("weight_decay", 1e-4)):
        opt = nn.SGD(0.1, momentum=0.9)
        setattr(opt, attr, value)
        assert "has no heavy-ball SGD form" in ok(net, opt, Xd, Td, 100, explicit=True)
    for opt in (nn.Adam(), nn.RMSprop(momentum=0.9)):
        assert "has no heavy-ball SGD form" in ok(net, opt, Xd, Td, 100, explicit=True)
    opt = nn.SGD(0.1, momentum=0.9)
    opt.add_hook(nn.optim.ClipGradNorm(1.0))
    assert "gradient hooks (ClipGradNorm(max_norm=1.0))" in ok(net, opt, Xd, Td, 100, explicit=True)
    # optimizer state that is not on the device, of another dtype, shape or layout
    for bad in (np.zeros((784, 100), np.float32), fake_cupy.zeros((784, 100), np.float64),
                fake_cupy.zeros((100, 784), np.float32).T, fake_cupy.zeros((784, 10), np.float32)):
        opt = nn.SGD(0.1, momentum=0.9)
        opt.state["velocity"]["W1"] = bad  # as a checkpoint loaded without backend= would leave it
        reason = ok(net, opt, Xd, Td, 100, explicit=True)
        assert reason is not None and "velocity['W1']" in reason, reason
    net.params["b1"] = np.zeros(100, np.float32)
    assert "b1 is not" in ok(net, nn.SGD(0.1), Xd, Td, 100, explicit=True)


def test_state_loaded_off_the_device_is_refused_when_the_epoch_starts(fake_cupy, blobs):
    step = _graph_step(fake_cupy, blobs, momentum=0.9)
    step.opt.state["velocity"]["W1"] = np.zeros((6, 9))
    with pytest.raises(TypeError, match=r"velocity\['W1'\].*not on the device"):
        step.epoch(np.arange(40), 16)


def test_large_layers_are_refused_unless_forced(fake_cupy, monkeypatch):
    monkeypatch.delenv("NNARRAY_FORCE_GRAPH", raising=False)
    net, Xd, Td = _stub_net(fake_cupy, [784, 4096, 10])
    ok = cupy_graph.CupyGraphStep.unsupported
    assert "too large" in ok(net, nn.SGD(0.1), Xd, Td, 1024, explicit=True)  # what fit(fast=True) sees
    assert ok(net, nn.SGD(0.1), Xd, Td, None, explicit=True) is None  # no batch size: nothing to judge
    monkeypatch.setenv("NNARRAY_FORCE_GRAPH", "1")
    assert ok(net, nn.SGD(0.1), Xd, Td, 1024, explicit=True) is None
    monkeypatch.setenv("NNARRAY_FORCE_GRAPH", "0")
    assert "too large" in ok(net, nn.SGD(0.1), Xd, Td, 1024, explicit=True)
    monkeypatch.setattr(cupy_graph, "FORCE_LARGE", True)
    assert ok(net, nn.SGD(0.1), Xd, Td, 1024, explicit=True) is None


# ---------------------------------------------------------------------------------------------------------------
# What a host-side review found untested (issue 11): η changing every epoch, parameters and optimizer state replaced
# under the step (which must capture again), and the step called per batch. Each runs the generic step on CuPy
# beside the graph step from the same weights and batches.
#
# float64: strict parity, rtol 1e-10 after hundreds of steps.
# float32: loss curves and final accuracy only. The graph step's own GEMM sums each product in tile order where the
# generic step's cuBLAS uses another, and CuPy's kernels flush denormals to zero (values below 1.2e-38, far below
# anything these comparisons see). Two float32 runs of these networks that differ only in summation order were
# measured on a CPU (NumPy/OpenBLAS against PyTorch's kernels, 320 SGD steps with η changing every epoch, the
# noisy blobs below): per-epoch mean losses within 3.5e-6 relative, identical accuracies, parameters within
# 9e-5·max|W| (a ReLU unit at 0 switching). Hence rtol 1e-4 on the loss curve (~30x the worst measured) and the
# final training accuracy within 2/N (a sample on a decision boundary may flip).
F32_LOSS_RTOL = 1e-4
F32_ACC_SAMPLES = 2


def _noisy_blobs(blobs, sizes, n=1000):
    """Blobs with every 7th label moved to the next class, so the loss stays near 0.3-0.4: near 0 (where clean
    blobs end up) float32's log Z − S cancels and its rounding, not the summation order, would be compared."""
    X, t = blobs(n=n, n_in=sizes[0], n_classes=sizes[-1], seed=4)
    t = t.copy()
    t[::7] = (t[::7] + 1) % sizes[-1]
    return X, t


def _assert_gpu_runs_agree(dtype, generic, graph, n_samples):
    """``generic``/``graph``: (net, history) of the two steps."""
    (g_net, g_hist), (f_net, f_hist) = generic, graph
    assert len(f_hist) == len(g_hist)
    if dtype == "float64":
        np.testing.assert_allclose(f_hist.train_loss, g_hist.train_loss, rtol=1e-10)
        assert f_hist.train_accuracy == g_hist.train_accuracy
        for k, v in g_net.params.items():
            ref = nn.to_numpy(v)
            np.testing.assert_allclose(nn.to_numpy(f_net.params[k]), ref, rtol=1e-10, atol=1e-10 * np.max(np.abs(ref)),
                                       err_msg=k)
    else:
        np.testing.assert_allclose(f_hist.train_loss, g_hist.train_loss, rtol=F32_LOSS_RTOL)
        assert abs(f_hist.train_accuracy[-1] - g_hist.train_accuracy[-1]) <= F32_ACC_SAMPLES / n_samples


@pytest.mark.gpu
@pytest.mark.usefixtures("tf32_off")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("sizes", [[20, 64, 5], [20, 48, 32, 5]], ids=["one-hidden", "two-hidden"])
def test_graph_step_follows_an_lr_that_changes_every_epoch(blobs, sizes, momentum, dtype):
    """η·0.7^(e−1) over 10 epochs of 32 batches (320 steps): the graph reads η from the device each epoch."""
    X, t = _noisy_blobs(blobs, sizes)
    runs = {}
    for fast in (False, True):
        net = nn.MLP(sizes, backend="cupy", dtype=dtype, seed=1)
        hist = nn.fit(net, nn.SGD(0.05, momentum=momentum), X, t, epochs=10, batch_size=32, seed=2,
                      schedule=nn.schedules.Exponential(0.05, 0.7), options=nn.FitOptions(fast=fast))
        runs[fast] = (net, hist)
    assert runs[True][1].lr == pytest.approx([0.05 * 0.7**k for k in range(10)])
    _assert_gpu_runs_agree(dtype, runs[False], runs[True], len(t))


@pytest.mark.gpu
@pytest.mark.usefixtures("tf32_off")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_graph_step_captures_again_when_parameters_or_state_are_replaced(blobs, dtype):
    """After every epoch a callback replaces the parameters (halved, new arrays) and the velocities (reloaded,
    new arrays); between two fit calls the parameters are replaced again. A graph still pointing at the old
    arrays would go on training those (kept alive here) and leave the new ones untouched."""
    sizes = [20, 64, 5]
    X, t = _noisy_blobs(blobs, sizes)
    kept = []

    def replacer(net, opt):
        def callback(record):
            kept.append((net.params, opt.state))  # alive, so the new arrays cannot reuse their addresses
            net.params = {k: v * 0.5 for k, v in net.params.items()}
            opt.load_state_dict(opt.state_dict(), backend=net.backend, dtype=net.dtype)
        return callback

    runs, opts = {}, {}
    for fast in (False, True):
        net = nn.MLP(sizes, backend="cupy", dtype=dtype, seed=1)
        opt = nn.SGD(0.05, momentum=0.9)
        hist = nn.fit(net, opt, X, t, epochs=4, batch_size=32, seed=2, callbacks=replacer(net, opt),
                      options=nn.FitOptions(fast=fast))
        net.params = {k: v * 0.5 for k, v in net.params.items()}
        hist = nn.fit(net, opt, X, t, epochs=4, batch_size=32, seed=3,
                      callbacks=replacer(net, opt), options=nn.FitOptions(fast=fast, history=hist))
        runs[fast], opts[fast] = (net, hist), opt
    _assert_gpu_runs_agree(dtype, runs[False], runs[True], len(t))
    if dtype == "float64":
        for k, v in opts[False].state["velocity"].items():
            ref = nn.to_numpy(v)
            np.testing.assert_allclose(nn.to_numpy(opts[True].state["velocity"][k]), ref, rtol=1e-10,
                                       atol=1e-10 * np.max(np.abs(ref)), err_msg=k)


def _steps(sizes, X, t, reduction, lr, momentum, dtype="float64"):
    """The generic and the graph step on the same data, from the same weights: {fast: (step, net, opt)}."""
    from nnarray.step import make_step  # noqa: PLC0415

    out = {}
    for fast in (False, True):
        net = nn.MLP(sizes, backend="cupy", dtype=dtype, seed=1)
        opt = nn.SGD(lr, momentum=momentum)
        xp, be = net.xp, net.backend
        Xd = be.asarray(X, dtype=net.dtype)
        Td = nn.functions.one_hot(xp, be.asarray(t, dtype=xp.int64), net.n_classes, net.dtype)
        step = make_step(net, opt, Xd, Td, reduction, fast=fast, batch_size=32)
        assert (step.name == "cupy-graph") == fast, step.name
        out[fast] = (step, net, opt)
    return out


@pytest.mark.gpu
@pytest.mark.usefixtures("tf32_off")
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("reduction,lr", [("mean", 0.05), ("sum", 0.002)])
def test_graph_step_called_per_batch_matches_the_generic_step(blobs, reduction, lr, momentum):
    """step(idx) as the protocol offers it: 210 batches of varying size (1 to 50 rows, a graph each), η changed
    every 50 calls, metrics read and reset midway — float64, rtol 1e-10."""
    import cupy as cp  # noqa: PLC0415

    sizes = [20, 48, 32, 5]
    X, t = _noisy_blobs(blobs, sizes, n=300)
    steps = _steps(sizes, X, t, reduction, lr, momentum)
    rng = np.random.default_rng(0)
    for i, b in enumerate([32, 32, 7, 32, 1, 50, 32] * 30):
        idx = cp.asarray(rng.choice(X.shape[0], size=b, replace=False), dtype=cp.int64)
        for step, _net, opt in steps.values():
            if i % 50 == 0:
                opt.lr = lr * 0.8 ** (i // 50)
            step(idx)
        if i in (69, 209):
            (g, g_net, _), (f, f_net, _) = steps[False], steps[True]
            assert float(f.loss_sum) == pytest.approx(float(g.loss_sum), rel=1e-10)
            assert int(f.correct) == int(g.correct)
            for k, v in g_net.params.items():
                ref = nn.to_numpy(v)
                np.testing.assert_allclose(nn.to_numpy(f_net.params[k]), ref, rtol=1e-10,
                                           atol=1e-10 * np.max(np.abs(ref)), err_msg=f"{k} after {i + 1} steps")
            g.reset()
            f.reset()
            assert float(f.loss_sum) == 0.0 and int(f.correct) == 0


@pytest.mark.gpu
@pytest.mark.usefixtures("tf32_off")
def test_graph_step_honours_or_refuses_a_global_batch_size():
    """step(idx, n): the mean divides by n, the global batch (data-parallel shares). The graph step divides by
    its rows, so it must refuse an n that differs rather than compute another step."""
    import cupy as cp  # noqa: PLC0415

    rng = np.random.default_rng(0)
    X, t = rng.normal(size=(64, 10)), rng.integers(0, 3, size=64)
    steps = _steps([10, 8, 3], X, t, "mean", 0.1, 0.0)
    idx = cp.arange(20, dtype=cp.int64)
    steps[False][0](idx, 40)
    try:
        steps[True][0](idx, 40)
    except ValueError as exc:
        assert str(exc).startswith("n:"), exc  # the message names the argument
    else:
        for k, v in steps[False][1].params.items():
            np.testing.assert_allclose(nn.to_numpy(steps[True][1].params[k]), nn.to_numpy(v), rtol=1e-10, err_msg=k)
    steps[True][0](idx, 20)  # n equal to the rows is the ordinary step


@pytest.mark.gpu
@pytest.mark.usefixtures("tf32_off")
def test_graph_step_with_fewer_samples_than_a_batch(blobs):
    """N = 20 < batch 32: one partial batch per epoch, as on the generic path (and no full-batch graph)."""
    sizes = [20, 16, 5]
    X, t = _noisy_blobs(blobs, sizes, n=20)
    runs = {}
    for fast in (False, True):
        net = nn.MLP(sizes, backend="cupy", dtype="float64", seed=1)
        runs[fast] = (net,
                      nn.fit(net, nn.SGD(0.05, momentum=0.9), X, t, epochs=5, batch_size=32, seed=2,
                             options=nn.FitOptions(fast=fast)))
    _assert_gpu_runs_agree("float64", runs[False], runs[True], len(t))


def test_a_hook_added_after_the_step_was_made_is_refused_when_the_epoch_starts(fake_cupy, blobs):
    """The kernels apply the update without the optimizer's hooks: a hook added later must stop the step."""
    step = _graph_step(fake_cupy, blobs, momentum=0.9)
    step.opt.add_hook(nn.optim.ClipGradNorm(1.0))
    with pytest.raises(ValueError, match=r"opt: optimizer with gradient hooks \(ClipGradNorm"):
        step.epoch(np.arange(40), 16)


def test_masks_are_refused_by_the_call(fake_cupy, blobs):
    step = _graph_step(fake_cupy, blobs)
    with pytest.raises(ValueError, match="masks: the CuPy graph step has no dropout"):
        step(np.arange(8), masks=[np.ones((8, 9))])


def test_a_replaced_velocity_is_copied_into_the_captured_buffer(fake_cupy, blobs):
    """η changed (SGD stores rescaled velocities as new arrays): the graph keeps its buffers, now holding the
    rescaled values, and the optimizer's state is the buffer again; no new capture."""
    step = _graph_step(fake_cupy, blobs, momentum=0.9)
    step.epoch(np.arange(40), 16)
    captured = len(fake_cupy.captured)
    buffers = dict(step.opt.velocity)
    expected = {k: v * 0.5 for k, v in buffers.items()}
    step.opt.lr = 0.05  # from 0.1
    assert all(step.opt.velocity[k] is not buffers[k] for k in buffers)
    step._prepare()
    assert len(fake_cupy.captured) == captured and step._graphs
    for k, v in buffers.items():
        assert step.opt.velocity[k] is v
        np.testing.assert_array_equal(v, expected[k])
