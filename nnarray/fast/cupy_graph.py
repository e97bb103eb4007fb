"""The training step on CuPy as one CUDA graph of fused kernels (experimental: see ``VALIDATED``).

Why: one epoch of the seed network at 784-100-10 is 6·N·P ≈ 2.86e10 FLOP at N = 60 000 and
P = 784·100 + 100·10 = 79 400 weights (2 FLOP per multiply–add, for the forward product, the ΔW product and
the product that back-propagates h; this step skips that last one for the input layer, so it does
≈ 1.92e10): well under a millisecond at a current GPU's FP32 rate. The generic path instead launches ~40
small kernels per mini-batch, each costing several microseconds of launch and Python work, so at batch 100
(600 steps per epoch) an epoch is bound by overhead. This step replaces them by ~10 fused kernels per step,
captured once in a CUDA graph and replayed for every mini-batch:

=====================  =====================================================================
kernel                 does
=====================  =====================================================================
``gather``             X, t rows of the batch, read through the epoch permutation on the device
``gemm`` (+bias, ReLU)  H = ReLU(H_prev W + b), A = H W_L + b_L
``softmax_ce``         per row: max, Z = Σ exp, E = log Z − S_t (summed), correct count, a = Y − T
``gemm`` (+mask)       h = (a Wᵀ) masked where H ≤ 0   (before W is updated)
``bias_update``        ΔB = Σ_n a, B ← B − η ΔB (or momentum)
``gemm`` (β = 1)       W ← W − η Hᵀa: the SGD update fused into the product's epilogue
``advance``            moves the batch offset on the device for the next replay
=====================  =====================================================================

CuPy refuses cuBLAS calls during stream capture, hence the own (tiled, shared-memory) GEMM kernel. It is
written for the small products of this network; for large layers (784-4096-10 at batch 1024) cuBLAS is
far faster, so :meth:`CupyGraphStep.unsupported` refuses those (also under ``fit(fast=True)``, so a
benchmark never times the own GEMM there) unless forced: ``NNARRAY_FORCE_GRAPH=1`` in the environment or
``cupy_graph.FORCE_LARGE = True`` (for experiments and tests).

Nothing crosses to the host inside an epoch: the permutation is copied to a device buffer once per epoch,
the batch offset lives on the device, η and μ are read by the kernels from a device buffer updated once
per epoch, and the loss and correct count are accumulated on the device.

The orchestration (which kernel runs when, on which buffers, with which offsets) is tested on the host by
replaying the captured launches against NumPy transliterations of the kernels (tests/test_fast_cupy_graph.py);
the kernels' own arithmetic only on a GPU.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..optim import heavy_ball_form
from ..step import TrainStep
from ..words import arg

__all__ = ["CupyGraphStep", "VALIDATED", "FORCE_LARGE", "force_large"]

#: Whether this path has passed its parity tests (the ``gpu`` tests of tests/test_fast_cupy_graph.py)
#: on a real GPU. Until it
#: has, it runs only when asked for (``fit(..., fast=True)`` on CuPy); ``make_step`` never picks it.
VALIDATED = False

# Largest batch × widest layer × widest fan-in the own GEMM kernel is used for (784-1000-10 at batch 100
# is 7.8e7); beyond it cuBLAS outside a graph wins.
MAX_GEMM_WORK = 1.2e8

#: True runs the graph path (when asked for) even for layers above ``MAX_GEMM_WORK``; so does
#: ``NNARRAY_FORCE_GRAPH=1`` in the environment. For experiments with the own GEMM, never for benchmarks.
FORCE_LARGE = False


def force_large() -> bool:
    """Whether the size limit ``MAX_GEMM_WORK`` is overridden (``FORCE_LARGE`` or ``$NNARRAY_FORCE_GRAPH``)."""
    env = os.environ.get("NNARRAY_FORCE_GRAPH", "").strip().lower()
    return bool(FORCE_LARGE) or env in ("1", "true", "yes", "on")

_TILE = 16

_SOURCE = r"""
typedef REAL real;

