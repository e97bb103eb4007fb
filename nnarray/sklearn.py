"""A scikit-learn estimator around nnarray: :class:`MLPClassifier`, a drop-in for
``sklearn.neural_network.MLPClassifier`` that also trains on a GPU (``backend="cupy"``).

It follows scikit-learn's conventions (``get_params``/``set_params``, ``clone``, ``Pipeline``,
``GridSearchCV``, pickling, fitted attributes ending in ``_``, sklearn's input validation and errors) and
passes scikit-learn's estimator checks. Underneath it is :func:`nnarray.fit` — the same training step,
optimizers and epoch loop as the rest of nnarray; sklearn's stopping rules (``tol``/``n_iter_no_change``,
``early_stopping``) and learning-rate schedules are fit callbacks.

scikit-learn is an optional dependency: ``pip install "nnarray[sklearn]"``.

>>> import warnings
>>> from sklearn.datasets import load_iris
>>> from sklearn.exceptions import ConvergenceWarning
>>> from nnarray.sklearn import MLPClassifier
>>> X, y = load_iris(return_X_y=True)
>>> clf = MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=100, random_state=0)
>>> with warnings.catch_warnings():
...     warnings.simplefilter("ignore", ConvergenceWarning)  # 100 epochs, converged or not
...     _ = clf.fit(X, y)
>>> clf.predict(X[:3]), clf.coefs_[0].shape, clf.score(X, y) > 0.9
(array([0, 0, 0]), (4, 16), True)
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np  # host side: labels, the random generator, fitted attributes

try:
    import sklearn
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "nnarray.sklearn needs scikit-learn >= 1.6, which cannot be imported here "
        f"({exc}). Install it with: pip install \"nnarray[sklearn]\""
    ) from exc

import array_api_compat

from . import checks
from . import functions as F
from . import optim as _optim
from .backend import Array, Backend, BackendUnavailableError, get_backend, library_name, to_numpy
from .callbacks import Callback, DivergenceGuard, EarlyStopping
from .checks import LabelWarning
from .history import History
from .model import MLP
from .train import FitOptions
from .train import fit as _nn_fit

__all__ = ["MLPClassifier", "L2Penalty"]





def _array_api_dispatch() -> bool:
    return bool(sklearn.get_config().get("array_api_dispatch", False))


def _float_dtypes(X):
    """float64, float32 of the namespace scikit-learn's validation will use for ``X`` (NumPy without dispatch)."""
    if _array_api_dispatch() and _is_foreign_array(X):
        xp = array_api_compat.array_namespace(X)
        return (xp.float64, xp.float32)
    return (np.float64, np.float32)


def _is_foreign_array(x: Any) -> bool:
    """True for an array of an Array API library other than NumPy (torch, CuPy, array-api-strict, ...)."""
    return array_api_compat.is_array_api_obj(x) and not array_api_compat.is_numpy_array(x)


def _backend_of(x: Any) -> Backend:
    """The nnarray Backend that computes in ``x``'s namespace and on its device (array-API dispatch)."""
    xp = array_api_compat.array_namespace(x)
    dev = array_api_compat.device(x)
    if array_api_compat.is_torch_array(x):
        name = "torch"
    elif array_api_compat.is_cupy_array(x):
        name = "cupy"
    elif array_api_compat.is_array_api_strict_namespace(xp):
        name = "array_api_strict"
    else:
        name = library_name(xp)  # "jax" for jax.numpy, "dask" for array_api_compat.dask.array
    return Backend(name, xp, dev)


def _namespace_key(x):
    """(namespace name, device) identifying where ``x`` lives (for the fit/predict consistency check)."""
    if not _is_foreign_array(x):
        return ("numpy", "cpu")
    be = _backend_of(x)
    return (be.name, str(be.device))


