"""The optimizers' fused forms (nnarray/fused.py) against their functional rules: on NumPy the Numba loops of
SGD, Adam/AdamW, RMSprop and AdaGrad to 1e-12 in float64 for every option, over several steps and a change of η;
on torch's CPU tensors the same loops on the tensors' memory; the CuPy kernels checked on a GPU."""

import numpy as np
import pytest

import nnarray as nn
from nnarray import fused

CONFIGS = [
    ("SGD", {}),
    ("SGD", {"weight_decay": 0.1}),
    ("SGD", {"momentum": 0.9}),
    ("SGD", {"momentum": 0.9, "nesterov": True}),
    ("SGD", {"momentum": 0.8, "weight_decay": 0.05}),
    ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.05}),
    ("Adam", {}),
    ("Adam", {"weight_decay": 0.1}),
    ("Adam", {"betas": (0.8, 0.99), "eps": 1e-6}),
    ("AdamW", {}),
    ("AdamW", {"weight_decay": 0.05}),
    ("AdamW", {"weight_decay": 0.0}),
    ("RMSprop", {}),
    ("RMSprop", {"momentum": 0.9}),
    ("RMSprop", {"alpha": 0.9, "eps": 1e-6, "weight_decay": 0.1}),
    ("RMSprop", {"momentum": 0.5, "weight_decay": 0.1}),
    ("AdaGrad", {}),
    ("AdaGrad", {"lr_decay": 0.1}),
    ("AdaGrad", {"initial_accumulator_value": 0.5}),
    ("AdaGrad", {"lr_decay": 0.05, "initial_accumulator_value": 0.1, "weight_decay": 0.1, "eps": 1e-6}),
]
LR = {"SGD": 0.1, "Adam": 1e-2, "AdamW": 1e-2, "RMSprop": 1e-2, "AdaGrad": 0.1}


#: Every optimizer has a NumPy fused form (nnarray.fused.NUMPY_FUSED_FAMILIES).
FUSED = CONFIGS


def _ids(configs):
    return [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}" for n, kw in configs]


IDS = _ids(CONFIGS)


def _params(rng, xp=np):
    base = rng.standard_normal((9, 13))
    return {
        "W1": xp.asarray(rng.standard_normal((37, 11))),
        "b1": xp.asarray(rng.standard_normal(11)),
        "W2": xp.asarray(base).T,  # a strided view: the form writes the functional rule's results into it
        "b2": xp.asarray(rng.standard_normal(1)),
    }


def _read_only(params):
    """Copies the optimizer cannot write to: :meth:`nnarray.optim.Optimizer.update` then takes the functional rule."""
    out = {k: np.array(v, copy=True) for k, v in params.items()}
    for v in out.values():
        v.flags.writeable = False
    return out


@pytest.fixture
def numba_on(monkeypatch):
    """The NumPy forms' Numba engine, for the optimizers made after this fixture."""
    pytest.importorskip("numba", reason="the numba extra (pip install 'nnarray[numba]')")
    monkeypatch.setenv("NNARRAY_NUMBA", "1")
    assert fused.numpy_engine() == "numba"


def _counted(form, monkeypatch):
    """Count the parameters ``form`` updated in place: a Numba loop run ("loop") or the rule written back
    ("write"); the list returned grows by one per parameter."""
    from nnarray import _numba_kernels  # noqa: PLC0415 -- the numba extra (numba_on)

    calls = []

    def counting(kernel, what):
        return lambda *args: (calls.append(what), kernel(*args))[1]

    for name in fused._CUPY_SOURCES:  # the Numba kernels have the CuPy kernels' names
        monkeypatch.setattr(_numba_kernels, name, counting(getattr(_numba_kernels, name), "loop"))
    write = form._write_rule
    monkeypatch.setattr(form, "_write_rule", lambda *args: (calls.append("write"), write(*args))[1])
    return calls