// C(i,j) = epilogue(alpha * sum_k op(A)(i,k) op(B)(k,j)); op(A)(i,k) = A[i*sa0 + k*sa1], op(B)(k,j) = B[k*sb0 + j*sb1].
// alpha_mode: 0 -> 1, 1 -> -hp[0] (-eta).  beta_mode: 0 -> C = v, 1 -> C += v, 2 -> C = v + hp[1] * C (momentum).
// use_bias: v += bias[j].  relu: v = max(v, 0).  use_mask: v = 0 where mask[i*sm0 + j] <= 0.
extern "C" __global__ void gemm(
    const real* A, long long sa0, long long sa1,
    const real* B, long long sb0, long long sb1,
    real* C, long long sc0, int M, int N, int K,
    const real* hp, int alpha_mode, int beta_mode,
    const real* bias, int use_bias, int relu,
    const real* mask, long long sm0, int use_mask)
{
    __shared__ real As[TILE][TILE + 1];
    __shared__ real Bs[TILE][TILE + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int i = blockIdx.y * TILE + ty;
    const int j = blockIdx.x * TILE + tx;
    real acc = 0;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        const int ka = k0 + tx, kb = k0 + ty;
        // As[ty][tx] = op(A)(i, k0 + tx) and Bs[ty][tx] = op(B)(k0 + ty, j).
        As[ty][tx] = (i < M && ka < K) ? A[i * sa0 + ka * sa1] : (real)0;
        Bs[ty][tx] = (kb < K && j < N) ? B[kb * sb0 + (long long)j * sb1] : (real)0;
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < TILE; ++kk) acc += As[ty][kk] * Bs[kk][tx];
        __syncthreads();
    }
    if (i < M && j < N) {
        real v = alpha_mode ? -hp[0] * acc : acc;
        if (use_bias) v += bias[j];
        if (relu) v = v > (real)0 ? v : (real)0;
        if (use_mask && !(mask[i * sm0 + j] > (real)0)) v = (real)0;
        real* c = C + i * sc0 + j;
        if (beta_mode == 0) *c = v;
        else if (beta_mode == 1) *c += v;
        else *c = hp[1] * (*c) + v;
    }
}

// Rows perm[off + i] of X (N x D) and their labels into Xb (B x D), tb (B).
extern "C" __global__ void gather(const real* X, const int* labels, const long long* perm,
                                  const long long* off_p, real* Xb, int* tb, int B, int D)
{
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)B * D) return;
    const int i = (int)(idx / D), d = (int)(idx % D);
    const long long r = perm[*off_p + i];
    Xb[idx] = X[r * D + d];
    if (d == 0) tb[i] = labels[r];
}

// Per row i of A (B x C): S = A - max A, Z = sum exp S; adds log Z - S_t to *loss and 1 to *correct when
// S_t == 0; overwrites the row with a = Y - T (divided by n for the mean reduction).
extern "C" __global__ void softmax_ce(real* A, const int* tb, int B, int C, int mean,
                                      double* loss, unsigned long long* correct)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B) return;
    real* a = A + (long long)i * C;
    const int t = tb[i];
    real m = a[0];
    for (int k = 1; k < C; ++k) m = a[k] > m ? a[k] : m;
    real z = 0;
    for (int k = 0; k < C; ++k) z += exp(a[k] - m);
    const real s_t = a[t] - m;
    atomicAdd(loss, (double)(log(z) - s_t));
    if (s_t == (real)0) atomicAdd(correct, 1ULL);
    for (int k = 0; k < C; ++k) {
        real g = exp(a[k] - m) / z - (k == t ? (real)1 : (real)0);
        a[k] = mean ? g / (real)B : g;
    }
}

// Delta B_j = sum_i a[i, j]; B <- B - eta Delta B, or v <- mu v - eta Delta B, B <- B + v.
extern "C" __global__ void bias_update(const real* a, int B, int N, real* b, real* vb,
                                       const real* hp, int momentum)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N) return;
    real s = 0;
    for (int i = 0; i < B; ++i) s += a[(long long)i * N + j];
    if (momentum) { const real v = hp[1] * vb[j] - hp[0] * s; vb[j] = v; b[j] += v; }
    else b[j] += -hp[0] * s;
}

