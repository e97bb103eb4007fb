"""SGD: the closed form, in-place and functional updates agree, momentum, state round trip."""

import numpy as np
import pytest

import nnarray as nn


def _params(rng, writeable=True):
    p = {"W1": rng.normal(size=(4, 3)), "b1": rng.normal(size=3)}
    for v in p.values():
        v.setflags(write=writeable)
    return p


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_in_place_and_functional_updates_agree(momentum):
    """Writeable arrays are updated in place; read-only ones get new arrays; the values are identical."""
    rng = np.random.default_rng(0)
    a, b = _params(rng), None
    b = {k: v.copy() for k, v in a.items()}
    for v in b.values():
        v.setflags(write=False)
    ids = {k: id(v) for k, v in a.items()}
    opt_a, opt_b = nn.SGD(0.1, momentum=momentum), nn.SGD(0.1, momentum=momentum)
    for step in range(3):
        g = {k: rng.normal(size=v.shape) for k, v in a.items()}
        opt_a.update(a, g)
        opt_b.update(b, g)
    for k in a:
        assert id(a[k]) == ids[k], "writeable parameters are updated in place"
        assert not b[k].flags.writeable or id(b[k]) != ids[k]
        np.testing.assert_array_equal(a[k], b[k])


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
def test_consuming_the_gradients_gives_bit_identical_updates(momentum, dtype):
    """update(..., consume=True) (what the training step uses) overwrites the gradients instead of allocating."""
    rng = np.random.default_rng(0)
    p0 = {"W": rng.normal(size=(5, 4)).astype(dtype), "b": rng.normal(size=4).astype(dtype)}
    a, b = nn.SGD(0.07, momentum=momentum), nn.SGD(0.07, momentum=momentum)
    pa, pb = {k: v.copy() for k, v in p0.items()}, {k: v.copy() for k, v in p0.items()}
    for step in range(5):
        g = {k: rng.normal(size=v.shape).astype(dtype) for k, v in p0.items()}
        a.update(pa, {k: v.copy() for k, v in g.items()})
        scratch = {k: v.copy() for k, v in g.items()}
        if step == 3:
            for v in scratch.values():
                v.flags.writeable = False  # read-only gradients fall back to the allocating update
        b.update(pb, scratch, consume=True)
        for k in p0:
            assert np.array_equal(pa[k], pb[k]) and pa[k].dtype == dtype, (step, k)
            if momentum:
                assert np.array_equal(a.velocity[k], b.velocity[k])
                assert not np.shares_memory(b.velocity[k], scratch[k]), "the optimizer keeps no reference to the scratch"
