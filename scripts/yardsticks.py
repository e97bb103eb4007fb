"""What nnarray is measured against, shared by ``bench.py`` and ``time_to_accuracy.py``.

* :func:`initial_params` — the seed network's initial weights exactly as ``nn.MLP(sizes, seed=seed)`` draws
  them (host NumPy), so every yardstick starts where nnarray starts.
* :func:`plain_train_epoch` — the seed network written directly in NumPy (or CuPy) by a competent user.
* :class:`TorchTrainer` — the same network in PyTorch (nn.Linear, ReLU, nn.Linear, CrossEntropyLoss,
  torch.optim.SGD) from those weights: eager, or with the whole step captured in CUDA graphs.
* :func:`environment` / :func:`describe` — the machine and library versions a figure was measured with.

The scripts import this module by name (``import yardsticks``): a script's own folder is ``sys.path[0]``.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import warnings
from pathlib import Path

import numpy as np

import nnarray as nn

N_IN, N_CLASSES = 784, 10
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")
_TRUE = ("1", "true", "yes", "on")


class Unavailable(Exception):
    """A yardstick cannot run here (the message says why)."""


def initial_params(sizes, seed=0, dtype="float32"):
    """``{"W1": (n_in, n_1), "b1": (n_1,), ...}``: host NumPy copies of ``nn.MLP(sizes, seed=seed)``'s weights."""
    net = nn.MLP(sizes, backend="numpy", dtype=dtype, seed=seed)
    return {k: np.array(v, copy=True) for k, v in net.params.items()}


def plain_train_epoch(xp, X, T, params, order, batch_size, lr=0.1):
    """One epoch of the seed network written directly (NumPy or CuPy as ``xp``), mean reduction, in-place SGD.

    ``X`` (N, 784) and one-hot ``T`` (N, C) live on ``xp``'s device; ``params`` (W1, b1, W2, b2 as ``xp``
    arrays) are updated in place; ``order`` is the epoch's permutation (``xp`` integers), the last partial
    batch included. Returns the summed cross-entropy of the epoch (0-d array, not synchronised).
    """
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    loss = xp.zeros((), dtype=W1.dtype)
    for s in range(0, order.shape[0], batch_size):
        idx = order[s : s + batch_size]
        Xb, Tb = X[idx], T[idx]
        H = Xb @ W1
        H += b1
        xp.maximum(H, 0, out=H)
        A = H @ W2
        A += b2
        A -= A.max(axis=1, keepdims=True)  # stable softmax: shifted logits S
        E = xp.exp(A)
        Z = E.sum(axis=1, keepdims=True)
        loss += xp.log(Z).sum() - (Tb * A).sum()  # Σ_n log Z_n − Σ T·S
        dA = (E / Z - Tb) / Xb.shape[0]  # (Y − T) / N
        dW2 = H.T @ dA
        db2 = dA.sum(axis=0)
        dH = dA @ W2.T
        dH *= H > 0  # ReLU mask
        dW1 = Xb.T @ dH
        db1 = dH.sum(axis=0)
        W1 -= lr * dW1
        b1 -= lr * db1
        W2 -= lr * dW2
        b2 -= lr * db2
    return loss


# --------------------------------------------------------------------------- PyTorch
def import_torch():
    """torch with FP32 matmuls in full precision ("ieee": no TF32, which keeps ~10 mantissa bits)."""
    try:
        import torch  # noqa: PLC0415
    except Exception as exc:  # noqa: BLE001 -- a broken install counts as missing
        raise Unavailable(f"torch not importable: {type(exc).__name__}: {exc}") from exc
    if hasattr(torch.backends, "fp32_precision"):  # torch >= 2.9; mixing it with allow_tf32 is an error there
        torch.backends.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.fp32_precision = "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return torch


def torch_fp32_precision(torch):
    """What :func:`import_torch` set, read back (recorded beside every figure)."""
    if hasattr(torch.backends, "fp32_precision"):
        return {"api": "fp32_precision", "generic": torch.backends.fp32_precision,
                "cuda.matmul": torch.backends.cuda.matmul.fp32_precision,
                "cudnn": torch.backends.cudnn.fp32_precision}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"api": "allow_tf32", "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32}


def torch_cuda(torch):
    try:
        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


