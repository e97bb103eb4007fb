"""The step protocol (nnarray/step.py): one mini-batch, the optimizer's hooks, the epoch driver, fast-path selection."""

import numpy as np
import pytest

import nnarray as nn
from nnarray import functions as F
from nnarray.step import TrainStep, make_step, register_fast_path


def _device_data(net, X, t):
    xp = net.xp
    Xd = net.backend.asarray(X, dtype=net.dtype)
    Td = F.one_hot(xp, net.backend.asarray(t, dtype=xp.int64), net.n_classes, net.dtype)
    return Xd, Td


def test_one_step_is_gradient_then_update(backend, blobs):
    """step(idx) = MLP.gradient on those rows, then opt.update — and the metrics of the loss head."""
    X, t = blobs(n=50, n_in=6, n_classes=3, seed=2)
    net = nn.MLP([6, 5, 3], backend=backend, dtype="float64", seed=0)
    ref = net.to("numpy")
    step = TrainStep(net, nn.SGD(0.1, momentum=0.9), *_device_data(net, X, t), "mean")
    idx = np.array([4, 17, 3, 30, 8])
    step(net.backend.asarray(idx, dtype=net.xp.int64))
    loss_before, acc_before = ref.loss(X[idx], t[idx], reduction="sum"), ref.accuracy(X[idx], t[idx])
    nn.SGD(0.1, momentum=0.9).update(ref.params, ref.gradient(X[idx], t[idx], reduction="mean"))
    for k in ref.params:
        np.testing.assert_allclose(nn.to_numpy(net.params[k]), ref.params[k], rtol=1e-13, atol=1e-15)
    assert float(step.loss_sum) == pytest.approx(loss_before, rel=1e-12)
    assert int(step.correct) == round(acc_before * 5)


def test_the_optimizers_gradient_hooks_see_every_batch_before_the_update(blobs):
    X, t = blobs(n=70, n_in=6, n_classes=3, seed=2)
    net = nn.MLP([6, 5, 3], backend="numpy", dtype="float64", seed=0)
    seen = []

    def hook(params, grads):
        seen.append({k: v.copy() for k, v in grads.items()})
        return {k: 2.0 * v for k, v in grads.items()}  # doubling the gradients = doubling η for plain SGD

    opt = nn.SGD(0.05)
    opt.add_hook(hook)
    step = TrainStep(net, opt, *_device_data(net, X, t), "sum")
    step.reset()
    step.epoch(net.xp.arange(70, dtype=net.xp.int64), 32)
    assert len(seen) == 3 and seen[-1]["W1"].shape == (6, 5)  # 32 + 32 + 6 rows

    ref = nn.MLP([6, 5, 3], backend="numpy", dtype="float64", seed=0)
    nn.fit(ref, nn.SGD(0.1), X, t, epochs=1, batch_size=32, reduction="sum", options=nn.FitOptions(shuffle=False))
    for k in ref.params:
        np.testing.assert_allclose(net.params[k], ref.params[k], rtol=1e-13)


class _FakeComm:
    def __init__(self, rank, size):
        self.rank, self.size, self.local_rank = rank, size, rank


@pytest.mark.parametrize("size", [1, 2, 3])
def test_the_epoch_driver_splits_every_global_batch_into_contiguous_shares(size):
    """Rank r takes rows n·r//P … n·(r+1)//P of each global batch; a tiny last batch leaves some ranks none."""
    calls = {}
    for rank in range(size):
        got = calls[rank] = []

        class Recorder(TrainStep):
            def __init__(self, got):
                self.net = None  # no model: the driver's slicing alone is under test
                self.got = got

            def __call__(self, idx, n=None, masks=None):
                self.got.append((list(np.asarray(idx)), n))

        Recorder(got).epoch(np.arange(10, 32), 10, comm=_FakeComm(rank, size))
    for b, (start, n) in enumerate([(10, 10), (20, 10), (30, 2)]):
        rows = [r for rank in range(size) for r in calls[rank][b][0]]
        assert rows == list(range(start, start + n)), "the shares cover the global batch once, in order"
        assert all(calls[rank][b][1] == n for rank in range(size)), "every rank divides by the global batch"
    if size == 3:
        assert [len(calls[r][2][0]) for r in range(3)] == [0, 1, 1]