@pytest.mark.parametrize("name,kw", FUSED, ids=_ids(FUSED))
def test_numpy_fused_form_equals_the_functional_rule(name, kw, numba_on, monkeypatch):
    """W1, b1, b2 contiguous (Numba's loops), W2 a strided view (the rule written back in place)."""
    rng = np.random.default_rng(0)
    params = _params(rng)
    ids = {k: id(v) for k, v in params.items()}
    ref_params = _read_only(params)
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(6)]
    lrs = [LR[name]] * 3 + [LR[name] * 0.5] * 3  # a schedule's change of η mid-run
    opt, ref = getattr(nn, name)(lr=LR[name], **kw), getattr(nn, name)(lr=LR[name], **kw)
    form = opt.fused(nn.get_backend("numpy"))
    assert isinstance(form, fused.NumbaForm) and form.apply is not None
    calls = _counted(form, monkeypatch)
    for g_step, lr in zip(grads, lrs, strict=True):
        g_copy = {k: g.copy() for k, g in g_step.items()}
        opt.lr = ref.lr = lr
        opt.update(params, g_step)
        ref_params = _read_only(ref_params)
        ref.update(ref_params, g_copy)
        for k in g_step:
            np.testing.assert_array_equal(g_step[k], g_copy[k])  # the gradient is never changed
    assert len(calls) == 6 * len(params)  # the fused form made every update, the reference none
    assert calls.count("write") == 6  # W2, the strided view: the rule written back; the others, Numba loops
    assert {k: id(v) for k, v in params.items()} == ids, "updated in place, the strided view included"
    assert opt.state_names() == ref.state_names() and opt.t == ref.t == 6
    for k in params:
        np.testing.assert_allclose(params[k], ref_params[k], rtol=1e-12, atol=1e-15, err_msg=k)
        for n in ref.state_names():
            np.testing.assert_allclose(opt.state[n][k], ref.state[n][k], rtol=1e-12, atol=1e-15, err_msg=f"{n} {k}")


@pytest.mark.parametrize("name,kw", [c for c in FUSED if c[1]], ids=_ids([c for c in FUSED if c[1]]))
def test_numpy_fused_form_in_float32_is_the_functional_rule_to_rounding(name, kw, numba_on, monkeypatch):
    """float32 stays float32: both compute in float32 (the rule's weak scalars, the form's cast constants)."""
    rng = np.random.default_rng(1)
    params = {k: v.astype(np.float32) for k, v in _params(rng).items()}
    ref_params = _read_only(params)
    opt, ref = getattr(nn, name)(lr=LR[name], **kw), getattr(nn, name)(lr=LR[name], **kw)
    calls = _counted(opt.fused(nn.get_backend("numpy")), monkeypatch)
    for _ in range(5):
        g = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
        opt.update(params, g)
        ref_params = _read_only(ref_params)
        ref.update(ref_params, g)
    assert len(calls) == 5 * len(params)
    for k in params:
        assert params[k].dtype == np.float32 and all(opt.state[n][k].dtype == np.float32 for n in opt.state_names())
        np.testing.assert_allclose(params[k], ref_params[k], rtol=2e-6, atol=1e-7, err_msg=k)


def test_a_mixed_dtype_gradient_takes_the_rule_written_in_place(numba_on):
    """float32 parameters with a float64 gradient: not one dtype, so the rule's results are written back."""
    rng = np.random.default_rng(3)
    p = {"W": rng.standard_normal((4, 5)).astype(np.float32)}
    W = p["W"]
    ref_p = _read_only(p)
    opt, ref = nn.Adam(1e-2), nn.Adam(1e-2)
    g = {"W": rng.standard_normal((4, 5))}
    opt.update(p, g)
    ref.update(ref_p, g)
    assert p["W"] is W and W.dtype == np.float32
    np.testing.assert_allclose(W, ref_p["W"].astype(np.float32), rtol=1e-6)


SGD_CONFIGS = [c for c in CONFIGS if c[0] == "SGD"]


@pytest.mark.parametrize("name,kw", SGD_CONFIGS, ids=_ids(SGD_CONFIGS))
def test_sgd_with_numba_off_takes_the_functional_rule(name, kw, monkeypatch):
    """With the Numba engine off SGD has no fused form on NumPy, and the update is the rule exactly."""
    monkeypatch.setenv("NNARRAY_NUMBA", "off")
    rng = np.random.default_rng(4)
    params = _params(rng)
    ref_params = _read_only(params)
    opt, ref = nn.SGD(lr=LR[name], **kw), nn.SGD(lr=LR[name], **kw)
    assert opt.fused(nn.get_backend("numpy")) is None
    for lr in [LR[name]] * 2 + [LR[name] * 0.5] * 2:
        g = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        opt.lr = ref.lr = lr
        opt.update(params, g)
        ref_params = _read_only(ref_params)
        ref.update(ref_params, g)
    for k in params:
        np.testing.assert_array_equal(params[k], ref_params[k], err_msg=k)
        for n in ref.state_names():
            np.testing.assert_array_equal(opt.state[n][k], ref.state[n][k], err_msg=f"{n} {k}")


