"""The JAX jit step (nnarray.fast.jax_jit) against the generic Array API step: the same values (float64, 1e-10)."""

import numpy as np
import pytest

import nnarray as nn
from nnarray.step import TrainStep, make_step
from test_libraries import OPTIMIZERS

pytestmark = pytest.mark.usefixtures("jax_x64")


def _fit(fast, make_opt, dropout, X, t, dtype="float64"):
    net = nn.MLP([12, 16, 4], backend="jax", dtype=dtype, seed=3, dropout=dropout)
    hist = nn.fit(net, make_opt(), X, t, epochs=2, batch_size=30, seed=4, options=nn.FitOptions(fast=fast),
                  schedule=nn.schedules.Exponential(0.1, 0.5))  # fmt: skip
    return net, hist


@pytest.mark.parametrize("make_opt,dropout", OPTIMIZERS)
def test_jit_step_equals_the_generic_step(make_opt, dropout, blobs):
    """2 epochs of 7 batches (the last one smaller), a schedule, dropout where given: parameters, optimizer
    state and losses of the compiled step equal the generic step's to 1e-10."""
    X, t = blobs(n=200, n_in=12, n_classes=4, seed=5)
    (net_g, hist_g), (net_j, hist_j) = (_fit(fast, make_opt, dropout, X, t) for fast in (False, True))
    np.testing.assert_allclose(hist_j.train_loss, hist_g.train_loss, rtol=1e-10)
    assert hist_j.train_accuracy == hist_g.train_accuracy
    for k, v in net_g.params.items():
        ref = nn.to_numpy(v)
        np.testing.assert_allclose(nn.to_numpy(net_j.params[k]), ref, rtol=1e-10, atol=1e-10 * np.max(np.abs(ref)))


def test_jit_is_the_default_on_jax_and_can_be_turned_off(blobs):
    X, t = blobs(n=60, n_in=12, n_classes=4, seed=5)
    net = nn.MLP([12, 8, 4], backend="jax", dtype="float64", seed=0)
    be = net.backend
    Xd, Td = be.asarray(X, dtype=net.dtype), nn.functions.one_hot(be.xp, be.asarray(t), 4, net.dtype)
    assert make_step(net, nn.SGD(0.1), Xd, Td, "mean").name == "jax-jit"
    assert type(make_step(net, nn.SGD(0.1), Xd, Td, "mean", fast=False)) is TrainStep
    hooked = nn.SGD(0.1)
    hooked.add_hook(nn.optim.ClipGradNorm(1.0))
    assert type(make_step(net, hooked, Xd, Td, "mean")) is TrainStep
    with pytest.raises(ValueError, match=r"fast=True: no fast path available here \(the optimizer has gradient hooks"):
        make_step(net, hooked, Xd, Td, "mean", fast=True)


def test_the_callers_arrays_survive_donation(blobs):
    """The compiled step donates its input buffers; arrays held from before fit stay readable."""
    X, t = blobs(n=60, n_in=12, n_classes=4, seed=5)
    net = nn.MLP([12, 8, 4], backend="jax", dtype="float64", seed=0)
    before = dict(net.params)
    opt = nn.SGD(0.1, momentum=0.9)
    nn.fit(net, opt, X, t, epochs=1, batch_size=20)
    velocity = dict(opt.velocity)
    nn.fit(net, opt, X, t, epochs=1, batch_size=20)
    for k in before:
        assert not np.array_equal(nn.to_numpy(before[k]), nn.to_numpy(net.params[k]))
        assert not np.array_equal(nn.to_numpy(velocity[k]), nn.to_numpy(opt.velocity[k]))


def test_float32_stays_float32(blobs):
    X, t = blobs(n=60, n_in=12, n_classes=4, seed=5)
    net = nn.MLP([12, 8, 4], backend="jax", dtype="float32", seed=0)
    opt = nn.Adam(0.01)
    nn.fit(net, opt, X, t, epochs=1, batch_size=20, options=nn.FitOptions(fast=True))
    for d in (net.params, opt.state["exp_avg"], opt.state["exp_avg_sq"]):
        assert all(v.dtype == net.dtype for v in d.values())


def test_bench_has_jax_rows(import_script):
    assert import_script("bench").jax_rows() == ["jax:generic", "jax:fast"]


def test_one_compilation_serves_every_fit_call(blobs):
    """fit is called once per epoch by some callers (the benchmark, the CLI's resume): no recompiling."""
    from nnarray.fast.jax_jit import _compiled_batch

    X, t = blobs(n=70, n_in=12, n_classes=4, seed=5)
    net, opt = nn.MLP([12, 8, 4], backend="jax", dtype="float64", seed=0), nn.SGD(0.1, momentum=0.9)
    nn.fit(net, opt, X, t, epochs=1, batch_size=20)
    compiled = _compiled_batch(net, opt, "mean")
    size = compiled._cache_size()
    assert size >= 1
    nn.fit(net, opt, X, t, epochs=2, batch_size=20, schedule=nn.schedules.Exponential(0.1, 0.5))
    assert _compiled_batch(net, opt, "mean") is compiled and compiled._cache_size() == size
    # A rule constant that changes is a different program; so is another network structure.
    assert _compiled_batch(net, nn.SGD(0.1, momentum=0.5), "mean") is not compiled
    assert _compiled_batch(nn.MLP([12, 9, 4], backend="jax", seed=0), opt, "mean") is not compiled
