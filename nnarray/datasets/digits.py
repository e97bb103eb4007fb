"""scikit-learn's bundled 8×8 handwritten digits: the small, always-offline fallback dataset."""

from __future__ import annotations

import numpy as np

__all__ = ["load_digits"]


def load_digits(
    test_fraction: float = 0.2, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load scikit-learn's 1797 8×8 digit images, shuffled (seeded) and split train/test.

    Parameters
    ----------
    test_fraction : float
        Fraction of the samples put in the test split (rounded), in (0, 1).
    seed : int
        Seed of the shuffle; the default gives the same split every time.

    Returns
    -------
    (X_train, t_train), (X_test, t_test)
        ``X_train`` (1438, 64) float32 in [0, 1] (pixel / 16), ``t_train`` (1438,) int64 in 0..9,
        ``X_test`` (359, 64), ``t_test`` (359,) for the defaults.

    Raises
    ------
    ImportError
        scikit-learn is not installed.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as e:
        raise ImportError(
            "load_digits needs scikit-learn, which ships the 8×8 digits dataset: pip install scikit-learn"
        ) from e
    bunch = _sk_load_digits()
    X = np.asarray(bunch.data, dtype=np.float32) / np.float32(16)
    t = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(t))
    n_test = int(round(test_fraction * len(t)))
    test, train = order[:n_test], order[n_test:]
    return (X[train], t[train]), (X[test], t[test])