class L2Penalty:
    """Optimizer gradient hook: scikit-learn's L2 penalty ``alpha`` on the weights (not the biases).

    scikit-learn minimises, per mini-batch of n samples, mean cross-entropy + α/(2n)·Σ‖W‖², so every weight
    gradient gets α·W/n added before the update (``_backprop``: ``coef_grads += alpha * coefs_``, then
    ``/= n_samples``). ``n`` is the batch's own length: the last batch of an epoch may be shorter, and the
    lengths of an epoch's batches follow from ``n_samples`` and ``batch_size`` (the step visits them in order).
    ``weights`` names the penalised parameters (the net's W⁽ˡ⁾ keys). :attr:`penalty_sum` accumulates
    Σ_batches Σ‖W‖² on the device, read once per epoch by :meth:`take_penalty` for ``loss_curve_``, which
    includes the penalty.
    """

    def __init__(self, alpha, n_samples, batch_size, weights):
        self.alpha, self.weights = float(alpha), tuple(weights)
        full, rest = divmod(n_samples, batch_size)
        self._sizes = [batch_size] * full + ([rest] if rest else [])
        self._i = 0
        self.penalty_sum = None

    def take_penalty(self):
        """Σ over the epoch's batches of Σ‖W‖² as a float (one synchronisation), and reset it."""
        s, self.penalty_sum = self.penalty_sum, None
        return 0.0 if s is None else float(s)

    def __call__(self, params, grads):
        n = self._sizes[self._i % len(self._sizes)]
        self._i += 1
        c = self.alpha / n  # a Python float: float32 parameters stay float32
        grads = dict(grads)
        for k in self.weights:
            if k in grads:
                W = params[k]
                xp = array_api_compat.array_namespace(W)
                sq = xp.sum(W * W)
                self.penalty_sum = sq if self.penalty_sum is None else self.penalty_sum + sq
                grads[k] = grads[k] + c * W
        return grads

    def __repr__(self):
        return f"L2Penalty(alpha={self.alpha!r}, weights={list(self.weights)!r})"


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """Multi-layer perceptron classifier (ReLU hidden layers, softmax output, cross-entropy) trained by
    :func:`nnarray.fit` on NumPy, CuPy (GPU), torch or any Array API backend.

    Parameters follow :class:`sklearn.neural_network.MLPClassifier` (same names, defaults and meaning)
    except where noted under *Differences from scikit-learn*.

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default=(100,)
        Units of each hidden layer.
    activation : {"relu"}, default="relu"
        Only ReLU hidden layers exist in nnarray; any other value raises ``ValueError`` in ``fit``.
    solver : {"adam", "sgd", "adamw", "rmsprop", "adagrad"}, default="adam"
        ``"sgd"``: :class:`nnarray.SGD` with ``momentum`` (Nesterov's with ``nesterovs_momentum``);
        ``"adam"``: :class:`nnarray.optim.Adam` with ``beta_1``, ``beta_2``, ``epsilon``; nnarray's other
        optimizers by their lower-case class names, with their own defaults besides ``learning_rate_init``.
        ``"lbfgs"`` is refused (no full-batch solver in nnarray).
    alpha : float, default=1e-4
        L2 penalty as scikit-learn defines it: α/(2n)·Σ‖W‖² per batch of n samples (weights, not biases),
        i.e. α·W/n added to each weight gradient; included in ``loss_curve_``.
    batch_size : int or "auto", default="auto"
        ``min(200, n_samples)`` for ``"auto"``; larger values are clipped to ``n_samples`` with a warning.
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        Schedule of the step size, as scikit-learn's (applied after each epoch, by a fit callback):
        ``"invscaling"``: η = η₀ / (t + 1)^power_t with t the samples seen so far; ``"adaptive"``: η is
        divided by 5 each time ``n_iter_no_change`` epochs bring no improvement of ``tol`` (training stops
        once η < 1e-6). As in scikit-learn the schedules apply to ``solver="sgd"`` only.
    learning_rate_init : float, default=1e-3
    power_t : float, default=0.5
    max_iter : int, default=200
        Epochs (``fit`` stops earlier by the ``tol`` rule).
    shuffle : bool, default=True
    random_state : int, RandomState, numpy Generator or None, default=None
        Seeds one ``numpy.random.Generator`` kept on the estimator: initial weights, epoch permutations
        and the early-stopping split are drawn from it in turn.
    tol : float, default=1e-4
    verbose : bool, default=False
        Print the loss (and validation score) after every epoch.
    warm_start : bool, default=False
        ``fit`` continues from the current weights (with a new optimizer, as scikit-learn).
    momentum : float, default=0.9
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified), stop when the validation accuracy
        has not improved by ``tol`` for ``n_iter_no_change`` epochs and keep the best weights.
    validation_fraction : float, default=0.1
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's hyperparameters.
    n_iter_no_change : int or inf, default=10
    backend : str, default="auto"
        nnarray backend for NumPy / array-like input: ``"auto"`` (CuPy when a CUDA device answers, else
        NumPy), ``"numpy"``, ``"cupy"``, ``"torch"``, ``"array_api_strict"``. With scikit-learn's
        ``array_api_dispatch=True`` and non-NumPy input (CuPy, torch, ...), training follows the input's
        namespace and device instead.
    dtype : {None, "float32", "float64"}, default=None
        Floating type of parameters and arithmetic; None keeps the input's (float32 stays float32, anything
        else becomes float64, as scikit-learn). ``"float32"`` is the fast choice on a GPU.

    Attributes
    ----------
    classes_ : ndarray (n_classes,)
        Sorted class labels (any type numpy can sort: integers, strings, ...).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` was a DataFrame with string column names.
    coefs_, intercepts_ : lists of host NumPy arrays
        Weights ``coefs_[i]`` (fan_in, fan_out) and biases ``intercepts_[i]`` (fan_out,). With the NumPy
        backend they are the live parameters; on other backends they are host copies taken at the end of
        every ``fit``/``partial_fit`` (changing them does not change that model).
    loss_curve_ : list of float
        Per-epoch training loss (mean cross-entropy over the epoch's batches + the L2 term).
    loss_, best_loss_ : float
    validation_scores_, best_validation_score_ : list / float or None
        Validation accuracies with ``early_stopping`` (else None).
    n_iter_ : int
        Epochs run; ``t_`` samples seen.
    n_layers_, n_outputs_, out_activation_ : int, int, "softmax"
    backend_ : str
        The nnarray backend the model lives on.

    Differences from scikit-learn
    -----------------------------
    * Initial weights: He normal N(0, 2/fan_in) and zero biases (nnarray's) instead of Glorot uniform.
    * The output layer is always a softmax over ``n_classes`` units (binary problems too: sklearn uses one
      logistic unit; the model class is the same). Multi-label targets and ``sample_weight`` are not
      supported.
    * Adam is PyTorch's form, W ← W − η/(1 − β₁ᵗ) · m / (√v/√(1 − β₂ᵗ) + ε); scikit-learn adds ε to √v before
      the correction (the two differ only where √v is about as small as ε). Nesterov momentum is PyTorch's
      form too, the same steps as scikit-learn's while the learning rate is constant.
    * ``predict_log_proba`` is computed as log-softmax (finite where ``log(predict_proba)`` would be −inf).
    * Inputs: without ``array_api_dispatch``, non-NumPy arrays (torch, CuPy) are copied to host NumPy
      (scikit-learn's validation needs them there) and outputs are NumPy; the model still trains on
      ``backend``. With dispatch, outputs are arrays of the input's namespace and device.
    * A run whose loss becomes NaN or inf raises :class:`nnarray.TrainingDivergedError` (the weights of the
      last good epoch are kept) instead of sklearn's ``ValueError`` about non-finite weights; as in
      scikit-learn, a large finite loss does not stop it (``DivergenceGuard(factor=None)``).
    """

    def __init__(
        self,
        hidden_layer_sizes: int | Sequence[int] = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: int | np.random.RandomState | None = None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        backend: str | Backend | Any = "auto",
        dtype: str | None = None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.dtype = dtype

    # ------------------------------------------------------------------ sklearn protocol
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        tags.input_tags.sparse = False
        tags.classifier_tags.multi_label = False
        return tags

    def __sklearn_is_fitted__(self):
        return getattr(self, "_net", None) is not None

    # ------------------------------------------------------------------ parameter checks
    def _check_params(self):
        """Errors naming the parameter, raised by fit (never by __init__/set_params, as sklearn requires).

        The numeric settings are declared in :data:`nnarray.checks.PARAMETERS` ``["MLPClassifier"]``."""
        if self.activation != "relu":
            raise ValueError(
                f"activation: nnarray's MLP has ReLU hidden layers only; got {self.activation!r} "
                "(use activation='relu', or sklearn.neural_network.MLPClassifier for other activations)"
            )
        if self.solver == "lbfgs":
            raise ValueError(
                "solver: 'lbfgs' is not supported by nnarray (mini-batch solvers only); use 'adam' or 'sgd'"
            )
        checks.check_option(self.solver, tuple(_optim.by_name()), "solver")
        sizes = self.hidden_layer_sizes
        sizes = [sizes] if isinstance(sizes, numbers.Integral) else list(sizes)
        if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1 for n in sizes):
            raise ValueError(f"hidden_layer_sizes: expected positive integers, got {self.hidden_layer_sizes!r}")
        constraints = checks.PARAMETERS["MLPClassifier"]
        checks.validate({k: getattr(self, k) for k in constraints}, constraints)
        if not (self.n_iter_no_change == np.inf):
            checks.POSITIVE_INT(self.n_iter_no_change, "n_iter_no_change")
        if self.batch_size != "auto":
            checks.POSITIVE_INT(self.batch_size, "batch_size")
        if self.dtype not in (None, "float32", "float64", np.float32, np.float64):
            raise ValueError(f"dtype: expected None, 'float32' or 'float64', got {self.dtype!r}")
        return [int(n) for n in sizes]

    # ------------------------------------------------------------------ fitting
    def fit(self, X: Array, y: Array) -> MLPClassifier:
        """Train on ``X`` (n_samples, n_features) and labels ``y`` (n_samples,) for up to ``max_iter`` epochs.

        Starts from new weights unless ``warm_start``. Returns ``self``.
        """
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X: Array, y: Array, classes: Array | None = None) -> MLPClassifier:
        """One epoch over (X, y), continuing the weights, the optimizer state and the random generator.

        ``classes`` (all labels that will ever occur) is required on the first call. Returns ``self``.
        """
        first = not self.__sklearn_is_fitted__()
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
        elif classes is not None and not np.array_equal(np.unique(to_numpy(classes)), self.classes_):
            raise ValueError(
                f"`classes={np.unique(to_numpy(classes))!r}` is not the same as on last call to "
                f"partial_fit, was: {self.classes_!r}"
            )
        if self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        return self._fit(X, y, incremental=True, classes=classes)

    def _fit(self, X, y, incremental, classes=None):
        """fit and partial_fit: check, (re)initialise, then :func:`nnarray.fit` with scikit-learn's rules as
        callbacks — the bookkeeping of :class:`_Record` and the ``tol``/``n_iter_no_change`` rule, an
        :class:`~nnarray.callbacks.EarlyStopping` configuration (:class:`_Stopping`)."""
        hidden = self._check_params()
        X, y, first = self._validated(X, y, incremental)
        if first:
            self._initialize(X, y, hidden, incremental, classes)
        else:
            self._check_classes(y, incremental)
        if not incremental or self._optimizer is None:
            self._optimizer = self._make_optimizer()
        t = np.searchsorted(self.classes_, y).astype(np.int64)  # labels -> 0..C-1 on the host
        X, t, val = self._split(X, t)
        n = X.shape[0]
        batch_size = self._batch_size(n)
        opt, l2 = self._optimizer, None
        if float(self.alpha) != 0.0:  # for this call only: the optimizer outlives it (partial_fit, pickling)
            weights = [f"W{l}" for l in range(1, self._net.n_layers + 1)]
            l2 = opt.add_hook(L2Penalty(self.alpha, n, batch_size, weights))
        record, stopping = _Record(self, l2, n), _Stopping(self)
        try:
            with warnings.catch_warnings():
                # classes_ come from y or from partial_fit's classes=: a batch may lack some of them by design
                warnings.simplefilter("ignore", LabelWarning)
                _nn_fit(self._net, opt, X, t, epochs=1 if incremental else int(self.max_iter),
                        batch_size=batch_size, reduction="mean", seed=self._rng, validation=val,
                        callbacks=[record, stopping, DivergenceGuard(factor=None)],  # as scikit-learn: NaN, inf only
                        options=FitOptions(shuffle=bool(self.shuffle), history=self._history))
        finally:
            if l2 is not None:
                opt.remove_hook(l2)
        stopping.keep(self)
        if not incremental and stopping.stopped_epoch is None and self.n_iter_ >= self.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the optimization "
                "hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )
        self._sync_attributes()
        return self

    def _validated(self, X, y, incremental):
        """X, y through scikit-learn's validation; ``first``: whether this call starts a new model."""
        if not _array_api_dispatch():
            # scikit-learn validates NumPy; torch/CuPy arrays are brought to the host (documented)
            X = to_numpy(X) if _is_foreign_array(X) else X
            y = to_numpy(y) if _is_foreign_array(y) else y
        first = (not self.__sklearn_is_fitted__()) or (not incremental and not self.warm_start)
        X, y = validate_data(self, X, y, dtype=_float_dtypes(X), reset=first)
        y = to_numpy(y)
        check_classification_targets(y)
        if y.ndim != 1:
            raise ValueError(f"y: multi-output / multi-label targets are not supported, got shape {y.shape}")
        return X, y, first

    def _initialize(self, X, y, hidden, incremental, classes):
        """A new model: classes, the generator, the network on its backend and the fitted attributes' start."""
        dispatch = _array_api_dispatch()
        self._rng = _generator(self.random_state)
        labels = np.unique(to_numpy(classes)) if (incremental and classes is not None) else np.unique(y)
        if labels.shape[0] < 2:  # nnarray refuses a single class (a one-output softmax learns nothing)
            raise ValueError(f"y: expected at least two classes, got one class ({labels[0]!r}): nothing to learn")
        self.classes_ = labels
        be = _backend_of(X) if dispatch and _is_foreign_array(X) else get_backend(self.backend)
        self._fit_namespace = _namespace_key(X) if dispatch else None
        self._net = MLP([X.shape[1], *hidden, len(labels)], backend=be, dtype=self._dtype_name(X), seed=self._rng)
        self._optimizer = None
        self._history = History()
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = [], -np.inf, None
        else:
            self.validation_scores_, self.best_validation_score_, self.best_loss_ = None, None, np.inf

    def _check_classes(self, y, incremental):
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            what = "as in the previous call to fit" if self.warm_start and not incremental else "in self.classes_"
            raise ValueError(f"`y` has classes not {what}: {unknown!r}; `self.classes_` has {self.classes_!r}.")
        if not incremental:  # warm start: sklearn restarts the count and keeps the curve
            self._no_improvement_count = 0

    def _split(self, X, t):
        """With ``early_stopping``: a stratified hold-out drawn from the estimator's generator."""
        if not self.early_stopping:
            return X, t, None
        idx_tr, idx_val = train_test_split(
            np.arange(X.shape[0]),
            test_size=self.validation_fraction,
            random_state=int(self._rng.integers(2**31 - 1)),
            stratify=t,
        )
        if idx_val.shape[0] < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' or the size of your dataset."
            )
        return _rows(X, idx_tr), t[idx_tr], (_rows(X, idx_val), t[idx_val])

    def _batch_size(self, n):
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size > n:
            warnings.warn(
                "Got `batch_size` less than 1 or larger than sample size. It is going to be clipped",
                stacklevel=4,
            )
        return min(int(self.batch_size), n)

    def _dtype_name(self, X):
        if self.dtype is not None:
            return np.dtype(self.dtype).name
        xp = array_api_compat.array_namespace(X)
        return "float32" if X.dtype == xp.float32 else "float64"

    def _make_optimizer(self):
        """The nnarray optimizer for ``solver`` (kept on the estimator, so partial_fit continues its state)."""
        lr = float(self.learning_rate_init)
        cls = _optim.by_name()[self.solver]
        if self.solver == "sgd":
            nesterov = bool(self.nesterovs_momentum) and self.momentum > 0
            return cls(lr=lr, momentum=float(self.momentum), nesterov=nesterov)
        if self.solver == "adam":
            return cls(lr=lr, betas=(float(self.beta_1), float(self.beta_2)), eps=float(self.epsilon))
        return cls(lr=lr)  # nnarray's other optimizers with their own defaults besides lr

    def _sync_attributes(self):
        """sklearn's fitted attributes from the network (host NumPy; the live arrays on the NumPy backend)."""
        net = self._net
        L = net.n_layers
        live = net.backend.name == "numpy"
        get = (lambda v: v) if live else (lambda v: np.asarray(to_numpy(v)))
        self.coefs_ = [get(net.params[f"W{l}"]) for l in range(1, L + 1)]
        self.intercepts_ = [get(net.params[f"b{l}"]) for l in range(1, L + 1)]
        self.n_layers_ = L + 1
        self.n_outputs_ = net.n_classes
        self.out_activation_ = "softmax"
        self.backend_ = net.backend.name

    # ------------------------------------------------------------------ prediction
    def _logits(self, X, method):
        """Output-layer values A (N, C) on the model's backend, and whether to answer in X's namespace."""
        check_is_fitted(self)
        dispatch = _array_api_dispatch()
        foreign = _is_foreign_array(X)
        if dispatch:
            self._check_same_namespace(X, method)
        elif foreign:
            X = to_numpy(X)
        X = validate_data(self, X, dtype=_float_dtypes(X), reset=False)
        net = self._net
        A, _ = net.forward(net.backend.asarray(X, dtype=net.dtype))
        return A, dispatch and foreign

    def _check_same_namespace(self, X, method):
        fitted = getattr(self, "_fit_namespace", None) or ("numpy", "cpu")
        got = _namespace_key(X)
        if fitted != got:
            raise ValueError(
                f"Inputs passed to {type(self).__name__}.{method}() must use the same namespace and the same "
                f"device as those passed to fit(). Fitted on {fitted[0]} ({fitted[1]}), got {got[0]} ({got[1]})."
            )

    def _out(self, a, keep):
        return a if keep else np.asarray(to_numpy(a))

    def predict_proba(self, X: Array) -> Array:
        """Class probabilities (n_samples, n_classes), columns in the order of ``classes_``."""
        A, keep = self._logits(X, "predict_proba")
        return self._out(F.softmax(self._net.xp, A), keep)

    def predict_log_proba(self, X: Array) -> Array:
        """Log of the class probabilities (n_samples, n_classes), computed as log-softmax."""
        A, keep = self._logits(X, "predict_log_proba")
        return self._out(F.log_softmax(self._net.xp, A), keep)

    def predict(self, X: Array) -> Array:
        """Predicted labels (n_samples,), elements of ``classes_``."""
        A, keep = self._logits(X, "predict")
        xp = self._net.xp
        idx = xp.argmax(A, axis=1)
        if keep and self.classes_.dtype.kind in "biuf":
            be = self._net.backend
            return xp.take(be.asarray(self.classes_), idx, axis=0)
        return self.classes_[np.asarray(to_numpy(idx))]

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        """Host arrays only: the parameters (``coefs_``/``intercepts_``), the optimizer's state_dict and the
        name of the backend trained on, so a model fitted on CuPy unpickles where there is no GPU."""
        state = dict(super().__getstate__())  # object.__getstate__ may return __dict__ itself
        net = state.pop("_net", None)
        state.pop("_best_params", None)
        if net is not None:
            state["_net_backend"] = (net.backend.name, str(net.backend.device))
            state["_net_dtype"] = net.dtype_name
            state["_net_layer_sizes"] = list(net.layer_sizes)
            state["coefs_"] = [np.array(to_numpy(v)) for v in self.coefs_]
            state["intercepts_"] = [np.array(to_numpy(v)) for v in self.intercepts_]
        opt = state.get("_optimizer")
        if opt is not None:
            state["_optimizer"] = ("state_dict", opt.state_dict())
        return state

    def __setstate__(self, state):
        recorded = state.pop("_net_backend", None)
        dtype = state.pop("_net_dtype", None)
        sizes = state.pop("_net_layer_sizes", None)
        super().__setstate__(state)
        if recorded is None:
            self._net = None
            return
        be = _restore_backend(*recorded)
        net = MLP(sizes, backend=be, dtype=dtype, seed=0)
        params = {}
        for l, (W, b) in enumerate(zip(self.coefs_, self.intercepts_, strict=True), start=1):
            params[f"W{l}"], params[f"b{l}"] = W, b
        net.load_state_dict(params)
        self._net = net
        opt = state.get("_optimizer")
        if isinstance(opt, tuple) and opt and opt[0] == "state_dict":
            self._optimizer = _optim.from_state_dict(opt[1], backend=be, dtype=net.dtype)
        if be.name != recorded[0] or (be.name != "numpy" and str(be.device) != recorded[1]):
            # predictions under array-API dispatch are compared with the namespace the model now lives in
            self._fit_namespace = None if be.name == "numpy" else (be.name, str(be.device))
        self._sync_attributes()


