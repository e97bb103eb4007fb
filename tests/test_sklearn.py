"""nnarray.sklearn.MLPClassifier: scikit-learn's estimator checks, sklearn tooling, pickles, array-API inputs,
and parity with nnarray.fit."""

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import nnarray as nn  # noqa: E402
import nnarray.sklearn as nsk  # noqa: E402
from conftest import child_env  # noqa: E402
from nnarray.sklearn import MLPClassifier  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
quiet_convergence = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# A few epochs suffice for sklearn's checks (they train on ~100-sample problems); ConvergenceWarning is
# expected there and ignored deliberately (the checks themselves do not filter it).
CHECKED = [
    MLPClassifier(max_iter=100, backend="numpy"),  # the defaults: adam
    MLPClassifier(max_iter=100, backend="numpy", solver="sgd", learning_rate_init=0.01),  # nesterov momentum
]


def expected_failed_checks(estimator):
    """Checks the estimator cannot pass, with the reason (scikit-learn's mechanism); none at present."""
    return {}


@quiet_convergence
@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture
def data(blobs):
    X, t = blobs(n=240, n_in=6, n_classes=3, seed=1)
    return X, t


def small(**kw):
    kw.setdefault("hidden_layer_sizes", (16,))
    kw.setdefault("max_iter", 30)
    kw.setdefault("backend", "numpy")
    kw.setdefault("random_state", 0)
    kw.setdefault("learning_rate_init", 0.01)
    return MLPClassifier(**kw)


# ------------------------------------------------------------------------------------------- parameters
def test_activation_other_than_relu_is_refused(data):
    with pytest.raises(ValueError, match=r"activation: .*ReLU hidden layers only; got 'tanh'"):
        small(activation="tanh").fit(*data)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(solver="lbfgs"), "solver: 'lbfgs' is not supported"),
        (dict(solver="newton"), "solver: expected one of"),
        (dict(learning_rate="cyclic"), "learning_rate: expected one of"),
        (dict(hidden_layer_sizes=(10, 0)), "hidden_layer_sizes"),
        (dict(alpha=-1.0), "alpha"),
        (dict(max_iter=0), "max_iter"),
        (dict(dtype="float16"), "dtype"),
        (dict(validation_fraction=1.0), "validation_fraction"),
    ],
)
def test_bad_parameters_are_named_at_fit(data, kw, match):
    clf = small(**kw)  # sklearn's rule: __init__ stores, fit validates
    with pytest.raises(ValueError, match=match):
        clf.fit(*data)


def test_unfitted_raises_not_fitted(data):
    with pytest.raises(NotFittedError):
        small().predict(data[0])


def test_missing_scikit_learn_names_the_extra():
    code = "import sys; sys.modules['sklearn'] = None\nimport nnarray.sklearn"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=child_env())
    assert r.returncode != 0
    assert 'pip install "nnarray[sklearn]"' in r.stderr and "ImportError" in r.stderr


# ------------------------------------------------------------------------------------------- behaviour
@quiet_convergence
def test_fit_predict_string_labels_and_attributes(data):
    X, t = data
    y = np.array(["cat", "dog", "emu"])[t]
    clf = small(max_iter=40).fit(X, y)
    assert list(clf.classes_) == ["cat", "dog", "emu"]
    assert clf.score(X, y) > 0.9
    assert set(clf.predict(X)) <= set(clf.classes_)
    P = clf.predict_proba(X)
    assert P.shape == (240, 3) and isinstance(P, np.ndarray)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(P), atol=1e-10)
    assert [c.shape for c in clf.coefs_] == [(6, 16), (16, 3)]
    assert [b.shape for b in clf.intercepts_] == [(16,), (3,)]
    assert all(type(a) is np.ndarray for a in clf.coefs_ + clf.intercepts_)
    assert clf.n_iter_ == len(clf.loss_curve_) and clf.n_features_in_ == 6 and clf.backend_ == "numpy"
    assert clf.coefs_[0].dtype == np.float64  # the input's dtype by default


def test_dtype_follows_input_or_parameter(data):
    X, t = data
    with pytest.warns(ConvergenceWarning):
        assert small(max_iter=2).fit(X.astype(np.float32), t).coefs_[0].dtype == np.float32
    with pytest.warns(ConvergenceWarning):
        assert small(max_iter=2, dtype="float32").fit(X, t).predict_proba(X).dtype == np.float32


