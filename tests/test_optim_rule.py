"""The optimizer interface: the functional rule (pure, on an immutable library: JAX), gradient hooks
(ClipGradNorm against torch), fused forms and their selection, device snapshots for rollback."""

import importlib.util

import numpy as np
import pytest

import nnarray as nn
from nnarray.backend import Backend
from nnarray.optim import ClipGradNorm, FusedForm
from test_optim import SHAPES, TORCH_CASES, run_against_torch

NO_JAX_REASON = 'jax is not installed (pip install "jax[cpu]"; the test extra brings it)'
HAS_JAX = importlib.util.find_spec("jax") is not None


@pytest.fixture
def jax_backend():
    """A JAX backend (array-api-compat's namespace ``jax.numpy``, its CPU device) with float64 (x64) on."""
    if not HAS_JAX:
        pytest.skip(NO_JAX_REASON)
    import array_api_compat  # noqa: PLC0415
    import jax  # noqa: PLC0415

    before = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    x = jax.numpy.zeros(1)
    yield Backend("jax", array_api_compat.array_namespace(x), array_api_compat.device(x))
    jax.config.update("jax_enable_x64", before)


def _arrays(seed, shape=(4, 3)):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape), rng.normal(size=shape)


# ------------------------------------------------------------------------------------ the rule, on NumPy
@pytest.mark.parametrize("cls,torch_name,kw", TORCH_CASES)
def test_the_rule_is_pure_and_a_missing_state_is_the_initial_one(cls, torch_name, kw):
    """rule() changes nothing it is given, returns every state its configuration keeps, and treats a None state
    as init_state()'s arrays (zeros, AdaGrad's initial accumulator)."""
    opt = cls(**kw)
    opt.t = 1
    p, g = _arrays(0)
    p0, g0 = p.copy(), g.copy()
    new_p, state = opt.rule(p, g, {name: None for name in opt.state_names()}, opt.scalars())
    init = opt.init_state(p)
    frozen = {k: v.copy() for k, v in init.items()}
    same_p, same_state = opt.rule(p, g, init, opt.scalars())
    np.testing.assert_array_equal(p, p0)
    np.testing.assert_array_equal(g, g0)
    for k, v in frozen.items():
        np.testing.assert_array_equal(init[k], v)
    assert new_p is not p and set(state) == set(opt.state_names()) == set(init)
    np.testing.assert_array_equal(new_p, same_p)
    for name in state:
        np.testing.assert_array_equal(state[name], same_state[name])
        assert state[name] is not g


@pytest.mark.parametrize("cls,torch_name,kw", TORCH_CASES)
def test_update_is_the_rule_with_its_scalars(cls, torch_name, kw):
    """update(params, grads) == rule(p, g, state, scalars()) per parameter, the step count advanced first."""
    opt, ref = cls(**kw), cls(**kw)
    rng = np.random.default_rng(1)
    params = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    mine = {k: v.copy() for k, v in params.items()}
    states = {k: {name: None for name in ref.state_names()} for k in params}
    for step in range(1, 4):
        grads = {k: rng.normal(size=s) for k, s in SHAPES.items()}
        opt.update(mine, grads)
        ref.t = step
        for k in params:
            params[k], states[k] = ref.rule(params[k], grads[k], states[k], ref.scalars())
        for k in params:
            np.testing.assert_array_equal(mine[k], params[k])
            for name in ref.state_names():
                np.testing.assert_array_equal(opt.state[name][k], states[k][name])
    assert opt.t == 3


def test_scalars_are_host_floats_of_the_step_count():
    opt = nn.Adam(lr=0.01, betas=(0.5, 0.75))
    opt.t = 2
    s = opt.scalars()
    assert all(type(v) is float for v in s.values())
    assert s == {"lr": 0.01, "step_size": 0.01 / (1 - 0.25), "bc2_sqrt": (1 - 0.5625) ** 0.5}
    ada = nn.AdaGrad(lr=0.1, lr_decay=0.5)
    ada.t = 3
    assert ada.scalars() == {"lr": 0.1, "clr": 0.1 / 2.0}
    assert nn.SGD(0.2, momentum=0.9).scalars() == {"lr": 0.2}


# ------------------------------------------------------------------------------------ on JAX (immutable arrays)
@pytest.mark.torch
@pytest.mark.parametrize("cls,torch_name,kw", TORCH_CASES)
def test_matches_torch_optim_on_jax(cls, torch_name, kw, jax_backend):
    """120 steps on JAX's immutable arrays, η falling every 10 steps (SGD's velocity rescaled): torch to 1e-12."""
    assert run_against_torch(cls, torch_name, kw, jax_backend) <= 1e-12


