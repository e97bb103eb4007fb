"""nnarray.datasets.digits: scikit-learn's 8×8 digits, the offline fallback; what importing nnarray.datasets loads."""

import os
import sys

import numpy as np
import pytest

from nnarray.datasets import (
    load_digits,
)

# ---------------------------------------------------------------------------------------------
# scikit-learn digits


def test_load_digits():
    pytest.importorskip("sklearn")
    (X, t), (Xt, tt) = load_digits()
    assert X.shape == (1438, 64) and Xt.shape == (359, 64)
    assert X.dtype == np.float32 and t.dtype == np.int64 and tt.dtype == np.int64
    assert X.min() >= 0.0 and X.max() == 1.0 and Xt.max() <= 1.0
    assert set(np.unique(t)) == set(range(10))
    (X2, t2), _ = load_digits()
    np.testing.assert_array_equal(t, t2)  # the seeded split is reproducible
    np.testing.assert_array_equal(X, X2)


def test_load_digits_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        load_digits()


def test_only_numpy_and_stdlib_at_import():
    # scikit-learn is imported lazily by load_digits, not by importing the package.
    import subprocess

    code = (
        "import sys; import nnarray.datasets; "
        "sys.exit(1 if any(m == 'sklearn' or m.startswith('sklearn.') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ}).returncode == 0
