"""Bad input gets a specific error before any work starts; the message names argument, expectation and value."""

import numpy as np
import pytest

import nnarray as nn


@pytest.fixture
def net():
    return nn.MLP([4, 5, 3], backend="numpy", dtype="float64", seed=0)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.random((10, 4)), rng.integers(0, 3, size=10)


def _untouched(net, before):
    return all(np.array_equal(nn.to_numpy(net.params[k]), before[k]) for k in before)


def fit_raises(net, exc, match, *args, **kw):
    before = {k: nn.to_numpy(v).copy() for k, v in net.params.items()}
    with pytest.raises(exc, match=match):
        nn.fit(net, nn.SGD(0.1), *args, **kw)
    assert _untouched(net, before), "no work may start before the input is checked"


def test_X_not_2d(net, data):
    X, t = data
    fit_raises(net, ValueError, r"X: expected a 2-D array of shape \(N, 4\), got shape \(40,\)", X.reshape(-1), t)


def test_X_wrong_width(net, data):
    X, t = data
    fit_raises(net, ValueError, r"X: expected 4 columns \(the network's input width\), got shape \(10, 3\)",
               X[:, :3], t)


def test_X_not_floating(net, data):
    X, t = data
    fit_raises(net, TypeError, r"X: expected a floating-point array, got dtype uint8 .*X / 255",
               (X * 255).astype(np.uint8), t)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_X_not_finite(net, data, bad):
    X, t = data
    X = X.copy()
    X[3, 1] = bad
    fit_raises(net, ValueError, r"X: expected finite values, got 1 NaN or inf entry", X, t)


def test_t_not_1d(net, data):
    X, t = data
    fit_raises(net, ValueError, r"t: expected a 1-D array of class labels, got shape \(10, 1\)", X, t[:, None])


def test_t_not_integer(net, data):
    X, t = data
    fit_raises(net, TypeError, r"t: expected integer class labels, got dtype float64", X, t.astype(np.float64))


@pytest.mark.parametrize("bad,shown", [(3, "from 0 to 3"), (-1, "from -1 to")])
def test_labels_out_of_range(net, data, bad, shown):
    X, t = data
    t = t.copy()
    t[0] = bad
    fit_raises(net, ValueError, rf"t: expected labels in 0\.\.2 \(the network has 3 outputs\), got labels {shown}",
               X, t)


def test_lengths_differ(net, data):
    X, t = data
    fit_raises(net, ValueError, r"X, t: expected the same number of samples, got 10 rows in X and 9 labels in t",
               X, t[:9])


@pytest.mark.parametrize("bs", [0, -5, 2.5])
def test_batch_size_below_one(net, data, bs):
    fit_raises(net, ValueError, rf"batch_size: expected a positive integer, got {bs}", *data, batch_size=bs)


def test_epochs_below_one(net, data):
    fit_raises(net, ValueError, r"epochs: expected a positive integer, got 0", *data, epochs=0)


def test_unknown_reduction(net, data):
    fit_raises(net, ValueError, r"reduction: expected 'mean' or 'sum', got 'avg'", *data, reduction="avg")


def test_validation_checked_before_training(net, data):
    X, t = data
    fit_raises(net, ValueError, r"validation X: expected 4 columns", X, t, validation=(X[:, :2], t))


def test_unknown_backend():
    with pytest.raises(
        ValueError,
        match=r"backend: unknown backend 'tensorflow' \(from argument\); expected one of numpy, cupy, .*jax, dask, "
        r"ndonnx, auto, or an Array API namespace \(get_backend\(xp\)\)",
    ):
        nn.get_backend("tensorflow")


def test_neither_name_nor_namespace_nor_array():
    with pytest.raises(TypeError,
                       match=r"backend: expected a backend name .*an Array API namespace, an array or a Backend, "
                             r"got dict"):
        nn.get_backend({"xp": None})


def test_unknown_backend_from_environment(monkeypatch):
    monkeypatch.setenv("NNARRAY_BACKEND", "tensorflow")
    with pytest.raises(ValueError, match=r"unknown backend 'tensorflow' \(from \$NNARRAY_BACKEND\)"):
        nn.MLP([2, 2])