@pytest.mark.parametrize("cls,torch_name,kw", TORCH_CASES)
def test_the_rule_runs_under_jax_jit(cls, torch_name, kw, jax_backend):
    """The rule traced by jax.jit (state from init_state, scalars as arguments) equals the rule on NumPy."""
    import jax  # noqa: PLC0415

    opt = cls(**kw)
    p, g = _arrays(2)
    xp = jax_backend.xp
    traced = jax.jit(opt.rule)
    jp, jstate = xp.asarray(p), opt.init_state(xp.asarray(p))
    hp, hstate = p, {name: None for name in opt.state_names()}
    for step in range(1, 6):
        opt.t = step
        g = g * 0.9 + 0.1 * step
        jp, jstate = traced(jp, xp.asarray(g), jstate, opt.scalars())
        hp, hstate = opt.rule(hp, g, hstate, opt.scalars())
    np.testing.assert_allclose(nn.to_numpy(jp), hp, rtol=1e-12, atol=1e-14)
    for name in hstate:
        np.testing.assert_allclose(nn.to_numpy(jstate[name]), hstate[name], rtol=1e-12, atol=1e-14)


FIT_CASES = [
    pytest.param(lambda: nn.SGD(0.1, momentum=0.9), 0.0, id="sgd-momentum"),
    pytest.param(lambda: nn.SGD(0.1, momentum=0.9), 0.3, id="sgd-momentum-dropout"),
    pytest.param(lambda: nn.SGD(0.05, momentum=0.8, nesterov=True, weight_decay=1e-3), 0.2, id="sgd-nesterov-wd"),
    pytest.param(lambda: nn.SGD(0.1), 0.0, id="sgd"),
    pytest.param(lambda: nn.Adam(1e-2, weight_decay=1e-3), 0.2, id="adam"),
    pytest.param(lambda: nn.AdamW(1e-2, weight_decay=0.05), 0.2, id="adamw"),
    pytest.param(lambda: nn.RMSprop(1e-3, momentum=0.5, weight_decay=1e-2), 0.2, id="rmsprop-momentum"),
    pytest.param(lambda: nn.AdaGrad(0.05, lr_decay=1e-2, initial_accumulator_value=0.1), 0.2, id="adagrad"),
]


@pytest.mark.parametrize("make_opt,dropout", FIT_CASES)
def test_two_epochs_on_jax_equal_numpy(blobs, jax_backend, make_opt, dropout):
    """fit 2 epochs with a schedule (η changes every epoch) and dropout: JAX equals NumPy to 1e-10 in float64,
    parameters and optimizer state."""
    X, t = blobs(n=300, seed=1)
    schedule = nn.schedules.Exponential(make_opt().lr, gamma=0.7)
    runs = []
    for be in ("numpy", jax_backend):
        net = nn.MLP([12, 16, 3], backend=be, dtype="float64", seed=0, dropout=dropout)
        opt = make_opt()
        hist = nn.fit(net, opt, X, t, epochs=2, batch_size=32, seed=3, schedule=schedule)
        runs.append((net, opt, hist))
    (ref, ref_opt, ref_hist), (net, opt, hist) = runs
    assert type(net.params["W1"]).__module__.startswith("jax")
    for k, v in ref.params.items():
        np.testing.assert_allclose(nn.to_numpy(net.params[k]), v, rtol=1e-10, atol=1e-10 * np.max(np.abs(v)), err_msg=k)
    for name, arrays in ref_opt.state.items():
        for k, v in arrays.items():
            np.testing.assert_allclose(nn.to_numpy(opt.state[name][k]), v, rtol=1e-10, atol=1e-12,
                                       err_msg=f"{name} {k}")
    np.testing.assert_allclose(hist.train_loss, ref_hist.train_loss, rtol=1e-10)
    assert hist.lr == ref_hist.lr


# ------------------------------------------------------------------------------------ gradient hooks
def test_hooks_run_in_order_before_the_rule_and_can_be_removed():
    calls = []

    def hook(tag, factor):
        def h(params, grads):
            calls.append((tag, float(grads["W"][0])))
            return {k: g * factor for k, g in grads.items()}
        return h

    opt = nn.SGD(1.0)
    a, b, c = hook("a", 2.0), hook("b", 3.0), hook("c", 5.0)
    assert opt.add_hook(a) is a
    opt.add_hook(b)
    opt.add_hook(c, first=True)
    assert opt.hooks == [c, a, b]
    p = {"W": np.zeros(1)}
    opt.update(p, {"W": np.ones(1)})
    assert calls == [("c", 1.0), ("a", 5.0), ("b", 10.0)] and p["W"][0] == -30.0
    opt.remove_hook(a)
    assert opt.hooks == [c, b]
    with pytest.raises(ValueError, match="hook: .* is not one of this optimizer's hooks"):
        opt.remove_hook(a)
    with pytest.raises(TypeError, match="hook: expected a callable hook"):
        opt.add_hook("clip")


