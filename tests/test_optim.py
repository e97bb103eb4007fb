"""Optimizers: closed forms, torch.optim to 1e-12, the functional rule, hooks, fused forms, state round trips."""

import numpy as np
import pytest

import nnarray as nn


def _params(rng, writeable=True):
    p = {"W1": rng.normal(size=(4, 3)), "b1": rng.normal(size=3)}
    for v in p.values():
        v.setflags(write=writeable)
    return p


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_writeable_and_read_only_parameters_give_the_same_values(momentum):
    """The functional rule stores new arrays: read-only parameters are replaced, never written; same values."""
    rng = np.random.default_rng(0)
    a = _params(rng)
    b = {k: v.copy() for k, v in a.items()}
    for v in b.values():
        v.setflags(write=False)
    originals = {k: v.copy() for k, v in b.items()}
    frozen = dict(b)
    opt_a, opt_b = nn.SGD(0.1, momentum=momentum), nn.SGD(0.1, momentum=momentum)
    for _ in range(3):
        g = {k: rng.normal(size=v.shape) for k, v in a.items()}
        opt_a.update(a, g)
        opt_b.update(b, g)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(frozen[k], originals[k])  # the read-only arrays were not written
        assert b[k] is not frozen[k]


def test_plain_sgd_is_the_closed_form():
    rng = np.random.default_rng(1)
    p = _params(rng)
    before = {k: v.copy() for k, v in p.items()}
    g = {k: rng.normal(size=v.shape) for k, v in p.items()}
    nn.SGD(0.01).update(p, g)
    for k in p:
        np.testing.assert_array_equal(p[k], before[k] - 0.01 * g[k])


def test_momentum_closed_form():
    rng = np.random.default_rng(2)
    p = {"W": np.zeros(3)}
    g1, g2 = rng.normal(size=3), rng.normal(size=3)
    opt = nn.SGD(0.1, momentum=0.5)
    opt.update(p, {"W": g1})
    opt.update(p, {"W": g2})
    v1 = -0.1 * g1
    v2 = 0.5 * v1 - 0.1 * g2
    np.testing.assert_allclose(p["W"], v1 + v2, rtol=1e-15)


def test_state_dict_round_trip_and_float32_kept():
    rng = np.random.default_rng(3)
    p = {"W": rng.normal(size=(3, 2)).astype(np.float32)}
    opt = nn.SGD(0.1, momentum=0.9)
    opt.update(p, {"W": np.ones((3, 2), np.float32)})
    assert p["W"].dtype == np.float32 and opt.velocity["W"].dtype == np.float32
    other = nn.SGD(1.0)
    other.load_state_dict(opt.state_dict(), backend=nn.get_backend("numpy"), dtype=np.float32)
    assert other.lr == 0.1 and other.momentum == 0.9
    np.testing.assert_array_equal(other.velocity["W"], opt.velocity["W"])
    assert other.velocity["W"] is not opt.velocity["W"]


def test_momentum_out_of_range():
    with pytest.raises(ValueError, match=r"momentum: expected a value in \[0, 1\), got 1.0"):
        nn.SGD(0.1, momentum=1.0)


def test_loaded_parameters_never_alias_the_callers_arrays():
    net = nn.MLP([3, 2], backend="numpy", dtype="float64", seed=0)
    state = {"W1": np.ones((3, 2)), "b1": np.zeros(2)}
    net.load_state_dict(state)
    nn.SGD(0.1).update(net.params, {"W1": np.ones((3, 2)), "b1": np.ones(2)})
    assert np.all(state["W1"] == 1.0) and np.all(state["b1"] == 0.0)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_update_never_changes_the_gradients(momentum, dtype):
    rng = np.random.default_rng(0)
    p = {"W": rng.normal(size=(5, 4)).astype(dtype), "b": rng.normal(size=4).astype(dtype)}
    opt = nn.SGD(0.07, momentum=momentum)
    for _ in range(3):
        g = {k: rng.normal(size=v.shape).astype(dtype) for k, v in p.items()}
        kept = {k: v.copy() for k, v in g.items()}
        opt.update(p, g)
        for k in g:
            np.testing.assert_array_equal(g[k], kept[k])
            assert p[k].dtype == dtype
            if momentum:
                assert not np.shares_memory(opt.velocity[k], g[k]), "the optimizer keeps no reference to a gradient"


