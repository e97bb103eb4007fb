"""The seed article's element-by-element equations as an oracle.

`seed_minibatch` below is written with Python lists and floats only, one image at a time, in the
seed's notation: W⁽¹⁾ⱼ,ᵢ connects input i to hidden unit j (nnarray's ``W1[i, j]``). It clears the
accumulators, adds every image's ΔB, ΔW over the mini-batch, and applies B ← B − η ΔB, W ← W − η ΔW.
nnarray's vectorised float64 results must agree with it to 1e-12.
"""

import math

import numpy as np
import pytest

import nnarray as nn

TOL = 1e-12


def seed_minibatch(w1, b1, w2, b2, images, labels, eta):
    """One mini-batch of the seed network, per image, in pure Python.

    w1[j][i] = W⁽¹⁾ⱼ,ᵢ, b1[j] = B⁽¹⁾ⱼ, w2[k][j] = W⁽²⁾ₖ,ⱼ, b2[k] = B⁽²⁾ₖ.
    Returns forward values per image, the summed error, the summed gradients and the updated parameters.
    """
    n_hidden, n_out, n_in = len(b1), len(b2), len(images[0])
    # Clear the accumulators at the start of the mini-batch.
    dB1 = [0.0] * n_hidden
    dW1 = [[0.0] * n_in for _ in range(n_hidden)]
    dB2 = [0.0] * n_out
    dW2 = [[0.0] * n_hidden for _ in range(n_out)]
    Hs, As, Ys, E_total = [], [], [], 0.0
    for X, label in zip(images, labels, strict=True):
        T = [1.0 if k == label else 0.0 for k in range(n_out)]
        # Forward: H_j = ReLU(B⁽¹⁾_j + Σ_i X_i W⁽¹⁾_j,i)
        H = []
        for j in range(n_hidden):
            s = b1[j]
            for i in range(n_in):
                s += X[i] * w1[j][i]
            H.append(s if s > 0 else 0.0)
        # A_k = B⁽²⁾_k + Σ_j H_j W⁽²⁾_k,j
        A = []
        for k in range(n_out):
            s = b2[k]
            for j in range(n_hidden):
                s += H[j] * w2[k][j]
            A.append(s)
        # Y_k = exp(A_k) / Σ_m exp(A_m)
        Z = sum(math.exp(A[m]) for m in range(n_out))
        Y = [math.exp(A[k]) / Z for k in range(n_out)]
        # E = −Σ_k T_k log Y_k
        E_total += -sum(T[k] * math.log(Y[k]) for k in range(n_out))
        # Backward: a_k = Y_k − T_k
        a = [Y[k] - T[k] for k in range(n_out)]
        for k in range(n_out):
            dB2[k] += a[k]  # ΔB⁽²⁾_k = a_k
            for j in range(n_hidden):
                dW2[k][j] += H[j] * a[k]  # ΔW⁽²⁾_k,j = H_j a_k
        for j in range(n_hidden):
            h = sum(w2[k][j] * a[k] for k in range(n_out))  # h_j = Σ_k W⁽²⁾_k,j a_k
            h = h if H[j] > 0 else 0.0  # ReLU backward
            dB1[j] += h  # ΔB⁽¹⁾_j = h_j
            for i in range(n_in):
                dW1[j][i] += X[i] * h  # ΔW⁽¹⁾_j,i = X_i h_j
        Hs.append(H)
        As.append(A)
        Ys.append(Y)
    # SGD: B ← B − η ΔB, W ← W − η ΔW
    new = (
        [[w1[j][i] - eta * dW1[j][i] for i in range(n_in)] for j in range(n_hidden)],
        [b1[j] - eta * dB1[j] for j in range(n_hidden)],
        [[w2[k][j] - eta * dW2[k][j] for j in range(n_hidden)] for k in range(n_out)],
        [b2[k] - eta * dB2[k] for k in range(n_out)],
    )
    return {"H": Hs, "A": As, "Y": Ys, "E": E_total, "dW1": dW1, "dB1": dB1, "dW2": dW2, "dB2": dB2, "new": new}


def _seed_view(net):
    """nnarray's parameters in the seed's indexing, as Python lists: w1[j][i] = W1[i, j]."""
    p = {k: nn.to_numpy(v) for k, v in net.params.items()}
    # Non-zero biases make the oracle exercise the bias terms too (He init starts them at 0).
    return p["W1"].T.tolist(), p["b1"].tolist(), p["W2"].T.tolist(), p["b2"].tolist()


