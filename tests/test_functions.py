"""The stateless pieces (nnarray/functions.py), above all the one loss head."""

import numpy as np
import pytest

import nnarray as nn
from nnarray import functions as F


def _np(x):
    return nn.to_numpy(x)


def _reference_head(A, t, reduction, n=None):
    """Softmax, cross-entropy, a = Y − T and the argmax count, each written out directly in float64 NumPy."""
    A = np.asarray(A, dtype=np.float64)
    Y = np.exp(A - A.max(axis=1, keepdims=True))
    Y /= Y.sum(axis=1, keepdims=True)
    T = np.eye(A.shape[1])[t]
    E = -np.sum(T * np.log(Y))
    a = Y - T
    if reduction == "mean":
        a /= A.shape[0] if n is None else n
    return a, E, int(np.sum(A.argmax(axis=1) == t))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_head_matches_its_definition(backend, reduction):
    rng = np.random.default_rng(0)
    A, t = rng.normal(size=(40, 7)) * 3, rng.integers(0, 7, size=40)
    be = nn.get_backend(backend)
    xp = be.xp
    Ad = be.asarray(A, dtype=xp.float64)
    T = F.one_hot(xp, be.asarray(t, dtype=xp.int64), 7, xp.float64)
    a, E, correct = F.softmax_cross_entropy(xp, Ad, T, reduction)
    a_ref, E_ref, c_ref = _reference_head(A, t, reduction)
    np.testing.assert_allclose(_np(a), a_ref, rtol=1e-12, atol=1e-15)
    assert float(E) == pytest.approx(E_ref, rel=1e-12)
    assert int(correct) == c_ref
    assert a.dtype == xp.float64 and tuple(a.shape) == (40, 7) and tuple(E.shape) == ()


def test_mean_divides_by_the_global_batch_when_given():
    xp = nn.get_backend("numpy").xp
    A = xp.asarray([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]])
    T = F.one_hot(xp, xp.asarray([1, 0]), 3, xp.float64)
    a_local, _, _ = F.softmax_cross_entropy(xp, A, T, "mean")
    a_global, E, _ = F.softmax_cross_entropy(xp, A, T, "mean", n=8)
    np.testing.assert_allclose(a_global * 8, a_local * 2, rtol=1e-15)


def test_exact_ties_count_as_correct_and_huge_logits_stay_finite():
    xp = nn.get_backend("numpy").xp
    A = xp.asarray([[5.0, 5.0], [1000.0, -1000.0], [-1000.0, 1000.0]])
    T = F.one_hot(xp, xp.asarray([1, 0, 0]), 2, xp.float64)
    a, E, correct = F.softmax_cross_entropy(xp, A, T, "sum")
    assert int(correct) == 2  # the tie (row 0) and row 1
    assert np.isfinite(float(E)) and float(E) == pytest.approx(np.log(2) + 2000.0)
    assert np.all(np.isfinite(a))


def test_float32_stays_float32(backend):
    be = nn.get_backend(backend)
    xp = be.xp
    A = be.asarray(np.ones((3, 4)), dtype=xp.float32)
    T = F.one_hot(xp, be.asarray(np.array([0, 1, 2]), dtype=xp.int64), 4, xp.float32)
    a, E, _ = F.softmax_cross_entropy(xp, A, T, "mean")
    assert a.dtype == xp.float32 and E.dtype == xp.float32


def test_relu_backward_in_place_masks_the_given_array():
    xp = nn.get_backend("numpy").xp
    h, H = xp.asarray([[1.0, -2.0, 3.0]]), xp.asarray([[0.5, 0.0, -1.0]])
    out = F.relu_backward(xp, h, H)
    assert out is not h and h[0, 1] == -2.0
    same = F.relu_backward(xp, h, H, inplace=True)
    assert same is h and h.tolist() == [[1.0, 0.0, 0.0]] == out.tolist()