class TorchTrainer:
    """The seed network in PyTorch from nnarray's weights ``params``; data moved to ``device`` once.

    ``graph=False``: eager (zero_grad, forward, loss, backward, step; each batch gathered by the permutation).
    ``optimizer``: a callable ``parameters -> torch.optim.Optimizer`` instead of SGD(lr, momentum); ``dropout``:
    p of a ``torch.nn.Dropout`` after the ReLU (0: none).
    ``graph=True`` (CUDA only): the whole step (zero_grad(set_to_none=False), forward, loss, backward, step,
    running loss) captured once per batch shape on static buffers, after 3 warm-up steps on a side stream whose
    training is undone; per batch the rows are copied into the buffers and the graph replayed. torch.optim.SGD
    bakes ``lr`` into the captured kernels (it passes it as a host scalar), so a new ``lr`` recaptures.
    """

    def __init__(self, torch, params, X, t, batch_size, lr, momentum=0.0, dtype="float32", graph=False,
                 optimizer=None, dropout=0.0):
        cuda = torch_cuda(torch)
        if graph and not cuda:
            raise Unavailable("CUDA graphs need a CUDA device; torch.cuda.is_available() is False")
        self.torch, self.graph, self.B = torch, graph, batch_size
        self.device = torch.device("cuda" if cuda else "cpu")
        self.dtype = getattr(torch, dtype)
        n_hidden = params["W1"].shape[1]
        lin1, lin2 = torch.nn.Linear(params["W1"].shape[0], n_hidden), torch.nn.Linear(n_hidden, params["W2"].shape[1])
        layers = [lin1, torch.nn.ReLU()] + ([torch.nn.Dropout(dropout)] if dropout else []) + [lin2]
        self.model = torch.nn.Sequential(*layers).to(device=self.device, dtype=self.dtype)
        with torch.no_grad():  # torch stores W as (out, in): transpose nnarray's (in, out)
            for lin, l in ((lin1, 1), (lin2, 2)):
                lin.weight.copy_(torch.from_numpy(params[f"W{l}"].T.copy()))
                lin.bias.copy_(torch.from_numpy(params[f"b{l}"]))
        self.loss_fn = torch.nn.CrossEntropyLoss()  # mean over the batch
        # ``optimizer(parameters)`` builds another torch optimizer (bench.py's recipes: fused AdamW, ...).
        params_t = self.model.parameters()
        self.opt = optimizer(params_t) if optimizer else torch.optim.SGD(params_t, lr=lr, momentum=momentum)
        self.Xd, self.td = self.tensor(X), self.tensor(t, torch.int64)
        self.static, self.graphs, self.captured_lr, self.captures = {}, {}, lr, 0

    def tensor(self, a, dtype=None):
        return self.torch.as_tensor(a, dtype=dtype or self.dtype).to(self.device)

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def epoch(self, order, lr):
        """Train on the rows ``order`` (host permutation, any length); return the summed loss (synchronises)."""
        order = self.tensor(order, self.torch.int64)
        if self.graph:
            return self._epoch_graph(order, lr)
        for group in self.opt.param_groups:
            group["lr"] = lr
        running = self.torch.zeros((), dtype=self.dtype, device=self.device)
        for s in range(0, order.shape[0], self.B):
            idx = order[s : s + self.B]
            xb, tb = self.Xd[idx], self.td[idx]
            self.opt.zero_grad()
            loss = self.loss_fn(self.model(xb), tb)
            loss.backward()
            self.opt.step()
            running += loss.detach() * xb.shape[0]
        return float(running)

    def accuracy(self, Xv, tv, batch=10000):
        """Fraction of rows of the device tensors ``Xv``, ``tv`` classified right (synchronises)."""
        with self.torch.no_grad():
            correct = sum((self.model(Xv[s : s + batch]).argmax(dim=1) == tv[s : s + batch]).sum()
                          for s in range(0, Xv.shape[0], batch))
        return int(correct) / Xv.shape[0]

    def _static_for(self, b):
        if b not in self.static:
            torch, model, opt = self.torch, self.model, self.opt
            sx, st = self.Xd[:b].clone(), self.td[:b].clone()
            # Warm-up (allocator, cuBLAS, autograd, optimizer state) on a side stream, as torch.cuda.graph
            # requires, then undo its training: the run stays the run that starts from nnarray's weights.
            saved = [p.detach().clone() for p in model.parameters()]
            bufs = [opt.state.get(p, {}).get("momentum_buffer") for p in model.parameters()]
            bufs = [None if v is None else v.clone() for v in bufs]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    opt.zero_grad(set_to_none=False)
                    self.loss_fn(model(sx), st).backward()
                    opt.step()
            torch.cuda.current_stream().wait_stream(side)
            with torch.no_grad():
                for p, v, buf in zip(model.parameters(), saved, bufs, strict=True):
                    p.copy_(v)
                    new = opt.state.get(p, {}).get("momentum_buffer")
                    if new is not None and buf is not None:
                        new.copy_(buf)
                    elif new is not None:  # no buffer before = zeros: buf = μ·0 + g = g, torch's first step
                        new.zero_()
            torch.cuda.synchronize()
            self.static[b] = (sx, st, torch.zeros((), dtype=self.dtype, device=self.device))
        return self.static[b]

    def _capture(self, b):
        torch, opt = self.torch, self.opt
        sx, st, loss_sum = self._static_for(b)
        g = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=False)
        with torch.cuda.graph(g):
            opt.zero_grad(set_to_none=False)
            loss = self.loss_fn(self.model(sx), st)
            loss.backward()
            opt.step()  # param_group["lr"], a Python float, is baked into these kernels
            loss_sum.add_(loss.detach() * b)
        self.graphs[b] = g
        self.captures += 1

    def _epoch_graph(self, order, lr):
        if lr != self.captured_lr:
            for group in self.opt.param_groups:
                group["lr"] = lr
            self.graphs, self.captured_lr = {}, lr  # release the old graphs before capturing new ones
        n, B = order.shape[0], self.B
        shapes = ({B} if n >= B else set()) | ({n % B} if n % B else set())
        for b in sorted(shapes - set(self.graphs), reverse=True):
            self._capture(b)
        for b in shapes:
            self.static[b][2].zero_()
        Xp, tp = self.Xd[order], self.td[order]  # the epoch's gather by the permutation, on the GPU
        for s in range(0, n, B):
            b = min(B, n - s)
            sx, st, _ = self.static[b]
            sx.copy_(Xp[s : s + b], non_blocking=True)
            st.copy_(tp[s : s + b], non_blocking=True)
            self.graphs[b].replay()
        return sum(float(self.static[b][2]) for b in shapes)  # synchronises