def test_feature_names_in_for_dataframes(data):
    pd = pytest.importorskip("pandas")
    X, t = data
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    with pytest.warns(ConvergenceWarning):
        clf = small(max_iter=3).fit(df, t)
    assert list(clf.feature_names_in_) == list(df.columns)
    with pytest.warns(UserWarning, match="feature names"):
        clf.predict(X)


def test_tol_rule_stops_training_without_convergence_warning(data):
    X, t = data
    # as scikit-learn: epoch 1 sets best_loss_, epochs 2-5 improve by less than tol, the count 4 > 3 stops
    clf = small(max_iter=500, tol=1e9, n_iter_no_change=3)
    clf.fit(X, t)  # no ConvergenceWarning (pytest turns warnings into errors)
    assert clf.n_iter_ == 5


@quiet_convergence
def test_early_stopping_keeps_best_validation_weights(data):
    X, t = data
    clf = small(early_stopping=True, validation_fraction=0.2, max_iter=60, n_iter_no_change=5)
    clf.fit(X, t)
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        clf.partial_fit(X, t)


@quiet_convergence
@pytest.mark.parametrize("schedule", ["invscaling", "adaptive"])
def test_learning_rate_schedules(data, schedule):
    X, t = data
    clf = small(solver="sgd", learning_rate=schedule, max_iter=20, tol=1e9, n_iter_no_change=2)
    clf.fit(X, t)
    if schedule == "invscaling":  # η = η0 / (t + 1)^power_t after each epoch, t = samples seen
        assert clf._optimizer.lr == pytest.approx(0.01 / (clf.t_ + 1) ** 0.5)
    else:  # divided by 5 after every n_iter_no_change + 1 epochs without improvement
        assert clf.n_iter_ == 20 and clf._optimizer.lr == pytest.approx(0.01 / 5**6)