# ---------------------------------------------------------------------------------------------- callbacks
class _Record(Callback):
    """scikit-learn's bookkeeping after every epoch: ``loss_`` and ``loss_curve_`` (with the L2 term),
    ``n_iter_``, ``t_``, ``validation_scores_``, the verbose lines and the ``"invscaling"`` learning rate."""

    def __init__(self, est, l2, n):
        self.est, self.l2, self.n = est, l2, n

    def on_epoch_end(self, run, record):
        est = self.est
        loss = record["train_loss"]
        if self.l2 is not None:
            loss += 0.5 * est.alpha * self.l2.take_penalty() / self.n
        est.n_iter_ += 1
        est.t_ += self.n
        est.loss_ = loss
        est.loss_curve_.append(loss)
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
        if est.early_stopping:
            est.validation_scores_.append(record["val_accuracy"])
            if est.verbose:
                print(f"Validation score: {record['val_accuracy']:f}")
        if est.solver == "sgd" and est.learning_rate == "invscaling":
            est._optimizer.lr = float(est.learning_rate_init) / (est.t_ + 1) ** float(est.power_t)


class _Stopping(EarlyStopping):
    """scikit-learn's ``tol``/``n_iter_no_change`` as an :class:`~nnarray.callbacks.EarlyStopping`:
    ``rule="sklearn"``, ``patience = n_iter_no_change + 1``, ``min_delta = tol``, on the validation accuracy
    with ``early_stopping`` (keeping the best epoch's weights) else on the training loss with the L2 term
    (``loss_``). The count and the best carry over between calls (``warm_start``, ``partial_fit``); with
    ``learning_rate="adaptive"`` (sgd) an exhausted patience divides η by 5 instead, until η < 1e-6."""

    def __init__(self, est):
        monitor = "val_accuracy" if est.early_stopping else "train_loss"
        super().__init__(monitor, patience=est.n_iter_no_change + 1, min_delta=float(est.tol), rule="sklearn",
                         restore_best_weights=bool(est.early_stopping))
        self.est = est

    def on_train_begin(self, run):
        est = self.est
        best = est.best_validation_score_ if est.early_stopping else est.best_loss_
        self.best = None if best is None or not np.isfinite(best) else best
        self.wait, self.best_weights, self.stopped_epoch = est._no_improvement_count, None, None

    def current(self, run, record):
        return record["val_accuracy"] if self.est.early_stopping else self.est.loss_

    def on_patience_exhausted(self, run, record):
        est, opt = self.est, self.est._optimizer
        what = "Validation score" if est.early_stopping else "Training loss"
        msg = f"{what} did not improve more than tol={est.tol:f} for {est.n_iter_no_change} consecutive epochs."
        if est.solver == "sgd" and est.learning_rate == "adaptive" and opt.lr > 1e-6:
            opt.lr = opt.lr / 5.0
            self.wait = 0
            if est.verbose:
                print(f"{msg} Setting learning rate to {opt.lr:f}")
            return
        if est.verbose:
            print(f"{msg} Stopping.")
        super().on_patience_exhausted(run, record)

    def keep(self, est):
        """The count and the best, kept on the estimator for the next call."""
        est._no_improvement_count = self.wait
        if est.early_stopping:
            est.best_validation_score_ = -np.inf if self.best is None else self.best
        else:
            est.best_loss_ = np.inf if self.best is None else self.best


