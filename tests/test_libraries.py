"""Any Array API library: the open selector, read-back to the host, index dtypes, and every optimizer on
every library of the ``backend`` fixture (JAX's immutable arrays included) equal to NumPy."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nnarray as nn

RTOL = 1e-10


# ------------------------------------------------------------------------------------------ the selector
@pytest.mark.parametrize("name", ["jax", "dask", "ndonnx"])
def test_new_libraries_by_name(name):
    be = nn.get_backend(name)
    assert be.name == name
    x = be.asarray(np.arange(3.0), dtype=be.dtype("float32"))
    np.testing.assert_array_equal(nn.to_numpy(x), [0.0, 1.0, 2.0])
    assert nn.get_backend(x).name == name  # an array of the library: its own backend


def test_any_namespace_or_array_selects_its_library():
    import array_api_strict
    import jax.numpy as jnp

    assert nn.get_backend(np) == nn.get_backend("numpy")  # NumPy itself is wrapped by array-api-compat
    assert nn.get_backend(np).xp is nn.get_backend("numpy").xp
    assert nn.get_backend(array_api_strict).name == "array_api_strict"
    assert nn.get_backend(jnp).name == "jax"
    be = nn.get_backend(jnp.ones(2))
    assert be.name == "jax" and be.xp is jnp
    assert "jax" in be.describe()


def test_device_argument():
    import array_api_strict as xps

    be = nn.get_backend("array_api_strict", device=xps.Device("device1"))
    net = nn.MLP([3, 4, 2], backend=be, seed=0)
    assert net.params["W1"].device == xps.Device("device1")
    assert nn.get_backend(be, device=xps.Device("CPU_DEVICE")).device == xps.Device("CPU_DEVICE")


def test_own_arrays_are_not_copied_through_the_host():
    """An array of the backend's own library is recognised as its own (no round trip through NumPy)."""
    import jax.numpy as jnp

    be = nn.get_backend("jax")
    x = jnp.arange(4.0, dtype=jnp.float32)
    assert be.asarray(x) is x


def test_scikit_learn_names_a_jax_model_jax():
    import jax.numpy as jnp

    from nnarray.sklearn import _backend_of

    assert _backend_of(jnp.ones((2, 2))).name == "jax"


def test_cli_accepts_the_new_names():
    from nnarray.backend import BACKEND_NAMES

    assert {"jax", "dask", "ndonnx"} <= set(BACKEND_NAMES)


# ------------------------------------------------------------------------------------------ read-back
def test_read_back_routes():
    import array_api_strict as xps
    import dask.array as da
    import jax.numpy as jnp
    import ndonnx as ndx

    # array-api-strict goes through the standard's DLPack; the others through the routes of nnarray/backend.py
    for x in (xps.arange(3.0), jnp.arange(3.0), da.arange(3.0, chunks=2), ndx.asarray(np.arange(3.0))):
        out = nn.to_numpy(x)
        assert isinstance(out, np.ndarray) and out.dtype.kind == "f"
        np.testing.assert_array_equal(out, [0.0, 1.0, 2.0])


def test_read_back_refuses_what_has_no_value_or_no_route():
    import ndonnx as ndx

    with pytest.raises(TypeError, match=r"to_numpy: this ndonnx array has no value to read back"):
        nn.to_numpy(ndx.argument(shape=("N", 3), dtype=ndx.float32))

    class Opaque:
        pass

    with pytest.raises(TypeError, match=r"to_numpy: no route from .* to host NumPy"):
        nn.to_numpy(Opaque())