# --------------------------------------------------------------------------- the machine
def _cpuinfo(key):
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def gpu_present():
    if nn.cupy_available():
        return True
    try:
        return torch_cuda(import_torch())
    except Unavailable:
        return False


def environment():
    """Machine and library description (a JSON-ready dict)."""
    flags = set(_cpuinfo("flags").split())
    env = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(), "platform": platform.platform(),
        "cpu": _cpuinfo("model name") or platform.processor() or platform.machine(),
        "cpu_flags": [f for f in ("avx2", "avx512f", "fma", "amx_tile") if f in flags],
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "nnarray": nn.__version__, "numpy": np.__version__, "blas": None,
        "torch": None, "torch_threads": None, "torch_fp32_precision": None, "cupy": None, "gpu": None,
        "cupy_tf32": os.environ.get("CUPY_TF32"),
        "thread_env": {k: os.environ[k] for k in _THREAD_VARS if k in os.environ},
        "loadavg_start": loadavg(),
    }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        env["blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001
        pass
    try:
        torch = import_torch()
        env.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                   torch_fp32_precision=torch_fp32_precision(torch))
        if torch_cuda(torch):
            env["gpu"] = torch.cuda.get_device_name(0)
    except Unavailable as exc:
        env["torch"] = f"not available ({exc})"
    try:
        import cupy  # noqa: PLC0415

        env["cupy"] = cupy.__version__
        try:
            name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
            env["gpu"] = name.decode() if isinstance(name, bytes) else name
            env["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        except Exception as exc:  # noqa: BLE001
            env["cupy"] += f" (no CUDA device: {type(exc).__name__})"
    except Exception as exc:  # noqa: BLE001
        env["cupy"] = f"not available ({type(exc).__name__}: {exc})"
    return env


def describe(env):
    """The header lines every report starts with."""
    prec = env["torch_fp32_precision"]
    lines = [
        f"date        {env['date']}",
        f"cpu         {env['cpu']} ({', '.join(env['cpu_flags']) or 'no flags read'}); "
        f"{env['cpus_usable']} usable of {env['cpu_count']} cores",
        f"gpu         {env['gpu'] or 'none'}",
        f"versions    nnarray {env['nnarray']}, numpy {env['numpy']} (BLAS: {env['blas']}), torch {env['torch']}"
        + (f" ({env['torch_threads']} CPU threads)" if env["torch_threads"] else "") + f", cupy {env['cupy']}",
        f"precision   torch FP32: {prec}" if prec else "precision   torch not used",
        f"load        1/5/15-min load average {env['loadavg_start']} at start"
        + (f"; thread settings {env['thread_env']}" if env["thread_env"] else ""),
    ]
    if str(env.get("cupy_tf32") or "").strip().lower() in _TRUE:
        lines.append("WARNING     CUPY_TF32 is set: CuPy float32 matmuls use TF32 "
                     "(not comparable to torch's IEEE FP32)")
    return lines