def test_sgds_rule_is_bit_identical_to_the_textbook_expressions():
    """``-lr * g + p`` (ordered for NumPy's temporary elision) rounds exactly as ``p - lr * g``; the momentum and
    Nesterov forms only commute additions."""
    rng = np.random.default_rng(6)
    p, g, v = (rng.standard_normal(1000).astype(np.float32) for _ in range(3))
    lr, mu = 0.1, 0.9
    plain = nn.SGD(lr)
    new_p, _ = plain.rule(p, g, {}, plain.scalars())
    np.testing.assert_array_equal(new_p, p - lr * g)
    heavy = nn.SGD(lr, momentum=mu)
    new_p, st = heavy.rule(p, g, {"velocity": v}, heavy.scalars())
    np.testing.assert_array_equal(st["velocity"], mu * v - lr * g)
    np.testing.assert_array_equal(new_p, p + (mu * v - lr * g))
    nesterov = nn.SGD(lr, momentum=mu, nesterov=True)
    new_p, st = nesterov.rule(p, g, {"velocity": v}, nesterov.scalars())
    v_new = mu * v - lr * g
    np.testing.assert_array_equal(new_p, p + (mu * v_new - lr * g))


@pytest.mark.parametrize("name,kw", [("SGD", {"momentum": 0.9}), ("Adam", {}), ("AdamW", {"weight_decay": 0.05}),
                                     ("RMSprop", {"momentum": 0.9}), ("AdaGrad", {"lr_decay": 0.1})])
def test_numba_off_or_missing_takes_the_functional_rule_and_names_the_extra(name, kw, monkeypatch):
    monkeypatch.setattr(fused.importlib.util, "find_spec", lambda name: None)
    monkeypatch.delenv("NNARRAY_NUMBA", raising=False)
    assert fused.numpy_engine() == "functional"
    assert "pip install 'nnarray[numba]'" in fused.NUMBA_MISSING and "functional rule" in fused.NUMBA_MISSING
    assert getattr(nn, name)(lr=LR[name], **kw).fused(nn.get_backend("numpy")) is None
    monkeypatch.undo()
    monkeypatch.setenv("NNARRAY_NUMBA", "off")
    assert fused.numpy_engine() == "functional"
    opt = getattr(nn, name)(lr=LR[name], **kw)
    assert opt.fused(nn.get_backend("numpy")) is None
    p, ref_p = {"W": np.ones((3, 4))}, _read_only({"W": np.ones((3, 4))})
    ref = getattr(nn, name)(lr=LR[name], **kw)
    for _ in range(2):
        opt.update(p, {"W": np.full((3, 4), 0.5)})
        ref_p = _read_only(ref_p)
        ref.update(ref_p, {"W": np.full((3, 4), 0.5)})
    np.testing.assert_array_equal(p["W"], ref_p["W"])


def test_numpy_fused_form_keeps_float32_and_is_made_once(numba_on):
    opt = nn.AdamW(1e-3, weight_decay=0.05)
    p = {"W": np.ones((3, 4), dtype=np.float32)}
    opt.update(p, {"W": np.full((3, 4), 0.5, dtype=np.float32)})
    assert p["W"].dtype == np.float32 and opt.state["exp_avg"]["W"].dtype == np.float32
    assert opt.fused(nn.get_backend("numpy")) is opt.fused(nn.get_backend("numpy"))


def test_read_only_parameters_take_the_functional_rule():
    opt = nn.Adam(1e-2)
    W = np.ones(3)
    W.flags.writeable = False
    p = {"W": W}
    opt.update(p, {"W": np.full(3, 0.5)})
    assert p["W"] is not W and np.all(W == 1.0)


def test_cupy_kernels_are_defined_for_every_family_without_cupy():
    """The kernel sources exist for every optimizer and state layout; compiling them needs CuPy (gpu tests)."""
    assert set(fused._CUPY_SOURCES) == {"sgd", "sgd_momentum", "adam", "rmsprop", "rmsprop_momentum", "adagrad"}
    for name, kw in CONFIGS:
        opt = getattr(nn, name)(lr=LR[name], **kw)
        family = {"SGD": "sgd", "Adam": "adam", "AdamW": "adam", "RMSprop": "rmsprop", "AdaGrad": "adagrad"}[name]
        opt.t = 1
        kernel, args, names = fused._arguments(opt, family, opt.scalars())
        assert names == opt.state_names()  # the Numba kernels take the state in this order
        params_in, params_out, _ = fused._CUPY_SOURCES[kernel]
        assert len(params_in.split(",")) == 1 + len(args)  # g and the constants
        assert len(params_out.split(",")) == 1 + len(names)  # p and the state