def test_partial_fit_equals_fit_epoch_by_epoch(data):
    X, t = data
    y = t + 10  # labels need not be 0..C-1
    kw = dict(solver="adam", alpha=1e-3, batch_size=50, n_iter_no_change=np.inf)  # 240 = 4·50 + 40
    with pytest.warns(ConvergenceWarning):
        full = small(max_iter=3, **kw).fit(X, y)
    inc = small(**kw)
    with pytest.raises(ValueError, match="classes must be passed"):
        inc.partial_fit(X, y)
    for _ in range(3):
        inc.partial_fit(X, y, classes=np.array([10, 11, 12]))
    assert inc.n_iter_ == 3
    for a, b in zip(full.coefs_ + full.intercepts_, inc.coefs_ + inc.intercepts_, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(full.loss_curve_, inc.loss_curve_, rtol=1e-14)
    with pytest.raises(ValueError, match="classes not"):
        inc.partial_fit(X, y + 1)


def test_alpha_is_sklearns_l2(data):
    """One full-batch SGD step: W ← W − η (∇ mean cross-entropy + α W / n), biases without penalty;
    loss_curve_ holds the cross-entropy plus α/(2n)·Σ‖W‖²."""
    X, t = data
    n, lr, alpha = X.shape[0], 0.05, 3.0
    clf = small(solver="sgd", momentum=0.0, alpha=alpha, batch_size=n, learning_rate_init=lr, shuffle=False)
    ref = nn.MLP([6, 16, 3], backend="numpy", dtype="float64", seed=np.random.default_rng(0))
    g = ref.gradient(X, t, reduction="mean")
    loss0 = ref.loss(X, t) + 0.5 * alpha * sum(float(np.sum(ref.params[k] ** 2)) for k in ("W1", "W2")) / n
    clf.partial_fit(X, t, classes=[0, 1, 2])
    for l in (1, 2):
        W, b = ref.params[f"W{l}"], ref.params[f"b{l}"]
        np.testing.assert_allclose(clf.coefs_[l - 1], W - lr * (g[f"W{l}"] + alpha * W / n), rtol=0, atol=1e-12)
        np.testing.assert_allclose(clf.intercepts_[l - 1], b - lr * g[f"b{l}"], rtol=0, atol=1e-12)
    assert clf.loss_curve_[0] == pytest.approx(loss0, rel=1e-12)
    assert clf._optimizer.hooks == [], "the L2 hook is the optimizer's for the duration of one fit only"


def test_the_l2_penalty_hook_adds_alpha_w_over_n_to_the_weights_only():
    """L2Penalty(α, N, B, weights): α·W/n on the named keys, n the batch's own length (the epoch's last is shorter)."""
    from nnarray.sklearn import L2Penalty  # noqa: PLC0415

    hook = L2Penalty(2.0, n_samples=5, batch_size=2, weights=["W1"])  # batches of 2, 2, 1
    params = {"W1": np.full((2, 2), 3.0), "b1": np.ones(2)}
    grads = {"W1": np.zeros((2, 2)), "b1": np.zeros(2)}
    for n in (2, 2, 1, 2):
        out = hook(params, grads)
        np.testing.assert_array_equal(out["W1"], np.full((2, 2), 2.0 * 3.0 / n))
        assert out["b1"] is grads["b1"] and np.all(grads["W1"] == 0.0)
    assert hook.take_penalty() == 4 * 36.0 and hook.take_penalty() == 0.0


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_same_training_as_nn_fit(data, solver):
    """Same initial weights, batches and settings: the estimator's parameters equal nn.fit's (float64)."""
    X, t = data
    epochs, bs, lr = 4, 32, 0.02
    clf = small(solver=solver, alpha=0.0, batch_size=bs, learning_rate_init=lr, max_iter=epochs,
                nesterovs_momentum=False, n_iter_no_change=np.inf, random_state=7)
    with pytest.warns(ConvergenceWarning):
        clf.fit(X, t)

    rng = np.random.default_rng(7)  # one Generator: initial weights, then the epoch permutations
    net = nn.MLP([6, 16, 3], backend="numpy", dtype="float64", seed=rng)
    opt = clf._make_optimizer()  # nn.SGD(lr, momentum=0.9) or nnarray's Adam with sklearn's betas/eps
    assert opt.state == {k: {} for k in opt.state}
    hist = nn.fit(net, opt, X, t, epochs=epochs, batch_size=bs, seed=rng)
    diff = max(float(np.max(np.abs(a - net.params[k])))
               for a, k in zip(clf.coefs_ + clf.intercepts_, ["W1", "W2", "b1", "b2"], strict=True))
    assert diff <= 1e-12
    np.testing.assert_allclose(clf.loss_curve_, hist.train_loss, rtol=1e-12)


@quiet_convergence
def test_warm_start_continues_from_current_weights(data):
    X, t = data
    clf = small(max_iter=2, warm_start=True).fit(X, t)
    W = clf.coefs_[0].copy()
    clf.fit(X, t)
    assert clf.n_iter_ == 4 and not np.array_equal(W, clf.coefs_[0])
    with pytest.raises(ValueError, match="classes not"):
        clf.fit(X, t + 5)


# ------------------------------------------------------------------------------------------- sklearn tooling
@quiet_convergence
def test_pipeline_gridsearch_clone(data):
    X, t = data
    pipe = make_pipeline(StandardScaler(), small(max_iter=20))
    assert pipe.fit(X, t).score(X, t) > 0.9
    grid = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-1], "mlpclassifier__solver": ["sgd", "adam"]},
                        cv=2).fit(X, t)
    assert grid.best_score_ > 0.8
    c = clone(grid.best_estimator_)
    assert c.get_params()["mlpclassifier__alpha"] == grid.best_params_["mlpclassifier__alpha"]
    assert not hasattr(c[-1], "coefs_")


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_cross_val_score(data, n_jobs):
    X, t = data
    clf = small(max_iter=15)
    # workers of n_jobs=2 warn in their own processes; the main process sees no warning to filter
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(clf, X, t, cv=3, n_jobs=n_jobs)
    assert scores.shape == (3,) and scores.min() > 0.8


@quiet_convergence
def test_pickle_round_trip_continues_training(data):
    X, t = data
    clf = small(max_iter=5).fit(X, t)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    clf.partial_fit(X, t)
    back.partial_fit(X, t)  # the optimizer state and the generator travelled too
    np.testing.assert_array_equal(back.coefs_[0], clf.coefs_[0])