def test_save_never_writes_pickled_objects(tmp_path, monkeypatch):
    net = nn.MLP([3, 4, 2], backend="numpy", seed=0)
    monkeypatch.setattr(net, "state_dict", lambda: {"W1": np.array(object(), dtype=object)})
    with pytest.raises(TypeError, match=r"save: 'W1' is not a numeric host array .*dtype object"):
        nn.save(net, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_a_model_on_ndonnx_saves_and_loads(tmp_path):
    net = nn.MLP([3, 4, 2], backend="ndonnx", dtype="float64", seed=0)
    nn.save(net, tmp_path / "m.npz")
    back = nn.load(tmp_path / "m.npz", backend="numpy")
    for k in net.params:
        np.testing.assert_array_equal(back.params[k], nn.to_numpy(net.params[k]))


# ------------------------------------------------------------------------------------------ JAX's defaults
def test_jax_without_64_bit_mode_trains_float32_and_refuses_float64():
    """In a fresh process (JAX's 64-bit mode off, warnings as errors): int32 indices, float32 training,
    and float64 refused with what to do."""
    code = textwrap.dedent(
        """
        import warnings; warnings.simplefilter("error")
        import numpy as np, jax, nnarray as nn
        assert not jax.config.jax_enable_x64
        be = nn.get_backend("jax")
        assert str(be.index_dtype) == "int32", be.index_dtype
        rng = np.random.default_rng(0)
        X, t = rng.normal(size=(60, 5)), rng.integers(0, 3, size=60)
        net = nn.MLP([5, 8, 3], backend=be, seed=0)
        hist = nn.fit(net, nn.SGD(0.1, momentum=0.9), X, t, epochs=2, batch_size=20, validation=(X, t))
        print(nn.evaluate(net, X, t)[1], net.accuracy(X, t), hist.train_loss[-1])
        try:
            nn.MLP([5, 3], backend="jax", dtype="float64")
        except TypeError as exc:
            print("REFUSED", exc)
        """
    )
    env = {**os.environ, "JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "REFUSED dtype: backend 'jax' offers no float64" in out.stdout
    assert "jax_enable_x64" in out.stdout


# ------------------------------------------------------------------------------------------ strict flags
def test_strict_without_boolean_indexing_or_data_dependent_shapes(blobs):
    import array_api_strict as xps

    X, t = blobs(n=200, n_in=12, n_classes=4, seed=1)
    ref = nn.MLP([12, 8, 4], backend="numpy", dtype="float64", seed=0)
    ref_hist = nn.fit(ref, nn.Adam(0.01), X, t, epochs=2, batch_size=50, validation=(X, t))
    with xps.ArrayAPIStrictFlags(boolean_indexing=False, data_dependent_shapes=False):
        net = nn.MLP([12, 8, 4], backend="array_api_strict", dtype="float64", seed=0)
        hist = nn.fit(net, nn.Adam(0.01), X, t, epochs=2, batch_size=50, validation=(X, t))
        loss, acc = nn.evaluate(net, X, t)
        probs = nn.to_numpy(net.predict(X))
    np.testing.assert_allclose(hist.train_loss, ref_hist.train_loss, rtol=RTOL)
    np.testing.assert_allclose(probs, nn.to_numpy(ref.predict(X)), rtol=RTOL)
    assert acc == ref_hist.val_accuracy[-1]


# ------------------------------------------------------------------------------------------ every optimizer
OPTIMIZERS = [
    pytest.param(lambda: nn.SGD(0.1), 0.0, id="sgd"),
    pytest.param(lambda: nn.SGD(0.1, momentum=0.9), 0.0, id="momentum"),
    pytest.param(lambda: nn.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-3), 0.0, id="nesterov-wd"),
    pytest.param(lambda: nn.SGD(0.1, momentum=0.9), 0.3, id="momentum-dropout"),
    pytest.param(lambda: nn.Adam(0.01, weight_decay=1e-3), 0.0, id="adam"),
    pytest.param(lambda: nn.AdamW(0.01), 0.2, id="adamw-dropout"),
    pytest.param(lambda: nn.RMSprop(0.01, momentum=0.5), 0.0, id="rmsprop"),
    pytest.param(lambda: nn.AdaGrad(0.1, lr_decay=0.01), 0.0, id="adagrad"),
]


def _train(backend, make_opt, dropout, X, t, dtype="float64"):
    net = nn.MLP([12, 16, 4], backend=backend, dtype=dtype, seed=3, dropout=dropout)
    hist = nn.fit(net, make_opt(), X, t, epochs=2, batch_size=25, seed=4,
                  schedule=nn.schedules.Exponential(0.1, 0.5) if dropout == 0.0 else None)  # fmt: skip
    return net, hist


@pytest.mark.parametrize("make_opt,dropout", OPTIMIZERS)
def test_every_optimizer_matches_numpy_after_two_epochs(other_backend, make_opt, dropout, blobs):
    """Float64, 2 epochs of 8 steps (a schedule or dropout): parameters and losses as on NumPy to 1e-10."""
    X, t = blobs(n=200, n_in=12, n_classes=4, seed=5)
    ref_net, ref_hist = _train("numpy", make_opt, dropout, X, t)
    net, hist = _train(other_backend, make_opt, dropout, X, t)
    np.testing.assert_allclose(hist.train_loss, ref_hist.train_loss, rtol=RTOL)
    for k, v in ref_net.params.items():
        ref = nn.to_numpy(v)
        np.testing.assert_allclose(nn.to_numpy(net.params[k]), ref, rtol=RTOL, atol=RTOL * np.max(np.abs(ref)))