@pytest.mark.gpu
@pytest.mark.parametrize("name,kw", CONFIGS)
def test_cupy_fused_form_equals_the_functional_rule(name, kw):
    if not nn.cupy_available():
        pytest.skip("needs CuPy and a CUDA device")
    import cupy as cp  # noqa: PLC0415

    rng = np.random.default_rng(0)
    host = _params(rng)
    grads = [{k: rng.standard_normal(v.shape) for k, v in host.items()} for _ in range(4)]
    opt, ref = getattr(nn, name)(lr=LR[name], **kw), getattr(nn, name)(lr=LR[name], **kw)
    assert opt.fused(nn.get_backend("cupy")).apply is not None
    dev = {k: cp.ascontiguousarray(cp.asarray(v)) for k, v in host.items()}
    cpu = {k: np.array(v) for k, v in host.items()}
    with np.errstate(all="ignore"):
        for g in grads:
            opt.update(dev, {k: cp.asarray(v) for k, v in g.items()})
            cpu_ro = {k: v.copy() for k, v in cpu.items()}
            for v in cpu_ro.values():
                v.flags.writeable = False  # the functional rule on the host
            ref.update(cpu_ro, g)
            cpu = cpu_ro
    for k in cpu:
        np.testing.assert_allclose(cp.asnumpy(dev[k]), cpu[k], rtol=1e-12, atol=1e-15)


def _torch_params(torch, host):
    """Tensors of their own memory: W1, b1, b2 contiguous, W2 a transposed (strided) view as in :func:`_params`."""
    out = {k: torch.asarray(np.ascontiguousarray(v)).clone() for k, v in host.items()}
    out["W2"] = out["W2"].T.contiguous().T
    return out


def _torch_run(torch, name, kw, params, host, rng, steps=6):
    """``steps`` updates of ``params`` (tensors) and of NumPy's reference from ``host``, η halved mid-run; the
    optimizer and the reference's parameters after them."""
    ref_params = _read_only(host)
    opt, ref = getattr(nn, name)(lr=LR[name], **kw), getattr(nn, name)(lr=LR[name], **kw)
    for lr in [LR[name]] * (steps // 2) + [LR[name] * 0.5] * (steps - steps // 2):
        g = {k: rng.standard_normal(v.shape) for k, v in host.items()}
        g_t = {k: torch.asarray(v) for k, v in g.items()}
        opt.lr = ref.lr = lr
        opt.update(params, g_t)
        ref_params = _read_only(ref_params)
        ref.update(ref_params, g)
        for k in g:
            np.testing.assert_array_equal(g_t[k].numpy(), g[k])  # the gradient is never changed
    for k in params:
        np.testing.assert_allclose(params[k].detach().numpy(), ref_params[k], rtol=1e-12, atol=1e-15, err_msg=k)
        for n in ref.state_names():
            np.testing.assert_allclose(opt.state[n][k].numpy(), ref.state[n][k], rtol=1e-12, atol=1e-15)
    return opt


@pytest.mark.torch
@pytest.mark.parametrize("name,kw", CONFIGS, ids=IDS)
def test_torch_cpu_form_runs_the_numba_loops_on_the_tensors_memory(name, kw, numba_on, monkeypatch):
    """On the CPU the torch form runs NumPy's loops on views of the tensors: in place, equal to the functional
    rule to 1e-12 in float64; the strided W2 gets the rule's results written into it."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    host = _params(rng)
    params = _torch_params(torch, host)
    ids = {k: id(v) for k, v in params.items()}
    form = getattr(nn, name)(lr=LR[name], **kw).fused(nn.get_backend("torch"))
    assert isinstance(form, fused.TorchNumbaForm) and form.description.startswith(fused.TorchNumbaForm.description)
    heavy_ball = name == "SGD" and not kw.get("nesterov") and not kw.get("weight_decay")
    assert isinstance(form, fused.TorchHeavyBallSGD) == heavy_ball == (form.kind == "sgd-heavy-ball")
    calls = _counted(fused.TorchNumbaForm, monkeypatch)
    _torch_run(torch, name, kw, params, host, rng)
    assert calls.count("write") == 6 and calls.count("loop") == 6 * 3  # W2 strided: the rule written back
    assert {k: id(v) for k, v in params.items()} == ids, "updated in place, the strided view included"


@pytest.mark.torch
@pytest.mark.parametrize("name,kw", [("SGD", {"momentum": 0.9, "nesterov": True}), ("AdamW", {"weight_decay": 0.05}),
                                     ("RMSprop", {"momentum": 0.5}), ("AdaGrad", {"lr_decay": 0.1})])
def test_torch_without_numba_or_for_a_leaf_that_requires_grad_takes_the_rule(name, kw, numba_on, monkeypatch):
    """A tensor that requires grad has no NumPy view: the rule's results are written into it (under no_grad, as
    torch.optim writes); with ``NNARRAY_NUMBA=0`` torch has no form and the rule's results are stored."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    host = _params(rng)
    params = {k: v.requires_grad_(True) for k, v in _torch_params(torch, host).items()}
    ids = {k: id(v) for k, v in params.items()}
    calls = _counted(fused.TorchNumbaForm, monkeypatch)
    _torch_run(torch, name, kw, params, host, rng)
    assert calls == ["write"] * 6 * 4 and {k: id(v) for k, v in params.items()} == ids
    monkeypatch.setenv("NNARRAY_NUMBA", "0")
    assert getattr(nn, name)(lr=LR[name], **kw).fused(nn.get_backend("torch")) is None
    _torch_run(torch, name, kw, _torch_params(torch, host), host, np.random.default_rng(3))