def test_progress_reads_only_when_asked_and_counts_batches(blobs):
    X, t = blobs(n=95, n_in=6, n_classes=3, seed=2)
    net = nn.MLP([6, 5, 3], backend="numpy", seed=0)
    step = TrainStep(net, nn.SGD(0.1), *_device_data(net, X, t), "mean")
    calls = []
    step.epoch(net.xp.arange(95, dtype=net.xp.int64), 10, on_batches=lambda b, n, read: calls.append((b, n)),
               log_every=4)
    assert calls == [(4, 10), (8, 10), (10, 10)]


def test_a_registered_fast_path_is_chosen_and_can_be_switched_off(monkeypatch, blobs):
    X, t = blobs(n=50)
    net = nn.MLP([12, 8, 3], backend="numpy", seed=0)
    Xd, Td = _device_data(net, X, t)

    class Buffered(TrainStep):
        name = "test-buffered"
        refuse = None

        @classmethod
        def unsupported(cls, net, opt, Xd, Td, batch_size=None, explicit=False):
            return cls.refuse

    monkeypatch.setattr("nnarray.step._FAST_PATHS", {"numpy": lambda: Buffered})
    assert type(make_step(net, nn.SGD(0.1), Xd, Td, "mean")) is Buffered
    assert type(make_step(net, nn.SGD(0.1), Xd, Td, "mean", fast=False)) is TrainStep
    Buffered.refuse = "optimizer Adam (only SGD)"
    assert type(make_step(net, nn.SGD(0.1), Xd, Td, "mean")) is TrainStep
    with pytest.raises(ValueError, match=r"fast=True: no fast path available here \(optimizer Adam \(only SGD\)\)"):
        make_step(net, nn.SGD(0.1), Xd, Td, "mean", fast=True)
    Buffered.refuse = None
    monkeypatch.setenv("NNARRAY_FAST", "0")
    assert type(make_step(net, nn.SGD(0.1), Xd, Td, "mean")) is TrainStep
    assert type(make_step(net, nn.SGD(0.1), Xd, Td, "mean", fast=True)) is Buffered


def test_registration_is_by_backend_name(monkeypatch):
    monkeypatch.setattr("nnarray.step._FAST_PATHS", {})
    register_fast_path("numpy", lambda: TrainStep)
    from nnarray import step

    assert step._FAST_PATHS["numpy"]() is TrainStep


def test_generic_step_where_no_fast_path_applies(blobs):
    X, t = blobs(n=50)
    strict = nn.MLP([12, 8, 3], backend="array_api_strict", seed=0)
    assert type(make_step(strict, nn.SGD(0.1), *_device_data(strict, X, t), "mean")) is TrainStep
    with pytest.raises(ValueError,
                       match=r"fast=True: no fast path available here \(no fast path for backend 'array_api_strict'\)"):
        nn.fit(strict, nn.SGD(0.1), X, t, epochs=1, options=nn.FitOptions(fast=True))


# ------------------------------------------------------------------------------------ the NumPy fast path
@pytest.fixture
def numba_step(monkeypatch):
    pytest.importorskip("numba", reason="the numba extra (pip install 'nnarray[numba]')")
    monkeypatch.delenv("NNARRAY_NUMBA", raising=False)
    monkeypatch.delenv("NNARRAY_FAST", raising=False)
    from nnarray.fast.numpy_numba import NumbaStep  # noqa: PLC0415

    return NumbaStep


@pytest.mark.parametrize("backend,step_fixture", [("numpy", "numba_step"),
                                                  pytest.param("torch", "torch_cpu_step", marks=pytest.mark.torch)])