@pytest.mark.skipif(nn.cupy_available(), reason="CuPy works here; this test is about machines without it")
def test_cupy_unavailable_says_how_to_install():
    with pytest.raises(nn.BackendUnavailableError,
                       match=r"cupy.*(pip install \"nnarray\[cuda12\]\"|nvidia-smi|no CUDA device)"):
        nn.get_backend("cupy")


def test_bad_layer_sizes_and_dtype():
    with pytest.raises(ValueError, match=r"layer_sizes: expected a list of at least two positive integers"):
        nn.MLP([784])
    with pytest.raises(ValueError, match=r"layer_sizes"):
        nn.MLP([784, 0, 10])
    with pytest.raises(TypeError, match=r"dtype: expected 'float32' or 'float64', got 'int32'"):
        nn.MLP([4, 3], dtype="int32")


@pytest.mark.parametrize("lr", [0, -0.1, float("nan"), float("inf")])
def test_bad_learning_rate(lr):
    with pytest.raises(ValueError, match=r"lr: expected a positive finite learning rate"):
        nn.SGD(lr=lr)


def test_predict_checks_its_input_too(net):
    with pytest.raises(ValueError, match=r"X: expected 4 columns"):
        net.predict(np.zeros((2, 5)))


def test_divergence_stops_with_advice_and_keeps_last_good_epoch(data):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 4)) * 50
    t = rng.integers(0, 3, size=200)
    net = nn.MLP([4, 16, 3], backend="numpy", dtype="float32", seed=0)
    opt = nn.SGD(lr=1e3)
    # One calm epoch first, at a reasonable rate; remember where it ended.
    nn.fit(net, nn.SGD(1e-4), X, t, epochs=1, batch_size=20)
    good = {k: nn.to_numpy(v).copy() for k, v in net.params.items()}
    hist = nn.History()
    hist.append(epoch=1)
    with pytest.raises(nn.TrainingDivergedError,
                       match=r"diverged in epoch 2: the training loss became (nan|inf).*end of epoch 1"
                             r".*smaller learning rate than lr=1000"):
        nn.fit(net, opt, X, t, epochs=3, batch_size=20, options=nn.FitOptions(history=hist))
    assert _untouched(net, good)
    assert all(np.all(np.isfinite(v)) for v in good.values())


def test_huge_but_finite_values_are_accepted(net):
    """The quick finiteness check (a sum) may overflow; that alone must not reject the data."""
    from nnarray.checks import check_Xt

    X = np.full((10, 4), 1e308)
    t = np.zeros(10, dtype=np.int64)
    with np.errstate(over="ignore"):
        Xc, tc = check_Xt(X, t, 4, 3)
        assert Xc is X and tc is t
        assert net.predict(X).shape == (10, 3)


def test_layer_sizes_as_a_single_number():
    with pytest.raises(ValueError,
                       match=r"layer_sizes: expected a list of at least two positive integers "
                             r"such as \[784, 100, 10\], got 20"):
        nn.MLP(20)


@pytest.mark.parametrize("seed", [1.5, -1, "0", True])
def test_bad_seed_names_the_argument(seed):
    with pytest.raises(ValueError, match=r"seed: expected an integer ≥ 0, a numpy.random.Generator or None, got"):
        nn.MLP([4, 3], seed=seed)


def test_seed_may_be_a_generator():
    a = nn.MLP([4, 3], backend="numpy", seed=np.random.default_rng(7))
    b = nn.MLP([4, 3], backend="numpy", seed=7)
    assert np.array_equal(nn.to_numpy(a.params["W1"]), nn.to_numpy(b.params["W1"]))


@pytest.mark.parametrize("lr", ["0.1", None, True])
def test_learning_rate_must_be_a_number(lr):
    """Text is refused as epochs="5" is: float("0.1") would hide a configuration mistake."""
    with pytest.raises(TypeError, match=r"lr: expected a number, got"):
        nn.SGD(lr=lr)


def test_float_labels_get_a_hint(net, data):
    X, t = data
    fit_raises(net, TypeError, r"t: expected integer class labels, got dtype float64 \(if they are whole numbers, "
               r"convert them with t.astype\(int\)\)", X, t.astype(np.float64))


# ------------------------------------------------------------------------------------------- words
@pytest.mark.parametrize("make,name",
                         [(lambda: nn.SGD(0.1, momentum=0.9), "velocity"), (lambda: nn.Adam(1e-3), "exp_avg")])