@pytest.mark.parametrize("name,kw,state", [("SGD", {"momentum": 0.9}, "velocity"), ("Adam", {}, "exp_avg"),
                                           ("RMSprop", {"momentum": 0.9}, "momentum_buffer")])
def test_a_decaying_state_is_flushed_to_zero_not_left_subnormal(name, kw, state, numba_on):
    """A weight whose gradient stays 0 (a dead ReLU unit's) sees its state decay: the rule leaves it stuck at the
    smallest subnormals (μ · 2⁻¹⁴⁹ rounds back to 2⁻¹⁴⁹), where every later pass on x86 takes a microcode assist;
    the Numba loops store 0 instead. Parameters equal the rule's; the states differ only below the smallest normal."""
    tiny = np.finfo(np.float32).tiny
    params = {"W": np.full((4, 8), 0.5, dtype=np.float32)}
    ref_params = _read_only(params)
    opt, ref = getattr(nn, name)(lr=LR[name], **kw), getattr(nn, name)(lr=LR[name], **kw)
    g = {"W": np.full((4, 8), 0.25, dtype=np.float32)}
    zero = {"W": np.zeros((4, 8), dtype=np.float32)}
    for grads in [g] + [zero] * 1500:  # 0.9¹⁵⁰⁰ ≈ 1e-69: far below float32's subnormals
        opt.update(params, grads)
        ref_params = _read_only(ref_params)
        ref.update(ref_params, grads)
    stuck = ref.state[state]["W"]
    assert np.all((stuck != 0) & (np.abs(stuck) < tiny)), "the rule's state is stuck among the subnormals"
    assert np.all(opt.state[state]["W"] == 0.0)
    np.testing.assert_array_equal(params["W"], ref_params["W"])


def test_the_words_for_how_updates_run(monkeypatch):
    """What the training command's header says: the fused form's description, or the rule with the extra."""
    numpy_be = nn.get_backend("numpy")
    monkeypatch.delenv("NNARRAY_NUMBA", raising=False)
    monkeypatch.delenv("NNARRAY_FUSED", raising=False)
    if fused.importlib.util.find_spec("numba") is not None:
        assert fused.describe_updates(nn.SGD(0.1, momentum=0.9), numpy_be) == fused.NumbaForm.description
    monkeypatch.setenv("NNARRAY_FUSED", "0")
    assert fused.describe_updates(nn.AdamW(), numpy_be) == "the functional rule"
    monkeypatch.delenv("NNARRAY_FUSED")
    monkeypatch.setattr(fused.importlib.util, "find_spec", lambda name: None)
    assert fused.describe_updates(nn.AdamW(), numpy_be) == (
        "the functional rule (pip install 'nnarray[numba]' for one compiled pass per parameter)")



def test_a_read_only_parameter_takes_the_rule_the_others_the_numba_loops(numba_on, monkeypatch):
    rng = np.random.default_rng(11)
    params = {"W": rng.standard_normal((5, 4)), "b": rng.standard_normal(4)}
    params["b"].flags.writeable = False
    ref = _read_only(params)
    b, W = params["b"], params["W"]
    opt, ref_opt = nn.Adam(1e-2), nn.Adam(1e-2)
    calls = _counted(opt.fused(nn.get_backend("numpy")), monkeypatch)
    g = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    opt.update(params, g)
    ref_opt.update(ref, g)
    assert calls == ["loop"] and params["W"] is W and params["b"] is not b  # W in place, b replaced
    for k in params:
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-12, atol=1e-15)