# ------------------------------------------------------------------------------------ against torch.optim
# (our class, torch.optim class name, arguments): every hyperparameter exercised at least once.
TORCH_CASES = [
    pytest.param(nn.SGD, "SGD", dict(lr=0.1), id="sgd"),
    pytest.param(nn.SGD, "SGD", dict(lr=0.1, momentum=0.9), id="sgd-momentum"),
    pytest.param(nn.SGD, "SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01), id="sgd-nesterov-wd"),
    pytest.param(nn.Adam, "Adam", dict(), id="adam"),
    pytest.param(nn.Adam, "Adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05), id="adam-wd"),
    pytest.param(nn.AdamW, "AdamW", dict(), id="adamw"),
    pytest.param(nn.AdamW, "AdamW", dict(lr=1e-2, betas=(0.85, 0.995), weight_decay=0.1), id="adamw-wd"),
    pytest.param(nn.RMSprop, "RMSprop", dict(), id="rmsprop"),
    pytest.param(nn.RMSprop, "RMSprop", dict(lr=1e-3, alpha=0.9, eps=1e-6, momentum=0.9, weight_decay=0.01),
                 id="rmsprop-momentum-wd"),
    pytest.param(nn.AdaGrad, "Adagrad", dict(), id="adagrad"),
    pytest.param(nn.AdaGrad, "Adagrad",
                 dict(lr=0.1, eps=1e-8, weight_decay=0.01, lr_decay=0.01, initial_accumulator_value=0.1),
                 id="adagrad-all"),
]
SHAPES = {"W1": (6, 5), "b1": (5,), "W2": (5, 3), "b2": (3,)}


def _max_rel(ours, ref):
    """max |ours − ref| / max |ref| over every array (host float64)."""
    return max(float(np.max(np.abs(nn.to_numpy(ours[k]) - ref[k])) / np.max(np.abs(ref[k]))) for k in ref)


def run_against_torch(cls, torch_name, kw, backend, steps=120, changing_lr=True, seed=0):
    """``steps`` updates by ours (on ``backend``) and by torch.optim (CPU, float64) from the same gradients.

    The gradients are drawn on the host and depend on the parameters (g = W − target + noise), so weight
    decay and the state interact as in training. With ``changing_lr`` η is multiplied by 0.9 every 10 steps
    (as a schedule would) in both. Returns the largest relative difference of the parameters.
    """
    import torch  # noqa: PLC0415

    be = nn.get_backend(backend)
    rng = np.random.default_rng(seed)
    p0 = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    target = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    ours = {k: be.asarray(v, dtype=be.dtype("float64"), copy=True) for k, v in p0.items()}
    theirs = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in p0.items()}
    opt = cls(**kw)
    topt = getattr(torch.optim, torch_name)(list(theirs.values()), **kw)
    lr0 = opt.lr
    for step in range(steps):
        if changing_lr:
            opt.lr = lr0 * 0.9 ** (step // 10)
            for group in topt.param_groups:
                group["lr"] = opt.lr
        current = {k: v.detach().numpy() for k, v in theirs.items()}
        g = {k: current[k] - target[k] + 0.3 * rng.normal(size=SHAPES[k]) for k in SHAPES}
        opt.update(ours, {k: be.asarray(v, dtype=be.dtype("float64")) for k, v in g.items()})
        for k, v in theirs.items():
            v.grad = torch.tensor(g[k])
        topt.step()
    assert opt.t == steps
    return _max_rel(ours, {k: v.detach().numpy() for k, v in theirs.items()})


@pytest.mark.torch
@pytest.mark.parametrize("cls,torch_name,kw", TORCH_CASES)
def test_matches_torch_optim_with_a_changing_lr(cls, torch_name, kw, backend):
    """120 steps in float64 on numpy, array_api_strict and torch, η falling every 10 steps: equal to 1e-12."""
    assert run_against_torch(cls, torch_name, kw, backend) <= 1e-12


@pytest.mark.torch
@pytest.mark.parametrize("cls,torch_name,kw", TORCH_CASES[:4] + TORCH_CASES[7:8])
def test_matches_torch_optim_with_a_constant_lr(cls, torch_name, kw, backend):
    assert run_against_torch(cls, torch_name, kw, backend, changing_lr=False) <= 1e-12


@pytest.mark.torch
def test_sgd_momentum_without_rescaling_would_differ_from_torch(monkeypatch):
    """The velocity rescaling on a change of η is what makes momentum equal torch's under a schedule."""
    monkeypatch.setattr(nn.SGD, "_lr_changed", lambda self, old, new: None)
    assert run_against_torch(nn.SGD, "SGD", dict(lr=0.1, momentum=0.9), "numpy") > 1e-3


def test_sgd_velocity_is_rescaled_and_stored_when_lr_changes():
    """v = −η b is kept when η changes: a new array is stored (the old one is not written, so a namespace
    whose arrays cannot change gets the same result)."""
    p = {"W": np.zeros(3)}
    opt = nn.SGD(0.1, momentum=0.5)
    opt.update(p, {"W": np.ones(3)})
    v = opt.velocity["W"]
    np.testing.assert_array_equal(v, -0.1 * np.ones(3))
    opt.lr = 0.05
    assert opt.velocity["W"] is not v
    np.testing.assert_array_equal(v, -0.1 * np.ones(3))
    np.testing.assert_allclose(opt.velocity["W"], -0.05 * np.ones(3), rtol=1e-15)
    same = opt.velocity["W"]
    opt.lr = 0.05  # unchanged η: nothing to do
    assert opt.velocity["W"] is same


@pytest.mark.parametrize("cls", [nn.SGD, nn.Adam, nn.AdamW, nn.RMSprop, nn.AdaGrad])
@pytest.mark.parametrize("backend_name", ["numpy", "array_api_strict"])
def test_float32_stays_float32(cls, backend_name):
    be = nn.get_backend(backend_name)
    f32 = be.dtype("float32")
    rng = np.random.default_rng(5)
    kw = {"momentum": 0.9} if cls in (nn.SGD, nn.RMSprop) else {}
    opt = cls(lr=0.01, weight_decay=0.01, **kw)
    p = {"W": be.asarray(rng.normal(size=(3, 2)), dtype=f32)}
    for _ in range(3):
        opt.update(p, {"W": be.asarray(rng.normal(size=(3, 2)), dtype=f32)})
    assert p["W"].dtype == f32
    for arrays in opt.state.values():
        for v in arrays.values():
            assert v.dtype == f32


def _some_steps(opt, p, rng, n):
    for _ in range(n):
        opt.update(p, {k: rng.normal(size=v.shape) for k, v in p.items()})


@pytest.mark.parametrize("cls,torch_name,kw", TORCH_CASES)
def test_state_dict_round_trip_continues_identically(cls, torch_name, kw):
    """from_state_dict(state_dict()) continues bit for bit like the original, and never aliases ``sd``."""
    rng = np.random.default_rng(7)
    p = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    opt = cls(**kw)
    _some_steps(opt, p, np.random.default_rng(1), 5)
    sd = opt.state_dict()
    assert sd["type"] == cls.__name__ and sd["t"] == 5
    frozen = {name: {k: v.copy() for k, v in arrays.items()} for name, arrays in sd["state"].items()}
    twin, q = nn.optim.from_state_dict(sd), {k: v.copy() for k, v in p.items()}
    assert type(twin) is cls and twin.hyperparameters() == opt.hyperparameters()
    _some_steps(opt, p, np.random.default_rng(2), 5)
    _some_steps(twin, q, np.random.default_rng(2), 5)
    for k in p:
        np.testing.assert_array_equal(p[k], q[k])
    for name, arrays in frozen.items():  # the loaded optimizer updated copies, not sd's arrays
        for k, v in arrays.items():
            np.testing.assert_array_equal(sd["state"][name][k], v)


def test_hyperparameters_survive_json():
    """Checkpoint headers are JSON: betas come back as a list and are normalised to a tuple."""
    import json  # noqa: PLC0415

    sd = json.loads(json.dumps({k: v for k, v in nn.Adam(betas=(0.8, 0.9)).state_dict().items() if k != "state"}))
    opt = nn.optim.from_state_dict(sd)
    assert opt.betas == (0.8, 0.9) and isinstance(opt.betas, tuple)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: nn.SGD(0.1, nesterov=True), r"nesterov: Nesterov momentum needs momentum > 0"),
        (lambda: nn.SGD(0.1, momentum=0.9, nesterov=1), r"nesterov: expected True or False, got 1"),
        (lambda: nn.SGD(0.1, weight_decay=-0.1), r"weight_decay: expected a finite value ≥ 0, got -0.1"),
        (lambda: nn.Adam(betas=(0.9, 1.0)), r"betas\[1\]: expected a value in \[0, 1\), got 1.0"),
        (lambda: nn.Adam(betas=0.9), r"betas: expected a pair"),
        (lambda: nn.AdamW(eps=-1e-8), r"eps: expected a finite value ≥ 0"),
        (lambda: nn.AdamW(weight_decay=float("nan")), r"weight_decay: expected a finite value ≥ 0, got nan"),
        (lambda: nn.RMSprop(alpha=1.5), r"alpha: expected a value in \[0, 1\), got 1.5"),
        (lambda: nn.RMSprop(momentum=-0.5), r"momentum: expected a value in \[0, 1\)"),
        (lambda: nn.AdaGrad(lr=0), r"lr: expected a positive finite learning rate, got 0"),
        (lambda: nn.AdaGrad(lr_decay=-1), r"lr_decay: expected a finite value ≥ 0"),
        (lambda: nn.AdaGrad(initial_accumulator_value=-1), r"initial_accumulator_value: expected a finite value ≥ 0"),
    ],
)
def test_bad_arguments_name_the_argument(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_type_errors_name_the_argument():
    with pytest.raises(TypeError, match=r"lr: expected a number, got '0.1'"):
        nn.SGD(lr="0.1")
    with pytest.raises(TypeError, match=r"lr: expected a number, got True"):
        nn.Adam(lr=True)
    with pytest.raises(TypeError, match=r"betas\[0\]: expected a number, got '0.9'"):
        nn.Adam(betas=("0.9", 0.999))
    with pytest.raises(TypeError, match=r"eps: expected a number, got None"):
        nn.RMSprop(eps=None)


def test_a_state_of_another_optimizer_is_refused():
    with pytest.raises(ValueError, match="a SGD state cannot be loaded into Adam"):
        nn.Adam().load_state_dict(nn.SGD(0.1).state_dict())


# ------------------------------------------------------------------------------------ through fit and checkpoints
@pytest.mark.parametrize(
    "make_opt",
    [
        pytest.param(lambda: nn.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-3), id="sgd-nesterov"),
        pytest.param(lambda: nn.Adam(1e-2, weight_decay=1e-3), id="adam"),
        pytest.param(lambda: nn.AdamW(1e-2), id="adamw"),
        pytest.param(lambda: nn.RMSprop(1e-3, momentum=0.5), id="rmsprop"),
        pytest.param(lambda: nn.AdaGrad(0.05), id="adagrad"),
    ],
)
def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path, blobs, make_opt):
    """fit 2 epochs, save_checkpoint, load_checkpoint, fit 2 more == fit 4 epochs, bit for bit (with a schedule)."""
    X, t = blobs(n=300, seed=1)
    schedule = nn.schedules.Cosine(make_opt().lr, epochs=4)
    straight = nn.MLP([12, 8, 3], backend="numpy", dtype="float64", seed=0)
    h_straight = nn.fit(straight, make_opt(), X, t, epochs=4, batch_size=32, seed=8, schedule=schedule)

    net, opt, rng = nn.MLP([12, 8, 3], backend="numpy", dtype="float64", seed=0), make_opt(), np.random.default_rng(8)
    hist = nn.fit(net, opt, X, t, epochs=2, batch_size=32, seed=rng, schedule=schedule)
    nn.save_checkpoint(tmp_path / "ck.npz", net, opt, rng, hist)
    del net, opt, rng
    ck = nn.load_checkpoint(tmp_path / "ck.npz", backend="numpy")
    assert type(ck["opt"]) is type(make_opt()) and ck["opt"].t == 2 * 10
    h = nn.fit(ck["net"], ck["opt"], X, t, epochs=2, batch_size=32, seed=ck["rng"], schedule=schedule,
               options=nn.FitOptions(history=ck["history"]))
    assert h.train_loss == h_straight.train_loss and h.lr == h_straight.lr
    for k, v in straight.params.items():
        np.testing.assert_array_equal(nn.to_numpy(ck["net"].params[k]), nn.to_numpy(v))


