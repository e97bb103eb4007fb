#!/usr/bin/env python
"""Speed of nnarray against yardsticks measured in the same process: ms per epoch of the seed network.

What is measured
----------------
Whole training epochs of the seed network (one hidden ReLU layer, softmax + cross-entropy, plain SGD,
η = 0.1 with ``reduction="mean"``, float32 by default) on MNIST-shaped data (784 inputs, 10 classes,
60 000 samples per epoch), for the configurations

    784-100-10 at batch 100, 784-1000-10 at batch 100, 784-4096-10 at batch 1024

(``--configs 100x100,1000x100,4096x1024``: hidden units x batch size). Every epoch draws a host
permutation, visits every sample once (the last batch may be smaller) and reads the epoch's loss at the
end, which synchronises with the device. Implementations:

* ``nnarray-<backend>`` — :func:`nnarray.fit` for one epoch; the time is ``hist.seconds[-1]`` (fit reads
  its metrics per epoch, which syncs). Backends: numpy, and cupy when a CUDA device answers (``--backends``
  also accepts array_api_strict and torch, i.e. PyTorch driven through nnarray's Array API code).
* ``plain-numpy`` — what a competent user writes directly in float32 NumPy: X[idx] gather from a host
  permutation, ``X@W1 + b1``, ``np.maximum``, ``H@W2 + b2``, stable softmax, running loss sum,
  ``(Y − T)/N``, the ``.T`` products, the ReLU mask and in-place SGD ``W -= lr*dW``
  (:func:`plain_train_epoch`, which takes the initial weights and the permutation explicitly so that
  tests can check it computes exactly what nnarray computes).
* ``cupy-plain`` — the same function with ``xp = cupy`` (data and permutation on the GPU).
* ``torch-eager`` — nn.Linear, ReLU, nn.Linear, CrossEntropyLoss, torch.optim.SGD with
  zero_grad/backward/step, data as tensors on the device gathered per batch by a permutation index; CUDA
  when available, else the CPU with torch's default thread count.
* ``torch-cudagraph`` (CUDA only) — the yardstick of shared/README.md: three warm-up steps on a side stream,
  the whole step (zero_grad(set_to_none=False), forward, loss, backward, optimizer step) captured once with
  ``torch.cuda.graph`` on static input buffers; per step the batch is copied into those buffers and the
  graph replayed; the data lives on the GPU and each epoch gathers it by a permutation. A last partial
  batch gets its own captured graph.

Method: per configuration, each implementation is prepared (data moved to its device once, He-initialised
weights from the same seed) and warmed up with a partial epoch (20 batches plus the tail batch shape).
Then ``--repeats`` timed epochs are run round-robin across the implementations, so machine noise hits
all alike; each timed epoch follows at least ``--settle`` seconds (0.3) of untimed batches of the same
implementation, because right after another library's thread pool ran, the first few hundred ms measured
up to 2x slower (OpenBLAS and torch's OpenMP threads on a 2-core machine). The table reports the
median ms/epoch, samples/s and the ratios nnarray / yardstick (> 1 means nnarray is slower).
``--samples N`` (or ``--epochs-fraction f``) times epochs of N samples and scales ms/epoch to 60 000
samples, for quick runs. TF32 is off for the torch yardsticks; ``CUPY_TF32`` set to a
true value is reported in the header because it changes CuPy's float32 matmuls.

Usage::

    python scripts/bench.py                                  # CPU: 100x100,1000x100; GPU: all three
    python scripts/bench.py --configs 100x100 --repeats 5 --json bench.json
    python scripts/bench.py --samples 6000 --data random     # quick
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

EPOCH_SAMPLES = 60000
N_IN = 784
N_CLASSES = 10
LR = 0.1
SEED = 0
WARMUP_BATCHES = 20
# Before each timed epoch, an implementation runs untimed batches (chunks of SETTLE_BATCHES) for at least
# SETTLE_SECONDS. Round-robin puts different thread pools (OpenBLAS's, torch's OpenMP) back to back in one
# process; on a 2-core machine the first ~0.1-0.3 s after a switch measured up to 2x slower for torch and
# ~1.3x for NumPy, a cost no single-library program pays. ``--settle 0`` turns this off.
SETTLE_BATCHES = 20
SETTLE_SECONDS = 0.3
DEFAULT_CONFIGS_CPU = "100x100,1000x100"
DEFAULT_CONFIGS_GPU = "100x100,1000x100,4096x1024"
YARDSTICKS = ("plain-numpy", "cupy-plain", "torch-eager", "torch-cudagraph")
_TRUE = ("1", "true", "yes", "on")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")


# --------------------------------------------------------------------------- data
def load_data(kind="auto", n_samples=EPOCH_SAMPLES, seed=SEED):
    """Training data of MNIST shape: ``(X float32 (n, 784), t int64 (n,), description)``.

    ``kind``: ``"fashion-mnist"`` (nnarray.datasets; error if not found), ``"random"`` (uniform [0, 1) pixels, uniform labels) or ``"auto"``
    (Fashion-MNIST when found, else random). With ``n_samples`` below 60 000 the first rows are used;
    above, random data is required.
    """
    if kind not in ("auto", "fashion-mnist", "random"):
        raise ValueError(f"data: expected auto, fashion-mnist or random, got {kind!r}")
    reasons = []
    if kind != "random" and n_samples <= EPOCH_SAMPLES:
        try:
            import nnarray as nn  # noqa: PLC0415

            (X, t), _ = nn.datasets.load_fashion_mnist(download=False)
            X, t = np.asarray(X, dtype=np.float32), np.asarray(t, dtype=np.int64)
            return X[:n_samples], t[:n_samples], "Fashion-MNIST"
        except FileNotFoundError as exc:  # DatasetNotFoundError: fall back to random data and say why
            reasons.append(str(exc).splitlines()[0])
    elif kind != "random":
        reasons.append(f"{n_samples} samples requested, more than Fashion-MNIST's {EPOCH_SAMPLES}")
    if kind == "fashion-mnist":
        raise RuntimeError("Fashion-MNIST not available: " + "; ".join(reasons))
    rng = np.random.default_rng(seed + 12345)
    X = rng.random((n_samples, N_IN), dtype=np.float32)
    t = rng.integers(0, N_CLASSES, size=n_samples, dtype=np.int64)
    desc = "random (uniform [0,1) pixels, uniform labels)"
    if reasons:
        desc += " -- Fashion-MNIST not used: " + "; ".join(reasons)
    return X, t, desc


def he_init(sizes, seed=SEED, dtype="float32"):
    """Host weights exactly as ``nn.MLP(sizes, seed=seed)`` draws them: W ~ N(0, 2/fan_in), b = 0."""
    rng = np.random.default_rng(seed)
    params = {}
    for l, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        params[f"W{l}"] = (rng.standard_normal((fi, fo)) * math.sqrt(2.0 / fi)).astype(dtype)
        params[f"b{l}"] = np.zeros(fo, dtype=dtype)
    return params


# --------------------------------------------------------------------------- plain NumPy / CuPy yardstick
def plain_train_epoch(xp, X, T, params, order, batch_size, lr=LR):
    """One epoch of the seed network, written directly (NumPy or CuPy as ``xp``), mean reduction.

    ``X`` (N, 784) and one-hot ``T`` (N, C) live on ``xp``'s device; ``params`` is a dict W1, b1, W2, b2
    of ``xp`` arrays, updated in place; ``order`` is the epoch's permutation (an ``xp`` integer array).
    The last partial batch is included. Returns the summed cross-entropy over the epoch (a 0-d array,
    not synchronised).
    """
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    n_total = order.shape[0]
    loss = xp.zeros((), dtype=W1.dtype)
    for s in range(0, n_total, batch_size):
        idx = order[s : s + batch_size]
        Xb = X[idx]
        Tb = T[idx]
        n = Xb.shape[0]
        # forward
        H = Xb @ W1
        H += b1
        xp.maximum(H, 0, out=H)
        A = H @ W2
        A += b2
        A -= A.max(axis=1, keepdims=True)  # stable softmax: shifted logits S
        E = xp.exp(A)
        Z = E.sum(axis=1, keepdims=True)
        loss += xp.log(Z).sum() - (Tb * A).sum()  # Σ_n log Z_n − Σ T·S
        # backward
        dA = (E / Z - Tb) / n  # (Y − T) / N
        dW2 = H.T @ dA
        db2 = dA.sum(axis=0)
        dH = dA @ W2.T
        dH *= H > 0  # ReLU mask
        dW1 = Xb.T @ dH
        db1 = dH.sum(axis=0)
        # SGD, in place
        W1 -= lr * dW1
        b1 -= lr * db1
        W2 -= lr * dW2
        b2 -= lr * db2
    return loss


# --------------------------------------------------------------------------- implementations
class Unavailable(Exception):
    """The implementation cannot run here (the message says why)."""


class Impl:
    """One implementation under test. ``prepare`` once per config, then ``epoch(n)`` returns seconds."""

    name = "?"
    kind = "yardstick"

    def __init__(self, cfg, X, t, dtype, seed=SEED):
        self.cfg, self.dtype, self.seed = cfg, dtype, seed
        self.sizes = [N_IN, cfg["hidden"], N_CLASSES]
        self.B = cfg["batch"]
        self.N = X.shape[0]
        self.rng = np.random.default_rng(seed)
        self.last_loss = None
        self.prepare(X, t)

    def prepare(self, X, t):
        raise NotImplementedError

    def epoch(self, n=None):
        """Train one epoch on the first ``n`` samples' worth of a fresh permutation; return seconds."""
        raise NotImplementedError

    def warmup(self):
        n = min(self.N, WARMUP_BATCHES * self.B + self.N % self.B)
        self.epoch(n)

    def settle(self, seconds=None):
        """Untimed batches of this implementation right before a timed epoch (see ``SETTLE_SECONDS``)."""
        seconds = SETTLE_SECONDS if seconds is None else seconds
        n = min(self.N, SETTLE_BATCHES * self.B)
        deadline = time.perf_counter() + seconds
        while True:
            self.epoch(n)
            if time.perf_counter() >= deadline:
                break