def test_hooks_are_not_part_of_the_state_dict():
    opt = nn.SGD(0.1, momentum=0.9)
    opt.add_hook(ClipGradNorm(1.0))
    twin = nn.optim.from_state_dict(opt.state_dict())
    assert twin.hooks == [] and opt.hooks


@pytest.mark.torch
@pytest.mark.parametrize("max_norm", [0.5, 100.0], ids=["clipping", "not-clipping"])
@pytest.mark.parametrize("backend_name", ["numpy", "array_api_strict", "torch"])
def test_clip_grad_norm_is_torchs(max_norm, backend_name):
    """ClipGradNorm + SGD momentum for 30 steps equals torch.nn.utils.clip_grad_norm_ + torch.optim.SGD (1e-12)."""
    import torch  # noqa: PLC0415

    be = nn.get_backend(backend_name)
    rng = np.random.default_rng(4)
    p0 = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    ours = {k: be.asarray(v, dtype=be.dtype("float64"), copy=True) for k, v in p0.items()}
    theirs = {k: torch.tensor(v, requires_grad=True) for k, v in p0.items()}
    opt, topt = nn.SGD(0.1, momentum=0.9), torch.optim.SGD(list(theirs.values()), lr=0.1, momentum=0.9)
    clip = opt.add_hook(ClipGradNorm(max_norm))
    for _ in range(30):
        g = {k: rng.normal(size=s) for k, s in SHAPES.items()}
        opt.update(ours, {k: be.asarray(v, dtype=be.dtype("float64")) for k, v in g.items()})
        for k, v in theirs.items():
            v.grad = torch.tensor(g[k])
        norm = torch.nn.utils.clip_grad_norm_(list(theirs.values()), max_norm)
        topt.step()
        assert float(clip.total_norm) == pytest.approx(float(norm), rel=1e-13)
    for k, v in theirs.items():
        np.testing.assert_allclose(nn.to_numpy(ours[k]), v.detach().numpy(), rtol=1e-12, atol=1e-13)


def test_clip_grad_norm_keeps_float32_and_checks_its_argument():
    clip = ClipGradNorm(1.0)
    g = {"W": np.full((2, 2), 3.0, np.float32)}
    out = clip({}, g)
    assert out["W"].dtype == np.float32 and np.all(g["W"] == 3.0)
    np.testing.assert_allclose(np.sqrt(np.sum(out["W"] ** 2)), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match=r"max_norm: expected a positive number, got 0"):
        ClipGradNorm(0)
    with pytest.raises(TypeError, match=r"max_norm: expected a number, got '1'"):
        ClipGradNorm("1")


# ------------------------------------------------------------------------------------ fused forms
class _InPlaceSGD(FusedForm):
    """A test form: SGD's rule with NumPy out= operations, counting its calls."""

    calls = 0

    def apply(self, p, g, state, scalars):
        type(self).calls += 1
        lr, mu = scalars["lr"], self.opt.momentum
        v = state["velocity"]
        np.multiply(v, mu, out=v)
        v -= lr * g
        p += v


class _SGDWithForm(nn.SGD):
    def fused(self, backend):
        return _InPlaceSGD(self, backend) if backend.name == "numpy" else super().fused(backend)


@pytest.fixture
def counted():
    _InPlaceSGD.calls = 0
    yield _InPlaceSGD
    _InPlaceSGD.calls = 0