@pytest.mark.parametrize(
    "opt",
    [
        nn.SGD(0.1, momentum=0.9, nesterov=True),
        nn.SGD(0.1, weight_decay=1e-4),
        nn.Adam(),
        nn.AdamW(),
        nn.RMSprop(),
        nn.AdaGrad(),
    ],
    ids=repr,
)
def test_the_cupy_graph_step_steps_aside_for_other_optimizers(monkeypatch, opt):
    """Host-side: the graph step's kernels apply plain SGD (with momentum) only; make_step picks the generic step.

    The net poses as a cupy one (the check of the backend's name comes before anything needs CuPy), and the
    path is treated as validated so that only the optimizer can make it step aside.
    """
    import dataclasses  # noqa: PLC0415

    from nnarray.fast import cupy_graph  # noqa: PLC0415
    from nnarray.step import TrainStep, make_step  # noqa: PLC0415

    monkeypatch.setattr(cupy_graph, "VALIDATED", True)
    net = nn.MLP([4, 3, 2], backend="numpy", seed=0)
    net.backend = dataclasses.replace(net.backend, name="cupy")
    Xd, Td = np.zeros((5, 4), np.float32), np.zeros((5, 2), np.float32)
    reason = cupy_graph.CupyGraphStep.unsupported(net, opt, Xd, Td, batch_size=5)
    assert reason is not None and "optimizer" in reason
    assert type(make_step(net, opt, Xd, Td, "mean", batch_size=5)) is TrainStep
    with pytest.raises(ValueError, match="no fast path available here .*optimizer"):
        make_step(net, opt, Xd, Td, "mean", fast=True, batch_size=5)


@pytest.mark.parametrize(
    "opt",
    [nn.SGD(0.1, momentum=0.9, nesterov=True), nn.Adam(), nn.AdamW(), nn.RMSprop(1e-3), nn.AdaGrad()],
    ids=lambda o: type(o).__name__,
)
def test_each_optimizer_trains_a_network(blobs, opt):
    """With their default (or usual) hyperparameters, and dropout on, every optimizer learns the blobs."""
    X, t = blobs(n=600, seed=4)
    net = nn.MLP([12, 32, 3], backend="numpy", seed=0, dropout=0.2)
    before = net.loss(X, t)
    hist = nn.fit(net, opt, X, t, epochs=8, batch_size=32, seed=0)
    assert hist.train_loss[-1] < 0.5 * hist.train_loss[0] and net.loss(X, t) < 0.3 * before
    assert net.accuracy(X, t) > 0.9