@quiet_convergence
def test_model_fitted_on_cupy_unpickles_without_gpu(data, monkeypatch):
    """A model recorded as fitted on CuPy loads where CuPy is missing: host parameters, a warning, predictions."""
    X, t = data
    clf = small(max_iter=5).fit(X, t)
    expected = clf.predict_proba(X)
    # pretend it was trained on a GPU: the recorded backend is what __getstate__ stores
    numpy_be = clf._net.backend
    monkeypatch.setattr(clf._net, "backend", nn.Backend("cupy", numpy_be.xp, "<CUDA Device 0>"))
    blob = pickle.dumps(clf)
    assert b"cupy" in blob

    real_get_backend = nsk.get_backend

    def no_gpu(name=None):
        if name == "cupy":
            raise nn.BackendUnavailableError("backend 'cupy' needs the Python package 'cupy' (faked missing)")
        return real_get_backend("numpy" if name == "auto" else name)

    monkeypatch.setattr(nsk, "get_backend", no_gpu)
    with pytest.warns(UserWarning, match=r"fitted on backend 'cupy'.*loaded on 'numpy'"):
        back = pickle.loads(blob)
    assert back.backend_ == "numpy"
    np.testing.assert_allclose(back.predict_proba(X), expected, rtol=0, atol=1e-15)


# ------------------------------------------------------------------------------------------- array API
@pytest.mark.torch
@quiet_convergence
def test_torch_input_without_dispatch_gives_numpy(data):
    import torch

    X, t = data
    clf = small(max_iter=5).fit(torch.asarray(X), torch.asarray(t))
    out = clf.predict(torch.asarray(X))
    assert type(out) is np.ndarray and clf.backend_ == "numpy"


ARRAY_API_SCRIPT = textwrap.dedent(
    """
    import warnings
    import numpy as np
    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils.estimator_checks import (
        check_array_api_input, check_array_api_mixed_inputs, check_array_api_same_namespace)
    from sklearn.utils._array_api import yield_mixed_namespace_input_permutations
    import torch
    from unittest import SkipTest
    from nnarray.sklearn import MLPClassifier

    warnings.simplefilter("error")
    warnings.simplefilter("ignore", ConvergenceWarning)
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, backend="numpy")
    # scikit-learn's own array-API checks: same namespace/device for every input, float64 and float32
    for ns, dtype in [("numpy", None), ("array_api_strict", "float64"), ("torch", "float64"), ("torch", "float32")]:
        check_array_api_input("MLPClassifier", est, ns, device_name="cpu" if ns == "torch" else None,
                              dtype_name=dtype, check_values=ns == "numpy")
    ran = 0
    for other, X_ns, _ in yield_mixed_namespace_input_permutations():
        try:  # combinations whose library or device is missing here skip themselves
            check_array_api_mixed_inputs("MLPClassifier", est, X_ns, other)
            ran += 1
        except SkipTest:
            pass
    assert ran >= 1, ran
    check_array_api_same_namespace("MLPClassifier", est, "array_api_strict")

    # torch in -> torch out, trained on the tensors' device
    rng = np.random.default_rng(0)
    X = torch.asarray(rng.normal(size=(60, 4)))
    y = torch.asarray(rng.integers(0, 3, 60))
    with sklearn.config_context(array_api_dispatch=True):
        clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, y)
        P, yp = clf.predict_proba(X), clf.predict(X)
        assert isinstance(P, torch.Tensor) and P.dtype == torch.float64 and P.device == X.device, P
        assert isinstance(yp, torch.Tensor) and yp.dtype == y.dtype, yp
        assert isinstance(clf.score(X, y), float)
        assert clf.backend_ == "torch" and all(type(c) is np.ndarray for c in clf.coefs_)
    ref = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X.numpy(), y.numpy())
    np.testing.assert_allclose(P.numpy(), ref.predict_proba(X.numpy()), rtol=1e-10, atol=1e-12)
    print("ok")
    """
)


@pytest.mark.torch
def test_array_api_dispatch_in_a_subprocess():
    """scikit-learn's array-API checks need SCIPY_ARRAY_API=1 before SciPy is imported: a fresh process."""
    pytest.importorskip("array_api_strict")
    env = child_env(SCIPY_ARRAY_API="1")
    r = subprocess.run([sys.executable, "-c", ARRAY_API_SCRIPT], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("ok")
