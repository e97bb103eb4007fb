"""Back-propagation against central differences (float64), on deeper networks than the seed's."""

import numpy as np
import pytest

import nnarray as nn
from nnarray.gradcheck import max_relative_error, numerical_gradient


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("sizes", [[5, 7, 6, 4], [6, 5, 4, 4, 3]], ids=["two-hidden", "three-hidden"])
def test_backprop_matches_central_differences(sizes, reduction):
    rng = np.random.default_rng(3)
    net = nn.MLP(sizes, backend="numpy", dtype="float64", seed=3)
    # Non-zero biases, so the bias gradients are not trivially checked at 0.
    for k in net.params:
        if k.startswith("b"):
            net.params[k] = net.xp.asarray(rng.normal(scale=0.1, size=net.params[k].shape))
    X = rng.normal(size=(8, sizes[0]))
    t = rng.integers(0, sizes[-1], size=8)
    analytic = net.gradient(X, t, reduction=reduction)
    numeric = numerical_gradient(net, X, t, reduction=reduction, eps=1e-6)
    assert set(analytic) == set(net.params) == set(numeric)
    for k in net.params:
        assert analytic[k].shape == net.params[k].shape
    # Central differences are exact to O(ε²) away from ReLU kinks; rounding limits them to ~1e-9.
    assert max_relative_error(analytic, numeric) < 1e-7


def test_gradient_check_detects_a_wrong_gradient():
    """The check itself can fail: a gradient with one perturbed entry is caught."""
    rng = np.random.default_rng(4)
    net = nn.MLP([4, 5, 3], backend="numpy", dtype="float64", seed=4)
    X, t = rng.normal(size=(6, 4)), rng.integers(0, 3, size=6)
    analytic = {k: nn.to_numpy(v).copy() for k, v in net.gradient(X, t).items()}
    analytic["W1"][0, 0] += 1e-3
    assert max_relative_error(analytic, numerical_gradient(net, X, t)) > 1e-5


def test_mean_is_sum_divided_by_batch_size():
    rng = np.random.default_rng(5)
    net = nn.MLP([4, 6, 3], backend="numpy", dtype="float64", seed=5)
    X, t = rng.normal(size=(10, 4)), rng.integers(0, 3, size=10)
    g_sum, g_mean = net.gradient(X, t, reduction="sum"), net.gradient(X, t, reduction="mean")
    for k in g_sum:
        np.testing.assert_allclose(nn.to_numpy(g_mean[k]) * 10, nn.to_numpy(g_sum[k]), rtol=1e-13, atol=1e-15)