def _case(sizes, n_images, seed):
    rng = np.random.default_rng(seed)
    net = nn.MLP(sizes, backend="numpy", dtype="float64", seed=seed)
    net.params["b1"] = net.xp.asarray(rng.normal(scale=0.1, size=sizes[1]))
    net.params["b2"] = net.xp.asarray(rng.normal(scale=0.1, size=sizes[2]))
    X = rng.normal(size=(n_images, sizes[0]))
    t = rng.integers(0, sizes[2], size=n_images)
    # Make sure some hidden units are inactive for some images, so the ReLU mask matters.
    return net, X, t


# The seed's figures use 3 inputs, 4 hidden units, 3 outputs; plus one other small size.
CASES = [([3, 4, 3], 5, 0), ([7, 6, 4], 9, 1)]


@pytest.mark.parametrize("sizes,n_images,seed", CASES, ids=["seed-3-4-3", "7-6-4"])
def test_forward_values_match_the_seed(sizes, n_images, seed):
    net, X, t = _case(sizes, n_images, seed)
    ref = seed_minibatch(*_seed_view(net), X.tolist(), t.tolist(), eta=0.0)
    A, Hs = net.forward(net.xp.asarray(X))
    np.testing.assert_allclose(nn.to_numpy(Hs[1]), ref["H"], rtol=0, atol=TOL)
    np.testing.assert_allclose(nn.to_numpy(A), ref["A"], rtol=0, atol=TOL)
    np.testing.assert_allclose(nn.to_numpy(net.predict(X)), ref["Y"], rtol=0, atol=TOL)
    assert np.any(np.asarray(ref["H"]) == 0.0) and np.any(np.asarray(ref["H"]) > 0.0), "the ReLU mask must be exercised"


@pytest.mark.parametrize("sizes,n_images,seed", CASES, ids=["seed-3-4-3", "7-6-4"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_and_every_gradient_entry_match_the_seed(sizes, n_images, seed, reduction):
    net, X, t = _case(sizes, n_images, seed)
    ref = seed_minibatch(*_seed_view(net), X.tolist(), t.tolist(), eta=0.0)
    scale = 1.0 if reduction == "sum" else 1.0 / n_images
    assert abs(net.loss(X, t, reduction=reduction) - ref["E"] * scale) <= TOL
    g = {k: nn.to_numpy(v) for k, v in net.gradient(X, t, reduction=reduction).items()}
    # nnarray's W1[i, j] is the seed's W⁽¹⁾ⱼ,ᵢ, hence the transposes.
    np.testing.assert_allclose(g["W1"].T, np.asarray(ref["dW1"]) * scale, rtol=0, atol=TOL)
    np.testing.assert_allclose(g["b1"], np.asarray(ref["dB1"]) * scale, rtol=0, atol=TOL)
    np.testing.assert_allclose(g["W2"].T, np.asarray(ref["dW2"]) * scale, rtol=0, atol=TOL)
    np.testing.assert_allclose(g["b2"], np.asarray(ref["dB2"]) * scale, rtol=0, atol=TOL)


@pytest.mark.parametrize("sizes,n_images,seed", CASES, ids=["seed-3-4-3", "7-6-4"])
def test_one_sgd_step_with_the_seeds_sum_convention(sizes, n_images, seed):
    net, X, t = _case(sizes, n_images, seed)
    eta = 0.01  # the seed's η
    ref = seed_minibatch(*_seed_view(net), X.tolist(), t.tolist(), eta=eta)
    nn.SGD(lr=eta).update(net.params, net.gradient(X, t, reduction="sum"))
    w1, b1, w2, b2 = ref["new"]
    p = {k: nn.to_numpy(v) for k, v in net.params.items()}
    np.testing.assert_allclose(p["W1"].T, w1, rtol=0, atol=TOL)
    np.testing.assert_allclose(p["b1"], b1, rtol=0, atol=TOL)
    np.testing.assert_allclose(p["W2"].T, w2, rtol=0, atol=TOL)
    np.testing.assert_allclose(p["b2"], b2, rtol=0, atol=TOL)


def test_fit_one_batch_is_the_seeds_minibatch_step():
    """fit with one batch covering the data and no shuffling performs exactly the seed's step."""
    net, X, t = _case([3, 4, 3], 6, 2)
    eta = 0.01
    ref = seed_minibatch(*_seed_view(net), X.tolist(), t.tolist(), eta=eta)
    hist = nn.fit(net, nn.SGD(eta), X, t, epochs=1, batch_size=6, reduction="sum", options=nn.FitOptions(shuffle=False))
    assert abs(hist.train_loss[0] - ref["E"] / 6) <= TOL  # reported as the mean per image
    w1, b1, w2, b2 = ref["new"]
    np.testing.assert_allclose(nn.to_numpy(net.params["W1"]).T, w1, rtol=0, atol=TOL)
    np.testing.assert_allclose(nn.to_numpy(net.params["b2"]), b2, rtol=0, atol=TOL)