def test_a_fused_form_is_used_on_writeable_arrays_and_equals_the_rule(counted):
    rng = np.random.default_rng(5)
    p0 = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    fused_p, rule_p = {k: v.copy() for k, v in p0.items()}, {k: v.copy() for k, v in p0.items()}
    ids = {k: id(v) for k, v in fused_p.items()}
    a, b = _SGDWithForm(0.1, momentum=0.9), nn.SGD(0.1, momentum=0.9)
    for step in range(5):
        g = {k: rng.normal(size=s) for k, s in SHAPES.items()}
        a.update(fused_p, g)
        b.update(rule_p, g)
        if step == 2:
            a.lr = b.lr = 0.05
    assert counted.calls == 5 * len(SHAPES)
    assert {k: id(v) for k, v in fused_p.items()} == ids, "updated in place"
    for k in p0:
        np.testing.assert_allclose(fused_p[k], rule_p[k], rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(a.velocity[k], b.velocity[k], rtol=1e-14, atol=1e-15)


def test_a_read_only_parameter_takes_the_rule_the_others_the_fused_form(counted):
    rng = np.random.default_rng(6)
    p = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    p["W1"].setflags(write=False)
    frozen, others = p["W1"], {k: v for k, v in p.items() if k != "W1"}
    before = {k: v.copy() for k, v in p.items()}
    opt = _SGDWithForm(0.1, momentum=0.9)
    opt.update(p, {k: np.ones(s) for k, s in SHAPES.items()})
    assert counted.calls == len(SHAPES) - 1  # every writeable parameter in place
    assert p["W1"] is not frozen and all(p[k] is v for k, v in others.items())
    np.testing.assert_array_equal(frozen, before["W1"])  # never written
    for k in p:
        np.testing.assert_array_equal(p[k], before[k] - 0.1)


def test_read_only_state_takes_the_rule_not_the_fused_form(counted):
    p = {"W": np.zeros(3)}
    opt = _SGDWithForm(0.1, momentum=0.5)
    opt.update(p, {"W": np.ones(3)})
    assert counted.calls == 1
    v = opt.velocity["W"]
    v.setflags(write=False)
    opt.update(p, {"W": np.ones(3)})
    assert counted.calls == 1 and opt.velocity["W"] is not v
    np.testing.assert_allclose(p["W"], -0.1 + (-0.05 - 0.1), rtol=1e-15)


def test_no_fused_form_on_jax(counted, jax_backend):
    xp = jax_backend.xp
    p = {"W": xp.zeros((2, 3), dtype=xp.float64)}
    opt = _SGDWithForm(0.1, momentum=0.9)
    opt.update(p, {"W": xp.ones((2, 3), dtype=xp.float64)})
    assert counted.calls == 0
    np.testing.assert_array_equal(nn.to_numpy(p["W"]), np.full((2, 3), -0.1))


def test_sgds_cupy_form_is_the_heavy_ball_description_where_the_graph_can_run_it():
    """On CuPy, SGD's fused form (an ElementwiseKernel, nnarray.fused) is also the graph step's heavy-ball
    description without Nesterov and weight decay; with either it is a form of kind "" (the graph refuses it)."""
    from nnarray import fused  # noqa: PLC0415

    cupy_like = Backend("cupy", None, None)
    form = nn.SGD(0.1, momentum=0.9).fused(cupy_like)
    assert form.kind == "sgd-heavy-ball" and form.apply is not None and (form.lr, form.momentum) == (0.1, 0.9)
    assert isinstance(form, fused.CupyHeavyBallSGD)
    assert nn.SGD(0.1, momentum=0.9, nesterov=True).fused(cupy_like).kind == ""
    assert nn.SGD(0.1, weight_decay=0.1).fused(cupy_like).kind == ""
    numpy_form = nn.SGD(0.1, momentum=0.9).fused(nn.get_backend("numpy"))  # NumPy: Numba's loop, no description
    assert numpy_form is None or (numpy_form.kind == "" and numpy_form.apply is not None)
    opt = nn.SGD(0.1, momentum=0.9)
    params = {"W": np.ones((2, 2)), "b": np.ones(2)}
    buffers = opt.fused(cupy_like).buffers(params)
    assert set(buffers["velocity"]) == {"W", "b"} and buffers["velocity"] is opt.velocity
    assert np.all(opt.velocity["W"] == 0.0)


# ------------------------------------------------------------------------------------ snapshots
@pytest.mark.parametrize("cls,torch_name,kw", TORCH_CASES)
def test_restore_goes_back_to_the_snapshot(cls, torch_name, kw):
    rng = np.random.default_rng(8)
    p = {k: rng.normal(size=s) for k, s in SHAPES.items()}
    opt = cls(**kw)
    for _ in range(3):
        opt.update(p, {k: rng.normal(size=s) for k, s in SHAPES.items()})
    snap, before = opt.snapshot(), opt.state_dict()
    for _ in range(2):
        opt.lr = opt.lr * 0.5
        opt.update(p, {k: rng.normal(size=s) for k, s in SHAPES.items()})
    for _ in range(2):  # a snapshot serves more than once
        opt.restore(snap)
        after = opt.state_dict()
        assert after["t"] == before["t"] == 3 and after["hyperparameters"] == before["hyperparameters"]
        for name, arrays in before["state"].items():
            for k, v in arrays.items():
                np.testing.assert_array_equal(after["state"][name][k], v)
        opt.update(p, {k: np.ones(s) for k, s in SHAPES.items()})