# ---------------------------------------------------------------------------------------------- helpers
def _restore_backend(name, device):
    """The backend a model was fitted on, or ``"auto"``'s choice (with a warning) when it is missing here."""
    try:
        if name == "torch":
            import torch  # noqa: PLC0415

            dev = torch.device(device)
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise BackendUnavailableError("torch has no CUDA device here")
            return Backend("torch", get_backend("torch").xp, dev)
        return get_backend(name)
    except (BackendUnavailableError, ValueError, ImportError) as exc:
        fallback = get_backend("auto")
        warnings.warn(
            f"MLPClassifier was fitted on backend {name!r} ({device}), which is not available here ({exc}); "
            f"the model was loaded on {fallback.name!r} instead.",
            UserWarning,
            stacklevel=3,
        )
        return fallback


def _generator(random_state: Any) -> np.random.Generator:
    """One numpy Generator from sklearn's ``random_state`` (None, int, RandomState or Generator)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**31 - 1))
    if random_state is None or isinstance(random_state, numbers.Integral):
        return np.random.default_rng(None if random_state is None else int(random_state))
    raise ValueError(f"random_state: expected None, an int, a RandomState or a Generator, got {random_state!r}")


def _rows(X, idx):
    """Rows ``idx`` (host int array) of X, in X's own namespace and on its device."""
    if not _is_foreign_array(X):
        return X[idx]
    be = _backend_of(X)
    return be.xp.take(X, be.asarray(idx, dtype=be.index_dtype), axis=0)

