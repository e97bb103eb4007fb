#!/usr/bin/env python
"""scikit-learn's MLPClassifier against nnarray's (nnarray.sklearn.MLPClassifier) on Fashion-MNIST.

Both estimators get the same settings: one hidden ReLU layer of ``--hidden`` units, the solver (``sgd``:
momentum 0.9 with Nesterov, ``adam``: β = (0.9, 0.999), ε = 1e-8), batch size, learning rate, L2 ``alpha``,
``--epochs`` epochs (the ``tol`` rule is switched off with ``n_iter_no_change > epochs`` so both run every
epoch), shuffling, float32 data (60 000 training images, 784 pixels in [0, 1]). They differ where the libraries
differ: initial weights (sklearn: Glorot uniform; nnarray: He normal), the random streams and the output layer
for the loss (same softmax + cross-entropy for 10 classes). Fit time is the wall time of ``fit`` (validation of
the input included); accuracy is on the 10 000 test images.

    python scripts/compare_sklearn.py                      # hidden 100, 10 epochs, sgd and adam
    python scripts/compare_sklearn.py --backend cupy       # nnarray on the GPU

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
import warnings


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--solvers", default="sgd,adam")
    p.add_argument("--lr-sgd", type=float, default=0.01)
    p.add_argument("--lr-adam", type=float, default=0.001)
    p.add_argument("--alpha", type=float, default=1e-4)
    p.add_argument("--backend", default="auto", help="nnarray's backend (auto, numpy, cupy, torch)")
    p.add_argument("--n-train", type=int, default=None, help="use the first N training images only")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier as SkMLP

    import nnarray as nn
    from nnarray.sklearn import MLPClassifier as NnMLP

    (X, t), (X_test, t_test) = nn.datasets.load_fashion_mnist()
    if args.n_train:
        X, t = X[: args.n_train], t[: args.n_train]
    print(f"Fashion-MNIST: {X.shape[0]} training, {X_test.shape[0]} test images, {X.dtype}; "
          f"hidden {args.hidden}, {args.epochs} epochs, batch {args.batch_size}, alpha {args.alpha}")

    rows = []
    for solver in args.solvers.split(","):
        lr = args.lr_sgd if solver == "sgd" else args.lr_adam
        common = dict(hidden_layer_sizes=(args.hidden,), solver=solver, alpha=args.alpha, batch_size=args.batch_size,
                      learning_rate_init=lr, max_iter=args.epochs, n_iter_no_change=args.epochs + 1, shuffle=True,
                      random_state=args.seed, momentum=0.9, nesterovs_momentum=True)
        for name, cls, extra in (("scikit-learn", SkMLP, {}), ("nnarray", NnMLP, {"backend": args.backend})):
            clf = cls(**common, **extra)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed number of epochs is the point
                start = time.perf_counter()
                clf.fit(X, t)
                seconds = time.perf_counter() - start
            acc = clf.score(X_test, t_test)
            where = getattr(clf, "backend_", "numpy")
            rows.append((solver, lr, name, where, clf.n_iter_, clf.loss_curve_[-1], acc, seconds))
            print(f"  {solver:5s} {name:13s} ({where}): {clf.n_iter_} epochs, loss {clf.loss_curve_[-1]:.4f}, "
                  f"test accuracy {acc:.4f}, fit {seconds:.1f} s", flush=True)

    print()
    print("| solver | lr | estimator | backend | epochs | final training loss | test accuracy | fit time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for solver, lr, name, where, n_iter, loss, acc, seconds in rows:
        print(f"| {solver} | {lr:g} | {name} | {where} | {n_iter} | {loss:.4f} | {acc:.4f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