class NnarrayImpl(Impl):
    kind = "nnarray"

    def __init__(self, backend, *a, **k):
        # "numpy" uses nnarray's automatic choice (the fast path where one exists);
        # "numpy:generic" forces the generic Array API path (fit(fast=False)), "cupy:fast" a fast path
        # (fit(fast=True): the experimental CUDA-graph step on CuPy).
        self.backend_name, _, variant = backend.partition(":")
        if variant not in ("", "generic", "fast"):
            raise Unavailable(f"unknown variant {variant!r} (generic or fast)")
        self.fast = {"": None, "generic": False, "fast": True}[variant]
        self.name = f"nnarray-{self.backend_name}" + (f"-{variant}" if variant else "")
        super().__init__(*a, **k)

    def prepare(self, X, t):
        import nnarray as nn  # noqa: PLC0415

        try:
            be = nn.get_backend(self.backend_name)
        except Exception as exc:  # noqa: BLE001
            raise Unavailable(str(exc)) from exc
        self.nn, self.be = nn, be
        self.net = nn.MLP(self.sizes, backend=be, dtype=self.dtype, seed=self.seed)
        self.opt = nn.SGD(lr=LR)
        # Data moved once; fit then recognises the backend's own arrays and does not copy them.
        self.Xd = be.asarray(X, dtype=self.net.dtype)
        self.td = be.asarray(t, dtype=be.xp.int64)

    def epoch(self, n=None):
        n = self.N if n is None else n
        Xd, td = (self.Xd, self.td) if n == self.N else (self.Xd[:n, ...], self.td[:n])
        hist = self.nn.fit(self.net, self.opt, Xd, td, epochs=1, batch_size=self.B, reduction="mean", seed=self.rng,
                           fast=self.fast)
        self.last_loss = hist.train_loss[-1]
        return hist.seconds[-1]