def test_numpy_and_torch_take_their_numba_steps_unless_switched_off(backend, step_fixture, request, monkeypatch,
                                                                    blobs):
    fast_step = request.getfixturevalue(step_fixture)
    X, t = blobs(n=50)
    net = nn.MLP([12, 8, 3], backend=backend, seed=0)
    Xd, Td = _device_data(net, X, t)
    assert type(make_step(net, nn.SGD(0.1), Xd, Td, "mean")) is fast_step
    assert type(make_step(net, nn.SGD(0.1), Xd, Td, "mean", fast=False)) is TrainStep
    monkeypatch.setenv("NNARRAY_NUMBA", "0")
    assert type(make_step(net, nn.SGD(0.1), Xd, Td, "mean")) is TrainStep
    with pytest.raises(ValueError, match=r"fast=True: no fast path available here \(the numba extra"):
        make_step(net, nn.SGD(0.1), Xd, Td, "mean", fast=True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("sizes,dropout", [([12, 16, 3], 0.0), ([12, 16, 3], 0.5), ([12, 16, 9, 3], (0.0, 0.3))])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_the_numba_step_is_the_generic_step_bit_for_bit(numba_step, blobs, dtype, sizes, dropout, reduction):
    """Same operations in the same order, so the same values: three epochs of AdamW (with dropout where given),
    the parameters and the optimizer state equal exactly."""
    X, t = blobs(n=150, n_in=sizes[0], n_classes=sizes[-1])
    results = []
    for fast in (False, True):
        net = nn.MLP(sizes, backend="numpy", seed=0, dtype=dtype, dropout=dropout)
        opt = nn.AdamW(1e-2, weight_decay=0.05)
        hist = nn.fit(net, opt, X, t, epochs=3, batch_size=32, reduction=reduction, seed=4,
                      options=nn.FitOptions(fast=fast))
        results.append((net.params, opt.state, hist.train_loss))
    (p0, s0, l0), (p1, s1, l1) = results
    assert l0 == l1
    for k in p0:
        np.testing.assert_array_equal(p0[k], p1[k], err_msg=k)
        for name in s0:
            np.testing.assert_array_equal(s0[name][k], s1[name][k], err_msg=f"{name} {k}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_one_pass_hidden_layer_keeps_numpys_edge_values(numba_step, dtype):
    """NaN and ±inf in the product, the bias, the gradient and the mask give what the generic expressions give
    (maximum keeps NaN, −inf becomes 0; an infinite gradient times a 0 mask is NaN)."""
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -1.5, 3e-39, -3e-39], dtype=dtype)
    with np.errstate(all="ignore"):  # inf − inf: NaN on purpose
        _edge_values_agree(special, dtype)


def _edge_values_agree(special, dtype):
    from nnarray import functions as F  # noqa: PLC0415
    from nnarray.fast import numpy_numba  # noqa: PLC0415

    ops = numpy_numba.Ops()
    Z = np.add.outer(special, special[::-1]).astype(dtype)
    b = special[::-1].copy()
    M = np.abs(np.add.outer(special[::-1], special)).astype(dtype)
    for m in (None, M):
        np.testing.assert_array_equal(ops.bias_relu(np, Z.copy(), b, m), F.bias_relu(np, Z.copy(), b, m))
        H = F.bias_relu(np, Z.copy(), b)
        np.testing.assert_array_equal(ops.hidden_backward(np, Z.copy(), H, m),
                                      F.hidden_backward(np, Z.copy(), H, m))
    strided = np.asarray(Z.T.copy()).T  # not C-contiguous: the generic expressions run
    np.testing.assert_array_equal(ops.bias_relu(np, strided.copy(order="K"), b, None),
                                  F.bias_relu(np, Z.copy(), b))