def test_an_optimizer_with_another_networks_state_is_refused(data, make, name):
    """Reused on a network of another shape, an optimizer's state is named with the key, before any work."""
    X, t = data
    opt = make()
    nn.fit(nn.MLP([4, 6, 3], backend="numpy", seed=0), opt, X, t, epochs=1)
    net = nn.MLP([4, 5, 3], backend="numpy", seed=0)
    before = {k: nn.to_numpy(v).copy() for k, v in net.params.items()}
    with pytest.raises(ValueError,
                       match=rf"^opt: its state '{name}'\['W1'\] has shape \(4, 6\), but the network's parameter "
                                         r"'W1' has shape \(4, 5\); .*make a new optimizer for this network"):
        nn.fit(net, opt, X, t, epochs=1)
    assert _untouched(net, before)


def test_an_optimizer_state_key_the_network_lacks_is_refused(data):
    X, t = data
    opt = nn.SGD(0.1, momentum=0.9)
    nn.fit(nn.MLP([4, 6, 6, 3], backend="numpy", seed=0), opt, X, t, epochs=1)
    with pytest.raises(ValueError,
                       match=r"^opt: its state 'velocity' holds key 'W3', but the network has no parameter 'W3'"):
        nn.fit(nn.MLP([4, 6, 3], backend="numpy", seed=0), opt, X, t, epochs=1)


def test_load_blames_a_wrong_backend_not_the_file(tmp_path, net):
    nn.save(net, tmp_path / "m.npz")
    with pytest.raises(ValueError,
                       match=r"^backend: unknown backend 'gpu' \(from argument\); expected one of numpy, cupy"):
        nn.load(tmp_path / "m.npz", backend="gpu")
    with pytest.raises(ValueError, match=r"^backend: unknown backend 'gpu'"):
        nn.load(tmp_path / "missing.npz", backend="gpu")  # the argument is checked first, before the file
    with pytest.raises(ValueError, match=r"^backend: unknown backend 'gpu'"):
        nn.load_checkpoint(tmp_path / "m.npz", backend="gpu")


def test_load_reads_a_model_and_a_checkpoint_and_names_other_formats(tmp_path, net, data):
    opt = nn.SGD(0.1)
    hist = nn.fit(net, opt, *data, epochs=1)
    nn.save_checkpoint(tmp_path / "ck.npz", net, opt, np.random.default_rng(0), hist)
    assert nn.load(tmp_path / "ck.npz").layer_sizes == [4, 5, 3]
    nn.save(net, tmp_path / "m.npz")
    with pytest.raises(nn.CheckpointError,
                       match=r"m\.npz: expected a 'nnarray-checkpoint' file, got format 'nnarray-model'"):
        nn.load_checkpoint(tmp_path / "m.npz")


def _violating(constraint):
    """A value each constraint of nnarray.checks refuses (below its lower end, or above [0, 1))."""
    from nnarray import checks

    if constraint is checks.BOOL:
        return 1
    if isinstance(constraint, checks.Options):
        return "none of them"
    return constraint.low - 1 if constraint.low is not None and constraint.low > -1 else 2.0


def _declared():
    from nnarray import checks, schedules

    for owner, table in checks.PARAMETERS.items():
        cls = getattr(nn.optim, owner, None) or getattr(schedules, owner, None)
        if cls is not None:
            for name, constraint in table.items():
                yield pytest.param(cls, name, constraint, id=f"{owner}.{name}")


@pytest.mark.parametrize("cls, name, constraint", list(_declared()))
def test_every_declared_setting_is_refused_in_the_declared_words(cls, name, constraint):
    """checks.PARAMETERS is the rule: each class refuses what it declares, with its words and the value."""
    bad = _violating(constraint)
    with pytest.raises((ValueError, TypeError)) as declared:
        constraint(bad, name)
    required = {"Step": {"step_size": 2}, "Cosine": {"epochs": 2}}.get(cls.__name__, {})
    args = ({"schedule": nn.schedules.Constant(0.1)} if cls.__name__ == "Warmup" else {"lr": 0.1})
    with pytest.raises(type(declared.value)) as got:
        cls(**{**args, **required, name: bad})
    assert str(got.value) == str(declared.value)