class PlainImpl(Impl):
    """The plain NumPy code; with ``xp = cupy`` it is the 'cupy-plain' yardstick."""

    def __init__(self, xp_name, *a, **k):
        self.xp_name = xp_name
        self.name = "plain-numpy" if xp_name == "numpy" else "cupy-plain"
        super().__init__(*a, **k)

    def prepare(self, X, t):
        if self.xp_name == "numpy":
            xp = np
            self.sync = lambda: None
        else:
            try:
                import cupy as xp  # noqa: PLC0415

                if xp.cuda.runtime.getDeviceCount() < 1:
                    raise Unavailable("no CUDA device")
            except Unavailable:
                raise
            except Exception as exc:  # noqa: BLE001
                raise Unavailable(f"cupy: {type(exc).__name__}: {exc}") from exc
            self.sync = lambda: xp.cuda.get_current_stream().synchronize()
        self.xp = xp
        dt = np.dtype(self.dtype)
        self.X = xp.asarray(X, dtype=dt)
        T = (t[:, None] == np.arange(N_CLASSES)).astype(dt)  # one-hot teacher, built once
        self.T = xp.asarray(T)
        self.params = {k: xp.asarray(v) for k, v in he_init(self.sizes, self.seed, dt).items()}

    def epoch(self, n=None):
        n = self.N if n is None else n
        xp = self.xp
        start = time.perf_counter()
        order = self.rng.permutation(self.N)[:n]
        order = order if xp is np else xp.asarray(order)
        loss = plain_train_epoch(xp, self.X, self.T, self.params, order, self.B, LR)
        self.last_loss = float(loss) / n  # reading the loss synchronises
        self.sync()
        return time.perf_counter() - start