def test_fit_tells_its_callbacks_which_step_it_chose(numba_step, blobs):
    """FitRun.step is the step fit made (the training command prints its description when training begins)."""
    X, t = blobs(n=60)
    seen = []

    class Look(nn.callbacks.Callback):
        def on_train_begin(self, run):
            seen.append((type(run.step), run.step.description))

    for fast in (None, False):
        nn.fit(nn.MLP([12, 8, 3], seed=0), nn.SGD(0.1), X, t, epochs=1, callbacks=[Look()],
               options=nn.FitOptions(fast=fast))
    assert [kind for kind, _ in seen] == [numba_step, TrainStep]
    assert "Numba" in seen[0][1] and seen[1][1] == "the generic Array API step"


# ------------------------------------------------------------------------------------ the torch CPU fast path
@pytest.fixture
def torch_cpu_step(numba_step):
    pytest.importorskip("torch", reason="PyTorch (the test extra installs its CPU wheel)")
    from nnarray.fast.torch_cpu import TorchCpuStep  # noqa: PLC0415

    return TorchCpuStep


@pytest.mark.torch
@pytest.mark.parametrize("sizes,dropout", [([12, 16, 3], 0.0), ([12, 16, 3], 0.5), ([12, 16, 9, 3], (0.0, 0.3))])
@pytest.mark.parametrize("opt_name,kw", [("AdamW", {"lr": 1e-2, "weight_decay": 0.05}),
                                         ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True})])