extern "C" __global__ void axpy(real* W, const real* V, long long n)
{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) W[i] += V[i];
}

extern "C" __global__ void advance(long long* off_p, long long B) { *off_p += B; }
"""

_MODULES: dict[str, Any] = {}


def gemm_geometry(a_shape, trans_a, b_shape, trans_b):
    """(M, N, K, sa0, sa1, sb0, sb1) for op(A) @ op(B) of C-contiguous 2-D A and B, as the kernel reads them:
    op(A)(i, k) = A.flat[i*sa0 + k*sa1], op(B)(k, j) = B.flat[k*sb0 + j*sb1]."""
    M, K = (a_shape[1], a_shape[0]) if trans_a else (a_shape[0], a_shape[1])
    Kb, N = (b_shape[1], b_shape[0]) if trans_b else (b_shape[0], b_shape[1])
    if K != Kb:
        raise ValueError(f"gemm: inner dimensions differ: op(A) is {M}x{K}, op(B) is {Kb}x{N}")
    sa0, sa1 = (1, a_shape[1]) if trans_a else (a_shape[1], 1)
    sb0, sb1 = (1, b_shape[1]) if trans_b else (b_shape[1], 1)
    return M, N, K, sa0, sa1, sb0, sb1


def _module(dtype_name):
    """The compiled kernels for float32 or float64 (compiled once per process and dtype)."""
    import cupy  # noqa: PLC0415

    mod = _MODULES.get(dtype_name)
    if mod is None:
        real = {"float32": "float", "float64": "double"}[dtype_name]
        src = _SOURCE.replace("REAL", real).replace("TILE", str(_TILE))
        mod = _MODULES[dtype_name] = cupy.RawModule(code=src, options=("--std=c++14",))
    return mod


def _state_problem(cupy, net, state):
    """None when every optimizer state array of a parameter is on the device like it, else why not.

    ``state``: ``{state name: {key: array}}`` (the form's). The kernels update the velocities in place
    through addresses baked into the graph: a NumPy array, another dtype or a strided view would be
    skipped, misread or break the capture.
    """
    for name, arrays in state.items():
        for k, p in net.params.items():
            v = arrays.get(k)
            if v is None:
                continue  # created on the device by form.buffers when the step starts
            if not isinstance(v, cupy.ndarray):
                return f"optimizer state {name}[{k!r}] is a {type(v).__module__}.{type(v).__name__}, not on the device"
            if str(v.dtype) != net.dtype_name or tuple(v.shape) != tuple(p.shape) or not v.flags.c_contiguous:
                return (f"optimizer state {name}[{k!r}] is not a C-contiguous {tuple(p.shape)} array of "
                        f"{net.dtype_name} (got {tuple(v.shape)} {v.dtype})")
    return None


class _Buffers:
    """Activations of one batch size (the graph bakes in their addresses, so they live as long as it)."""

    def __init__(self, cp, n, sizes, dtype):
        self.n = n
        self.Xb = cp.empty((n, sizes[0]), dtype)
        self.tb = cp.empty((n,), cp.int32)
        self.H = [None] + [cp.empty((n, s), dtype) for s in sizes[1:-1]]  # H after each hidden layer
        self.h = [None] + [cp.empty((n, s), dtype) for s in sizes[1:-1]]  # back-propagated h
        self.A = cp.empty((n, sizes[-1]), dtype)  # A, then a


class CupyGraphStep(TrainStep):
    """Fast path of the training step for the ``cupy`` backend and :class:`nnarray.SGD` (experimental).

    The same step as :class:`nnarray.step.TrainStep` (the generic one is the reference in the tests), computed
    by fused kernels replayed as a CUDA graph. It asks the optimizer for its heavy-ball SGD form
    (``opt.fused(backend)``, :class:`nnarray.optim.HeavyBallSGD`): η and μ, and the velocity buffers, whose
    contents its kernels update on the device. Graphs bake in the buffers' addresses: when the optimizer
    replaces a velocity (η rescaled by a schedule, a state loaded), its values are copied into the captured
    buffer, which becomes the optimizer's state again.
    """

    name = "cupy-graph"
    description = "the step captured in one CUDA graph per batch shape (experimental)"

    @classmethod
    def unsupported(cls, net, opt, Xd, Td, batch_size=None, explicit=False):
        """None when this path can run the training, else the reason it cannot.

        Refused: anything but the cupy backend and an optimizer whose ``fused(backend)`` is the heavy-ball SGD
        form (:class:`nnarray.SGD` with or without momentum — no Nesterov, no weight decay, no other
        optimizer), without gradient hooks (the kernels apply the update themselves);
        layers too large for the own GEMM at ``batch_size`` unless :func:`force_large`; parameters, data or
        optimizer state that are not C-contiguous ``cupy.ndarray`` of the net's dtype and shape (the graph
        bakes in their device addresses and the kernels index them as dense rows).
        """
        if not explicit and not VALIDATED:
            return f"the CuPy graph path is experimental until validated on a GPU (use {arg('fast', 'True')})"
        if net.backend.name != "cupy":
            return "not the cupy backend"
        form, reason = heavy_ball_form(opt, net.backend)
        if form is None:
            return reason
        if batch_size is not None and cls.too_large(net, batch_size) and not force_large():
            return ("layers too large for the graph path's own GEMM kernel; cuBLAS is faster "
                    "(NNARRAY_FORCE_GRAPH=1 forces it)")
        if getattr(net, "uses_dropout", False):
            return "dropout (the kernels have no masks)"
        import cupy  # noqa: PLC0415

        for k, v in {**net.params, "X": Xd, "T": Td}.items():
            if not isinstance(v, cupy.ndarray) or not v.flags.c_contiguous or str(v.dtype) != net.dtype_name:
                return f"{k} is not a C-contiguous cupy.ndarray of {net.dtype_name}"
        return _state_problem(cupy, net, form.state())

    @staticmethod
    def too_large(net, batch_size):
        """True when the own GEMM kernel would be slower than cuBLAS for these shapes (``MAX_GEMM_WORK``)."""
        widest = max(net.layer_sizes)
        return batch_size * widest * max(net.layer_sizes[:-1]) > MAX_GEMM_WORK

    def __init__(self, net, opt, Xd, Td, reduction):
        import cupy as cp  # noqa: PLC0415

        self.cp = cp
        #: The backend whose fused form the optimizer is asked for (the net's).
        self.backend = net.backend
        self.dtype = cp.dtype(net.dtype_name)
        self.mod = _module(net.dtype_name)
        kernels = ("gemm", "gather", "softmax_ce", "bias_update", "axpy", "advance")
        self.k = {name: self.mod.get_function(name) for name in kernels}
        self.Xd = Xd
        self.labels = cp.argmax(Td, axis=1).astype(cp.int32)  # once per fit: the kernels use class indices
        self.perm = cp.zeros((Xd.shape[0],), cp.int64)
        self.off = cp.zeros((1,), cp.int64)
        self.hp = cp.zeros((2,), self.dtype)  # η, μ
        self._hp_host = None
        self._loss = cp.zeros((), cp.float64)
        self._correct = cp.zeros((), cp.uint64)
        self.stream = cp.cuda.Stream(non_blocking=True)
        # Reused by every call to order the two streams (timing off: ordering only, cheaper to record).
        self._events = (cp.cuda.Event(disable_timing=True), cp.cuda.Event(disable_timing=True))
        self._graphs = {}  # batch size -> (graph, buffers)
        self._signature = None
        self._velocity = {}  # the velocity buffers the graphs bake in
        super().__init__(net, opt, Xd, Td, reduction)  # net, opt, reduction, mask_rng; reset()

    # -------------------------------------------------------------- metrics (TrainStep's interface)
    @property
    def loss_sum(self):
        return self._loss

    @property
    def correct(self):
        return self._correct

    def reset(self):
        self._loss.fill(0)
        self._correct.fill(0)

    # -------------------------------------------------------------- state the graphs depend on
    def _prepare(self):
        """Velocities, η/μ on the device, and recapture when parameters were replaced (once per epoch)."""
        cp, p = self.cp, self.net.params
        form, reason = heavy_ball_form(self.opt, self.backend)  # the optimizer may have changed since unsupported()
        if form is None:
            raise ValueError(f"opt: {reason}")
        momentum = form.momentum != 0.0
        # Zero velocities where the optimizer has none yet: μ·0 − ηΔW = −ηΔW, SGD's first step.
        velocity = form.buffers(p)["velocity"] if momentum else {}
        problem = _state_problem(cp, self.net, {"velocity": velocity})  # state may have been loaded since
        if problem is not None:
            raise TypeError(f"opt: {problem}; load it with load_state_dict(sd, backend=net.backend)")
        signature = (momentum, tuple((k, v.data.ptr) for k, v in p.items()), tuple(velocity))
        if signature != self._signature:
            self._graphs.clear()
            self._signature = signature
            self._velocity = dict(velocity)
        for k, v in velocity.items():
            own = self._velocity[k]
            if v is not own:  # replaced by the optimizer: the captured buffer takes its values, and its place
                own[...] = v
                form.store("velocity", k, own)
        hp = (float(form.lr), float(form.momentum))
        if hp != self._hp_host:
            self.hp.set(np.asarray(hp, dtype=self.dtype))
            self._hp_host = hp

    def _graph(self, n):
        entry = self._graphs.get(n)
        if entry is None:
            buf = _Buffers(self.cp, n, self.net.layer_sizes, self.dtype)
            self.stream.synchronize()
            with self.stream:
                self.stream.begin_capture()
                try:
                    self._launch(buf)
                except BaseException as err:
                    # End the capture so the stream is usable again, but let the error that broke the
                    # capture propagate: end_capture then usually fails too (an invalidated capture),
                    # and that second error would hide the cause.
                    try:
                        self.stream.end_capture()
                    except Exception as end_err:  # noqa: BLE001
                        if hasattr(err, "add_note"):  # Python ≥ 3.11
                            err.add_note(f"(ending the stream capture failed as well: "
                                         f"{type(end_err).__name__}: {end_err})")
                    raise
                graph = self.stream.end_capture()
            entry = self._graphs[n] = (graph, buf)
        return entry[0]

    # -------------------------------------------------------------- the step's kernels
    def _gemm(self, A, transA, B, transB, C, hp_modes=(0, 0), bias=None, relu=False, mask=None):
        """C = epilogue(op(A) @ op(B)) with the element strides of 2-D C-contiguous arrays."""
        M, N, K, sa0, sa1, sb0, sb1 = gemm_geometry(A.shape, transA, B.shape, transB)
        if C.shape != (M, N):
            raise ValueError(f"gemm: C is {C.shape}, op(A) @ op(B) is {(M, N)}")
        i64, i32 = np.int64, np.int32
        dummy = C  # a valid pointer for unused arguments
        grid = ((N + _TILE - 1) // _TILE, (M + _TILE - 1) // _TILE)
        self.k["gemm"](grid, (_TILE, _TILE), (
            A, i64(sa0), i64(sa1), B, i64(sb0), i64(sb1), C, i64(C.shape[1]), i32(M), i32(N), i32(K),
            self.hp, i32(hp_modes[0]), i32(hp_modes[1]),
            bias if bias is not None else dummy, i32(bias is not None), i32(relu),
            mask if mask is not None else dummy, i64(mask.shape[1] if mask is not None else 0), i32(mask is not None),
        ))

    def _launch(self, buf):
        """The kernels of one step for a batch of ``buf.n`` rows (recorded into the graph)."""
        net, p, k, i32 = self.net, self.net.params, self.k, np.int32
        n, L, D = buf.n, net.n_layers, net.n_in
        momentum = self._signature[0]  # as _prepare found it
        threads = 256
        k["gather"](((n * D + threads - 1) // threads,), (threads,),
                    (self.Xd, self.labels, self.perm, self.off, buf.Xb, buf.tb, i32(n), i32(D)))
        H = buf.Xb
        for l in range(1, L):
            self._gemm(H, False, p[f"W{l}"], False, buf.H[l], bias=p[f"b{l}"], relu=True)
            H = buf.H[l]
        self._gemm(H, False, p[f"W{L}"], False, buf.A, bias=p[f"b{L}"])
        C = net.n_classes
        k["softmax_ce"](((n + threads - 1) // threads,), (threads,),
                        (buf.A, buf.tb, i32(n), i32(C), i32(self.reduction == "mean"), self._loss, self._correct))
        a = buf.A
        for l in range(L, 0, -1):
            H_prev = buf.H[l - 1] if l > 1 else buf.Xb
            W, b = p[f"W{l}"], p[f"b{l}"]
            if l > 1:  # h = (a Wᵀ) masked by H > 0, before W changes
                self._gemm(a, False, W, True, buf.h[l - 1], mask=buf.H[l - 1])
            width = b.shape[0]
            vb = self._velocity[f"b{l}"] if momentum else b
            k["bias_update"](((width + threads - 1) // threads,), (threads,),
                             (a, i32(n), i32(width), b, vb, self.hp, i32(momentum)))
            if momentum:  # V = μV − η H_prevᵀ a, then W += V
                V = self._velocity[f"W{l}"]
                self._gemm(H_prev, True, a, False, V, hp_modes=(1, 2))
                k["axpy"](((W.size + threads - 1) // threads,), (threads,), (W, V, np.int64(W.size)))
            else:  # W += −η H_prevᵀ a
                self._gemm(H_prev, True, a, False, W, hp_modes=(1, 1))
            if l > 1:
                a = buf.h[l - 1]
        k["advance"]((1,), (1,), (self.off, np.int64(n)))

    # -------------------------------------------------------------- running
    def _begin(self):
        """Order our stream after the work queued so far on the current stream (no host wait)."""
        cp = self.cp
        self.stream.wait_event(cp.cuda.get_current_stream().record(self._events[0]))

    def _end(self):
        cp = self.cp
        cp.cuda.get_current_stream().wait_event(self.stream.record(self._events[1]))

    def epoch(self, order_d, batch_size, comm=None, on_batches=None, log_every=50):
        """Train on every batch of ``order_d`` (the epoch's permutation, on the device), replaying graphs."""
        if comm is not None and comm.size > 1:
            raise ValueError("the CuPy graph step runs in one process only")
        self._prepare()
        N = order_d.shape[0]
        self.perm[:N] = order_d
        self.off.fill(0)
        n_full, tail = divmod(N, batch_size)
        # Capture only the batch sizes this epoch replays: with N < batch_size there is no full batch.
        graphs = ([(self._graph(batch_size), n_full)] if n_full else []) + ([(self._graph(tail), 1)] if tail else [])
        n_batches = n_full + (1 if tail else 0)
        self._begin()
        b = 0
        for graph, count in graphs:
            for _ in range(count):
                graph.launch(self.stream)
                self.opt.t += 1  # the optimizer's count of updates, as Optimizer.update keeps it
                b += 1
                if on_batches is not None and (b % log_every == 0 or b == n_batches):
                    self._end()
                    seen = min(b * batch_size, N)
                    on_batches(b, n_batches, lambda n=seen: float(self._loss) / n)
        self._end()

    def __call__(self, idx, n=None, masks=None):
        """One step on the rows ``idx`` (TrainStep's interface; fit uses :meth:`epoch`)."""
        if masks is not None:  # unsupported() refuses nets with dropout; masks given by hand are refused here
            raise ValueError("masks: the CuPy graph step has no dropout (its kernels take no masks); got masks")
        if n is not None and n != idx.shape[0]:
            # The captured kernels divide the mean by the batch's rows; a global batch size n of several
            # processes' shares would need another divisor (and this step runs in one process only).
            raise ValueError(f"n: the CuPy graph step takes the global batch size only equal to the rows of idx "
                             f"({idx.shape[0]}), got {n}")
        self._prepare()
        n = idx.shape[0]
        self.perm[:n] = idx
        self.off.fill(0)
        graph = self._graph(n)
        self._begin()
        graph.launch(self.stream)
        self.opt.t += 1
        self._end()