def _import_torch():
    try:
        import torch  # noqa: PLC0415
    except Exception as exc:  # noqa: BLE001
        raise Unavailable(f"torch not importable: {type(exc).__name__}: {exc}") from exc
    # Comparisons are TF32-off (TF32 changes float32 matmul results).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return torch


def _torch_cuda_ok(torch):
    try:
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


class TorchImpl(Impl):
    """torch eager (device: CUDA when available, else CPU) or, with ``graph=True``, torch + CUDA graph."""

    def __init__(self, graph, *a, **k):
        self.graph = graph
        self.name = "torch-cudagraph" if graph else "torch-eager"
        super().__init__(*a, **k)

    def prepare(self, X, t):
        torch = _import_torch()
        cuda = _torch_cuda_ok(torch)
        if self.graph and not cuda:
            raise Unavailable("CUDA graphs need a CUDA device; torch.cuda.is_available() is False")
        self.torch = torch
        self.device = torch.device("cuda" if cuda else "cpu")
        tdt = getattr(torch, self.dtype)
        p = he_init(self.sizes, self.seed, self.dtype)
        lin1, lin2 = torch.nn.Linear(N_IN, self.sizes[1]), torch.nn.Linear(self.sizes[1], N_CLASSES)
        model = torch.nn.Sequential(lin1, torch.nn.ReLU(), lin2).to(device=self.device, dtype=tdt)
        with torch.no_grad():  # same initial weights as nnarray (torch stores W transposed)
            lin1.weight.copy_(torch.from_numpy(p["W1"].T.copy()))
            lin1.bias.zero_()
            lin2.weight.copy_(torch.from_numpy(p["W2"].T.copy()))
            lin2.bias.zero_()
        self.model = model
        self.loss_fn = torch.nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(model.parameters(), lr=LR)
        self.Xd = torch.as_tensor(X, dtype=tdt).to(self.device)
        self.td = torch.as_tensor(t, dtype=torch.int64).to(self.device)
        self.graphs = {}  # batch size -> (graph, static_x, static_t, static_loss_sum)

    def _sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def epoch(self, n=None):
        return self._epoch_graph(n) if self.graph else self._epoch_eager(n)

    def _epoch_eager(self, n=None):
        torch, B = self.torch, self.B
        n = self.N if n is None else n
        self._sync()
        start = time.perf_counter()
        order = torch.from_numpy(self.rng.permutation(self.N)[:n]).to(self.device)
        running = torch.zeros((), dtype=self.Xd.dtype, device=self.device)
        model, loss_fn, opt = self.model, self.loss_fn, self.opt
        for s in range(0, n, B):
            idx = order[s : s + B]
            xb, tb = self.Xd[idx], self.td[idx]
            opt.zero_grad()
            loss = loss_fn(model(xb), tb)
            loss.backward()
            opt.step()
            running += loss.detach() * xb.shape[0]
        self.last_loss = float(running) / n  # synchronises
        self._sync()
        return time.perf_counter() - start

    def _capture(self, b):
        """Warm up on a side stream and capture the whole training step for batch size ``b``."""
        torch = self.torch
        model, loss_fn, opt = self.model, self.loss_fn, self.opt
        sx = torch.empty((b, N_IN), dtype=self.Xd.dtype, device=self.device)
        st = torch.zeros((b,), dtype=torch.int64, device=self.device)
        sx.copy_(self.Xd[:b])
        st.copy_(self.td[:b])
        loss_sum = torch.zeros((), dtype=self.Xd.dtype, device=self.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                opt.zero_grad(set_to_none=False)
                loss = loss_fn(model(sx), st)
                loss.backward()
                opt.step()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=False)
        with torch.cuda.graph(g):
            opt.zero_grad(set_to_none=False)
            loss = loss_fn(model(sx), st)
            loss.backward()
            opt.step()
            loss_sum.add_(loss.detach() * b)  # running loss, accumulated inside the graph
        torch.cuda.synchronize()
        self.graphs[b] = (g, sx, st, loss_sum)
        return self.graphs[b]

    def _batch_shapes(self, n):
        """The batch sizes an epoch of ``n`` samples uses (full batches and the last partial one)."""
        return ({self.B} if n >= self.B else set()) | ({n % self.B} if n % self.B else set())

    def warmup(self):
        if self.graph:  # capture the graphs for every batch shape an epoch uses, then replay a partial epoch
            for b in sorted(self._batch_shapes(self.N), reverse=True):
                self._capture(b)
        super().warmup()

    def _epoch_graph(self, n=None):
        torch, B = self.torch, self.B
        n = self.N if n is None else n
        for b in self._batch_shapes(n) - set(self.graphs):
            self._capture(b)
        for _, _, _, ls in self.graphs.values():
            ls.zero_()
        torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.from_numpy(self.rng.permutation(self.N)[:n]).to(self.device)
        Xp, tp = self.Xd[order], self.td[order]  # the epoch's gather by the permutation, on the GPU
        for s in range(0, n, B):
            g, sx, st, _ = self.graphs[min(B, n - s)]
            sx.copy_(Xp[s : s + B], non_blocking=True)
            st.copy_(tp[s : s + B], non_blocking=True)
            g.replay()
        total = sum(float(ls) for _, _, _, ls in self.graphs.values())  # synchronises
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        self.last_loss = total / n
        return elapsed