def test_the_torch_cpu_step_is_the_generic_step_in_float64(torch_cpu_step, blobs, sizes, dropout, opt_name, kw):
    """Its products run in another layout (MKL sums in another order), everything else as the generic step:
    three epochs in float64 agree to 1e-12 relative, with the weights stored in Fortran order and the update's
    Numba loops walking them (no parameter left to the rule)."""
    X, t = blobs(n=150, n_in=sizes[0], n_classes=sizes[-1])
    results = []
    for fast in (False, True):
        net = nn.MLP(sizes, backend="torch", seed=0, dtype="float64", dropout=dropout)
        opt = getattr(nn, opt_name)(**kw)
        hist = nn.fit(net, opt, X, t, epochs=3, batch_size=32, seed=4, options=nn.FitOptions(fast=fast))
        results.append((net.params, opt.state, hist.train_loss))
    (p0, s0, l0), (p1, s1, l1) = results
    np.testing.assert_allclose(l1, l0, rtol=1e-12)
    for k in p0:
        assert p1[k].shape == p0[k].shape
        if p1[k].ndim == 2:  # torch.nn.Linear's layout: the transpose of a C-contiguous buffer
            assert p1[k].stride() == (1, p1[k].shape[0]) and p0[k].is_contiguous()
        np.testing.assert_allclose(p1[k].numpy(), p0[k].numpy(), rtol=1e-12, atol=1e-14, err_msg=k)
        for name in s0:
            assert s1[name][k].stride() == p1[k].stride(), "the state lies as its weight does"
            np.testing.assert_allclose(s1[name][k].numpy(), s0[name][k].numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.torch
def test_the_torch_cpu_step_runs_the_loops_on_fortran_ordered_weights(torch_cpu_step, blobs, monkeypatch, tmp_path):
    """Every update of a fit is the Numba loops on the tensors' memory (none falls back to the rule), the
    batches are gathered by index_select, and the saved model is the seed's W (n_in, n_out) as any other."""
    from nnarray import _numba_kernels, fused  # noqa: PLC0415

    runs, rules = [], []
    kernel = _numba_kernels.sgd_momentum
    monkeypatch.setattr(_numba_kernels, "sgd_momentum", lambda *a: (runs.append(a[0].shape), kernel(*a))[1])
    write = fused.TorchNumbaForm._write_rule
    monkeypatch.setattr(fused.TorchNumbaForm, "_write_rule", lambda *a: (rules.append(1), write(*a))[1])
    X, t = blobs(n=64)
    net = nn.MLP([12, 8, 3], backend="torch", seed=0)
    # Nesterov: heavy-ball SGD would fold the weights' updates into the products (the next tests)
    nn.fit(net, nn.SGD(0.1, momentum=0.9, nesterov=True), X, t, epochs=2, batch_size=16)
    assert len(runs) == 2 * 4 * 4 and not rules  # 8 batches, 4 parameters each
    assert (8, 12) in runs and (3, 8) in runs, "the loops see the weights' C-contiguous transposes"
    ref = nn.MLP([12, 8, 3], backend="numpy", seed=0)
    nn.fit(ref, nn.SGD(0.1, momentum=0.9, nesterov=True), X, t, epochs=2, batch_size=16)
    np.testing.assert_allclose(net.predict(X).numpy(), np.asarray(ref.predict(X)), rtol=1e-4, atol=1e-6)
    # what leaves the device is in the seed's C layout: a model saved here and loaded on NumPy is NumPy's own
    assert net.params["W1"].stride() == (1, 12)
    assert all(v.flags.c_contiguous for v in net.state_dict().values())
    path = tmp_path / "net.npz"
    nn.save(net, path)
    back = nn.load(path, backend="numpy")
    assert all(v.flags.c_contiguous for v in back.params.values())
    np.testing.assert_array_equal(back.params["W1"], net.params["W1"].numpy())


def _torch_fits(sizes, opt_make, X, t, dropout=0.0, schedule=None, epochs=3):
    """``[(net, opt, history)]`` of the generic step and the fast path, float64, the same training."""
    out = []
    for fast in (False, True):
        net = nn.MLP(sizes, backend="torch", seed=0, dtype="float64", dropout=dropout)
        opt = opt_make()
        hist = nn.fit(net, opt, X, t, epochs=epochs, batch_size=32, seed=4, schedule=schedule,
                      options=nn.FitOptions(fast=fast))
        out.append((net, opt, hist))
    return out


def _assert_same_training(runs):
    (n0, o0, h0), (n1, o1, h1) = runs
    np.testing.assert_allclose(h1.train_loss, h0.train_loss, rtol=1e-12)
    assert o1.t == o0.t
    for k in n0.params:
        np.testing.assert_allclose(n1.params[k].numpy(), n0.params[k].numpy(), rtol=1e-12, atol=1e-14, err_msg=k)
        for name in o0.state:
            if k in o0.state[name]:
                np.testing.assert_allclose(o1.state[name][k].numpy(), o0.state[name][k].numpy(), rtol=1e-12,
                                           atol=1e-14, err_msg=f"{name}[{k}]")


@pytest.mark.torch
@pytest.mark.parametrize("sizes,dropout", [([12, 16, 3], 0.0), ([12, 16, 9, 3], (0.3, 0.0))])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_the_torch_cpu_step_folds_heavy_ball_sgd_into_the_products(torch_cpu_step, blobs, monkeypatch, sizes,
                                                                    dropout, momentum):
    """SGD without Nesterov and weight decay: each weight's update is one addmm_ into its velocity (or into the
    weight) and no weight goes through the update's loop (only the biases do); three epochs with a schedule
    that changes η (the velocities rescaled between epochs) equal the generic step's to 1e-12 in float64."""
    import torch  # noqa: PLC0415

    from nnarray import _numba_kernels  # noqa: PLC0415

    loops = []
    name = "sgd_momentum" if momentum else "sgd"
    kernel = getattr(_numba_kernels, name)
    monkeypatch.setattr(_numba_kernels, name, lambda *a: (loops.append(a[0].ndim), kernel(*a))[1])
    X, t = blobs(n=150, n_in=sizes[0], n_classes=sizes[-1])
    runs = _torch_fits(sizes, lambda: nn.SGD(0.05, momentum=momentum), X, t, dropout=dropout,
                       schedule=nn.schedules.Exponential(0.05, gamma=0.5))
    _assert_same_training(runs)
    n_updates = 3 * 5  # 150 rows in batches of 32
    layers = len(sizes) - 1
    # the generic step's optimizer runs the loop on every parameter, the fast path on the biases only
    assert loops.count(2) == n_updates * layers and loops.count(1) == 2 * n_updates * layers
    if momentum:
        assert set(runs[1][1].velocity) == set(runs[1][0].params)
        assert all(isinstance(v, torch.Tensor) for v in runs[1][1].velocity.values())


@pytest.mark.torch
def test_the_torch_cpu_step_leaves_the_update_to_the_optimizer_with_hooks_or_other_rules(torch_cpu_step, blobs,
                                                                                         monkeypatch):
    """With a gradient hook, Nesterov or weight decay the update is the optimizer's own (the hook runs), and the
    training is still the generic step's; ``$NNARRAY_FUSED=0`` turns the folded update off as well."""
    import torch  # noqa: PLC0415

    calls = []
    addmm = torch.Tensor.addmm_
    monkeypatch.setattr(torch.Tensor, "addmm_", lambda *a, **k: (calls.append(1), addmm(*a, **k))[1])
    X, t = blobs(n=96)

    def clipped():
        opt = nn.SGD(0.05, momentum=0.9)
        opt.add_hook(nn.optim.ClipGradNorm(0.5))
        return opt

    for make in (clipped, lambda: nn.SGD(0.05, momentum=0.9, nesterov=True),
                 lambda: nn.SGD(0.05, momentum=0.9, weight_decay=1e-3)):
        calls.clear()
        _assert_same_training(_torch_fits([12, 16, 3], make, X, t, epochs=2))
        assert not calls, "no update folded into a product"
    monkeypatch.setenv("NNARRAY_FUSED", "0")
    _assert_same_training(_torch_fits([12, 16, 3], lambda: nn.SGD(0.05, momentum=0.9), X, t, epochs=2))
    assert not calls


@pytest.mark.torch
def test_the_torch_cpu_steps_folded_update_takes_any_layout_and_leaves_odd_state_to_the_optimizer(torch_cpu_step,
                                                                                                   blobs):
    """Weights back in C order (a checkpoint restored mid-fit) still take the folded update, with the generic
    step's values; a velocity of another dtype (loaded by hand) takes the optimizer's update instead."""
    import torch  # noqa: PLC0415

    X, t = blobs(n=96)
    nets = []
    for fast in (False, True):
        net = nn.MLP([12, 16, 3], backend="torch", seed=0, dtype="float64")
        opt = nn.SGD(0.05, momentum=0.9)
        Xd = net.backend.asarray(X, dtype=net.dtype)
        Td = F.one_hot(net.xp, net.backend.asarray(t, dtype=net.backend.index_dtype), 3, net.dtype)
        step = make_step(net, opt, Xd, Td, "mean", fast=None if fast else False)
        idx = net.backend.asarray(np.arange(32), dtype=net.backend.index_dtype)
        step(idx, 32)
        if fast:
            assert type(step) is torch_cpu_step and net.params["W1"].stride() == (1, 12)
            for k in ("W1", "W2"):  # back to C order, as load_state_dict lays them out
                net.params[k] = net.params[k].contiguous()
                opt.velocity[k] = opt.velocity[k].contiguous()
            assert step._foldable(opt.velocity)
        step(idx, 32)
        if fast:
            opt.velocity["W1"] = opt.velocity["W1"].to(torch.float32)
            assert not step._foldable(opt.velocity)
        else:
            opt.velocity["W1"] = opt.velocity["W1"].to(torch.float32).to(torch.float64)
        step(idx, 32)
        nets.append((net, opt))
    (n0, o0), (n1, o1) = nets
    for k in n0.params:
        np.testing.assert_allclose(n1.params[k].numpy(), n0.params[k].numpy(), rtol=1e-6, err_msg=k)
    assert o1.t == o0.t == 3


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_torch_cpu_steps_flush_zeroes_exactly_the_subnormal_velocities(torch_cpu_step, blobs, dtype):
    """Every flush_every updates the folded route sets velocities below the smallest normal number to 0 (what the
    Numba kernels do at every update); normal values, ±tiny itself, inf and NaN stay."""
    import torch  # noqa: PLC0415

    X, t = blobs(n=64)
    net = nn.MLP([12, 8, 3], backend="torch", seed=0, dtype=dtype)
    opt = nn.SGD(0.05, momentum=0.9)
    step = make_step(net, opt, net.backend.asarray(X, dtype=net.dtype),
                     F.one_hot(net.xp, net.backend.asarray(t, dtype=net.backend.index_dtype), 3, net.dtype),
                     "mean")
    assert type(step) is torch_cpu_step
    tiny = np.finfo(dtype).tiny
    values = np.array([tiny, -tiny, tiny / 2, -tiny / 4, np.nextafter(tiny, 0), 0.5, -np.inf, np.nan],
                      dtype=dtype)
    V = torch.from_numpy(np.tile(values, (3, 1)).T.copy()).T  # Fortran order, as the weights lie
    step._flush([V])
    want = np.where(np.abs(values) < tiny, 0, values)
    np.testing.assert_array_equal(V.numpy(), np.tile(want, (3, 1)))
    # and a training flushes every velocity (the optimizer's own arrays) every flush_every updates
    flushed, flush = [], step._flush
    step._flush = lambda arrays: (flushed.append((opt.t, list(arrays))), flush(arrays))[1]
    idx = net.backend.asarray(np.arange(16), dtype=net.backend.index_dtype)
    for _ in range(2 * step.flush_every + 1):
        step(idx, 16)
    assert [t for t, _ in flushed] == [step.flush_every, 2 * step.flush_every]
    assert all(a is b for a, b in zip(flushed[-1][1], opt.velocity.values(), strict=True))


def test_torch_cpu_ops_fall_back_to_the_expressions_for_tensors_without_a_view(torch_cpu_step):
    """A tensor that requires grad has no NumPy view: the generic expressions run, with the same values."""
    import torch  # noqa: PLC0415

    from nnarray.fast.torch_cpu import TorchOps  # noqa: PLC0415

    g = torch.Generator().manual_seed(0)
    Z, b, M = (torch.randn(4, 5, generator=g, dtype=torch.float64) for _ in range(3))
    b = b[0]
    xp = nn.get_backend("torch").xp
    for z in (Z.clone(), Z.clone().requires_grad_(True) * 1.0):  # the second: a product that requires grad
        got = TorchOps().bias_relu(xp, z, b, M)
        assert got.requires_grad == z.requires_grad and torch.equal(got.detach(), F.bias_relu(xp, Z.clone(), b, M))
    H = F.bias_relu(xp, Z.clone(), b)
    assert torch.equal(TorchOps().hidden_backward(xp, Z.clone(), H), F.hidden_backward(xp, Z.clone(), H))
    np.testing.assert_allclose(TorchOps.weight_gradient(xp, Z, M).numpy(), (Z.T @ M).numpy(), rtol=1e-15)


@pytest.mark.torch
def test_the_torch_cpu_steps_loss_head_on_numpy_views_is_the_generic_head(torch_cpu_step, blobs):
    """(a, E, correct) from NumPy views of the tensors: the generic head's values, ``a`` a tensor again; a tensor
    that requires grad (no view) takes the generic head itself."""
    import torch  # noqa: PLC0415

    X, t = blobs(n=40)
    net = nn.MLP([12, 8, 3], backend="torch", seed=0, dtype="float64")
    step = make_step(net, nn.SGD(0.1), *_device_data(net, X, t), "mean")
    assert type(step) is torch_cpu_step
    A = torch.asarray(np.random.default_rng(0).standard_normal((40, 3)))
    T = step.Td
    for given in (A, A.clone().requires_grad_(True) * 1.0):
        a, E, correct = step.loss_head(given, T, None)
        a0, E0, c0 = F.softmax_cross_entropy(net.xp, A, T, "mean", None)
        assert isinstance(a, torch.Tensor) and a.shape == (40, 3)
        np.testing.assert_allclose(a.detach().numpy(), a0.numpy(), rtol=1e-14, atol=1e-16)
        E = E.detach() if isinstance(E, torch.Tensor) else E
        assert float(E) == pytest.approx(float(E0), rel=1e-14) and int(correct) == int(c0)