def build_impls(cfg, X, t, backends, dtype, seed=SEED):
    """All implementations for one config: list of (name, Impl or None, reason)."""
    makers = [(f"nnarray-{b.replace(':', '-')}", lambda b=b: NnarrayImpl(b, cfg, X, t, dtype, seed)) for b in backends]
    makers += [
        ("plain-numpy", lambda: PlainImpl("numpy", cfg, X, t, dtype, seed)),
        ("cupy-plain", lambda: PlainImpl("cupy", cfg, X, t, dtype, seed)),
        ("torch-eager", lambda: TorchImpl(False, cfg, X, t, dtype, seed)),
        ("torch-cudagraph", lambda: TorchImpl(True, cfg, X, t, dtype, seed)),
    ]
    out = []
    for name, make in makers:
        try:
            out.append((name, make(), None))
        except Unavailable as exc:
            out.append((name, None, str(exc)))
        except Exception as exc:  # noqa: BLE001 -- one broken impl must not stop the others
            out.append((name, None, f"failed to prepare: {type(exc).__name__}: {exc}"))
    return out


# --------------------------------------------------------------------------- environment
def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in ("avx2", "avx512f", "fma", "amx_tile") if f in flags]
    except OSError:
        pass
    return []


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def environment():
    """Machine and library description (a JSON-ready dict)."""
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "numpy": np.__version__,
        "blas": None,
        "torch": None,
        "torch_threads": None,
        "cupy": None,
        "gpu": None,
        "cupy_tf32": os.environ.get("CUPY_TF32"),
        "thread_env": {k: os.environ[k] for k in _THREAD_VARS if k in os.environ},
        "loadavg_start": _loadavg(),
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        env["blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001
        pass
    try:
        import nnarray  # noqa: PLC0415

        env["nnarray"] = getattr(nnarray, "__version__", "?")
    except Exception as exc:  # noqa: BLE001
        env["nnarray"] = f"not importable ({exc})"
    try:
        torch = _import_torch()
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        if _torch_cuda_ok(torch):
            env["gpu"] = torch.cuda.get_device_name(0)
    except Unavailable as exc:
        env["torch"] = f"not available ({exc})"
    try:
        import cupy  # noqa: PLC0415

        env["cupy"] = cupy.__version__
        try:
            props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
            name = props["name"]
            env["gpu"] = name.decode() if isinstance(name, bytes) else name
            env["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        except Exception as exc:  # noqa: BLE001
            env["cupy"] += f" (no CUDA device: {type(exc).__name__})"
    except Exception as exc:  # noqa: BLE001
        env["cupy"] = f"not available ({type(exc).__name__}: {exc})"
    return env


def gpu_present():
    try:
        import nnarray as nn  # noqa: PLC0415

        if nn.cupy_available():
            return True
    except Exception:  # noqa: BLE001
        pass
    try:
        return _torch_cuda_ok(_import_torch())
    except Unavailable:
        return False


# --------------------------------------------------------------------------- running and reporting
def parse_configs(text):
    """``"100x100,4096x1024"`` -> [{"name", "hidden", "batch"}]."""
    cfgs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            h, b = (int(v) for v in part.lower().split("x"))
            if h < 1 or b < 1:
                raise ValueError
        except ValueError:
            raise SystemExit(f"--configs: expected HIDDENxBATCH items such as 100x100, got {part!r}") from None
        cfgs.append({"name": f"{h}x{b}", "hidden": h, "batch": b, "layers": f"{N_IN}-{h}-{N_CLASSES}"})
    if not cfgs:
        raise SystemExit("--configs: no configuration given")
    return cfgs


def run_config(cfg, X, t, backends, dtype, repeats, log=print, settle=SETTLE_SECONDS):
    """Prepare, warm up and time every implementation round-robin; return the config's result dict."""
    n = X.shape[0]
    scale = EPOCH_SAMPLES / n
    impls = build_impls(cfg, X, t, backends, dtype)
    results = {}
    active = []
    for name, impl, reason in impls:
        results[name] = {"available": impl is not None, "reason": reason}
        if impl is None:
            continue
        try:
            impl.warmup()
            active.append((name, impl))
            results[name]["samples_ms_per_epoch"] = []
        except Exception as exc:  # noqa: BLE001
            results[name] = {"available": False, "reason": f"failed in warm-up: {type(exc).__name__}: {exc}"}
    for r in range(repeats):
        # Rotate who goes first: on these shared 2-core machines an epoch's time depends measurably on
        # what ran just before it, so each implementation takes every position in turn.
        k = r % len(active) if active else 0
        for name, impl in active[k:] + active[:k]:
            try:
                if settle > 0:
                    impl.settle(settle)
                sec = impl.epoch()
            except Exception as exc:  # noqa: BLE001
                results[name] = {"available": False, "reason": f"failed: {type(exc).__name__}: {exc}"}
                active.remove((name, impl))
                continue
            results[name]["samples_ms_per_epoch"].append(1000.0 * sec * scale)
            results[name]["last_train_loss"] = impl.last_loss
        log(f"  [{cfg['name']}] repeat {r + 1}/{repeats} done")
    for name, res in results.items():
        if res.get("available") and res.get("samples_ms_per_epoch"):
            med = statistics.median(res["samples_ms_per_epoch"])
            res["median_ms_per_epoch"] = med
            res["samples_per_s"] = EPOCH_SAMPLES / (med / 1000.0)
    ratios = {}
    for a, ra in results.items():
        if not a.startswith("nnarray-") or "median_ms_per_epoch" not in ra:
            continue
        for y in YARDSTICKS:
            ry = results.get(y, {})
            if "median_ms_per_epoch" in ry:
                ratios[f"{a}/{y}"] = ra["median_ms_per_epoch"] / ry["median_ms_per_epoch"]
    return {
        **cfg,
        "samples_timed_per_epoch": n,
        "scale_to_60000": scale,
        "loadavg_after": _loadavg(),
        "results": results,
        "ratios": ratios,
    }


def format_header(env, data_desc, dtype, repeats, n, settle=SETTLE_SECONDS):
    lines = [
        "nnarray benchmark: seed network, SGD lr=0.1 (mean), " + f"{dtype}, {EPOCH_SAMPLES} samples/epoch",
        f"date        {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"cpu         {env['cpu']} ({', '.join(env['cpu_flags']) or 'no flags read'}); "
        f"{env['cpus_usable']} usable of {env['cpu_count']} cores",
        f"numpy       {env['numpy']} (BLAS: {env['blas']})",
        f"torch       {env['torch']}" + (f", {env['torch_threads']} CPU threads" if env["torch_threads"] else ""),
        f"cupy        {env['cupy']}",
        f"gpu         {env['gpu'] or 'none'}",
        f"load        1/5/15-min load average {env['loadavg_start']} at start"
        + (f"; thread settings {env['thread_env']}" if env["thread_env"] else ""),
        f"data        {data_desc}",
        f"method      warm-up partial epoch, then {repeats} timed epoch(s) per impl, round-robin, each after"
        f" >= {settle:g} s of untimed batches of the same impl; median"
        + (f"; timed on {n} samples/epoch, scaled to {EPOCH_SAMPLES}" if n != EPOCH_SAMPLES else ""),
    ]
    if str(env.get("cupy_tf32", "")).strip().lower() in _TRUE:
        lines.append(
            "WARNING     CUPY_TF32 is set: CuPy float32 matmuls use TF32 (different results, not comparable"
            " to the TF32-off torch yardsticks)"
        )
    return "\n".join(lines)


def format_table(res):
    lines = [f"\n== {res['layers']}, batch {res['batch']}   (load average after: {res['loadavg_after']})"]
    lines.append(f"{'impl':<24}{'ms/epoch':>11}{'samples/s':>13}{'loss*':>9}   all samples (ms)")
    for name, r in res["results"].items():
        if "median_ms_per_epoch" in r:
            samples = ", ".join(f"{v:.1f}" for v in r["samples_ms_per_epoch"])
            loss = r.get("last_train_loss")
            loss_s = f"{loss:9.4f}" if loss is not None else f"{'':>9}"
            lines.append(f"{name:<24}{r['median_ms_per_epoch']:11.1f}{r['samples_per_s']:13,.0f}{loss_s}   {samples}")
        else:
            lines.append(f"{name:<24}  not available ({r.get('reason')})")
    for key, v in res["ratios"].items():
        lines.append(f"ratio {key:<40}{v:8.3f}")
    lines.append("* mean training loss of the last timed epoch: a sanity check that every impl learns, not a comparison"
                 " (warm-up and settle batches differ between impls)")
    return "\n".join(lines)


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--configs", default=None, help="HIDDENxBATCH list, e.g. 100x100,1000x100,4096x1024 "
                   f"(default: {DEFAULT_CONFIGS_CPU} on CPU, {DEFAULT_CONFIGS_GPU} with a GPU)")
    p.add_argument("--repeats", type=int, default=6, help="timed epochs per implementation, rotating who goes first (median reported)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--samples", type=int, default=None, help="samples per timed epoch (scaled to 60000)")
    g.add_argument("--epochs-fraction", type=float, default=None, help="fraction of 60000 samples per timed epoch")
    p.add_argument("--backends", default=None,
                   help="nnarray backends, comma-separated among numpy,cupy,array_api_strict,torch; "
                        "append :generic to force the generic Array API path (e.g. numpy:generic), :fast to force "
                        "a fast path (e.g. cupy:fast) (default: numpy,numpy:generic, plus cupy,cupy:fast with a GPU)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--data", default="auto", choices=["auto", "fashion-mnist", "random"])
    p.add_argument("--settle", type=float, default=SETTLE_SECONDS, metavar="SECONDS",
                   help="untimed batches of the same implementation before each timed epoch, at least this "
                        f"long (default {SETTLE_SECONDS}; 0 = off)")
    p.add_argument("--json", default=None, metavar="PATH", help="write all results as JSON to PATH")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("--repeats: expected a positive integer")
    n = EPOCH_SAMPLES
    if args.samples is not None:
        n = args.samples
    elif args.epochs_fraction is not None:
        n = int(round(EPOCH_SAMPLES * args.epochs_fraction))
    if n < 1:
        raise SystemExit("--samples / --epochs-fraction: need at least one sample per epoch")
    gpu = gpu_present()
    cfgs = parse_configs(args.configs or (DEFAULT_CONFIGS_GPU if gpu else DEFAULT_CONFIGS_CPU))
    if args.backends:
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    else:
        import nnarray as nn  # noqa: PLC0415

        backends = ["numpy", "numpy:generic"] + (["cupy", "cupy:fast"] if nn.cupy_available() else [])

    X, t, data_desc = load_data(args.data, n)
    env = environment()
    print(format_header(env, data_desc, args.dtype, args.repeats, n, args.settle), flush=True)
    results = []
    for cfg in cfgs:
        res = run_config(
            cfg, X, t, backends, args.dtype, args.repeats, log=lambda s: print(s, file=sys.stderr), settle=args.settle
        )
        results.append(res)
        print(format_table(res), flush=True)
    report = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "environment": env,
        "settings": {
            "dtype": args.dtype,
            "lr": LR,
            "reduction": "mean",
            "repeats": args.repeats,
            "samples_per_epoch_timed": n,
            "epoch_samples": EPOCH_SAMPLES,
            "backends": backends,
            "data": data_desc,
            "warmup": f"partial epoch of {WARMUP_BATCHES} batches plus the tail batch shape",
            "settle_seconds": args.settle,
            "argv": list(sys.argv[1:] if argv is None else argv),
        },
        "configs": results,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return report


if __name__ == "__main__":
    main()
