"""What a run says: the line per epoch while it trains, and at the end the test of the final and the best model,
``model.npz``, the pictures and the result (text, or one JSON line)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from ..callbacks import Callback
from ..metrics import confusion_matrix
from ..saving import load, save
from ..words import plural
from .common import Terminated, say

__all__ = ["report", "EpochLine", "class_names", "FASHION_CLASSES"]

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


class EpochLine(Callback):
    """Prints the training step fit chose when training begins, then each finished epoch: losses, accuracies
    (``*``: a new best on validation), η, time and speed."""

    def __init__(self, run):
        self.run = run

    def on_train_begin(self, fit_run):
        say(self.run.args.quiet, f"step:     {fit_run.step.description}")

    def on_epoch_end(self, fit_run, rec):
        say(self.run.args.quiet, epoch_line(rec, self.run.args.epochs, self.run.best.saved))


def epoch_line(rec, epochs, improved):
    line = (f"epoch {rec['epoch']:3d}/{epochs}  "
            f"train loss {rec['train_loss']:.4f}  train acc {rec['train_accuracy']:.4f}  ")
    if rec["val_loss"] is not None:
        line += f"val loss {rec['val_loss']:.4f}  val acc {rec['val_accuracy']:.4f}{' *' if improved else '  '}  "
    return line + f"lr {rec['lr']:.3g}  {rec['seconds']:6.2f} s  {rec['samples'] / rec['seconds']:9.0f} samples/s"


def class_names(name, n_classes):
    return FASHION_CLASSES if name == "fashion-mnist" and n_classes == 10 else [str(i) for i in range(n_classes)]


def report(run, outcome):
    """Test the final and the best model, write model.npz and the pictures, print the result; the exit status."""
    args = run.args
    if outcome == "interrupted":
        return _interrupted(run)
    if not run.root:
        run.comm.barrier()  # rank 0 writes the outputs; they are complete when any rank exits
        return 0
    save(run.net, run.path("model.npz"))
    result = {"dataset": run.name, "network": run.net.layer_sizes, "epochs": run.done,
              "stopped_early": outcome == "stopped",
              "final_val_accuracy": run.history.val_accuracy[-1] if len(run.history) else None,
              "best_epoch": run.best_epoch or run.done, "best_val_accuracy": run.best_val if run.best_epoch else None,
              "final_test_accuracy": None, "best_test_accuracy": None,
              "seconds": round(sum(run.history.seconds), 3), "out": os.fspath(run.out)}
    extra, cm_best = {"result": result}, None
    if run.test is not None:
        cm_best = _test(run, result)
        extra.update(confusion_matrix=cm_best.tolist(),
                     confusion_matrix_of="best.npz" if run.best_epoch else "model.npz")
    run.logger.write(extra)
    if not args.no_plots:
        _plots(run, cm_best, result["best_epoch"])
    if run.comm is not None:
        run.comm.barrier()
    _print_result(args, result)
    target = result["best_test_accuracy"]
    if args.target_acc is not None and target is not None and target < args.target_acc:
        print(f"error: test accuracy {target:.4f} is below --target-acc {args.target_acc}", file=sys.stderr)
        return 1
    return 0


def _interrupted(run):
    """The message of an interrupted run (Ctrl-C or SIGTERM) and its exit status."""
    k = run.done + 1
    cont = f"nnarray train --resume {run.path('checkpoint.npz')} --epochs {run.args.epochs}"
    if run.done:
        print(f"interrupted during epoch {k}; the checkpoint holds epoch {run.done}; continue with: {cont}",
              file=sys.stderr)
    else:
        print(f"interrupted during epoch {k}; no epoch finished, so there is nothing to resume", file=sys.stderr)
    return 143 if isinstance(run.interrupt, Terminated) else 130


def _test(run, result):
    """Test accuracy of the final and the best model into ``result``; the best model's confusion matrix."""
    best_net = load(run.path("best.npz"), backend=run.net.backend) if run.best_epoch else run.net
    Xt, tt = run.test
    cm_final = confusion_matrix(run.net, Xt, tt)
    cm_best = confusion_matrix(best_net, Xt, tt)
    result["final_test_accuracy"] = float(np.trace(cm_final) / cm_final.sum())
    result["best_test_accuracy"] = float(np.trace(cm_best) / cm_best.sum())
    return cm_best


def _plots(run, cm_best, best_epoch):
    from ..plots import plot_confusion_matrix, plot_learning_curve  # noqa: PLC0415 -- matplotlib, checked before training

    title = f"{run.name}, {'-'.join(map(str, run.net.layer_sizes))}, {run.net.backend.name}"
    plot_learning_curve(run.history, run.path("learning_curve.png"), title=title)
    if cm_best is not None:
        plot_confusion_matrix(cm_best, run.path("confusion_matrix.png"), class_names(run.name, run.net.n_classes),
                              title=f"confusion matrix, {run.name} test set, epoch {best_epoch}")


def _print_result(args, result):
    if args.json:
        print(json.dumps(result))
        return
    say(args.quiet, _result_text(result))
    if args.quiet:
        fin, best, val = result["final_test_accuracy"], result["best_test_accuracy"], result["final_val_accuracy"]
        if fin is None:
            line = "no test set; " + ("no validation split" if val is None else f"validation accuracy {val:.4f}")
        elif result["best_val_accuracy"] is None:  # no validation split: the final model is the result
            line = f"test accuracy {fin:.4f}"
        else:
            line = f"test accuracy {fin:.4f} (final), {best:.4f} (best on validation, epoch {result['best_epoch']})"
        print(f"{line}; outputs in {result['out']}")


def _result_text(r):
    if r["final_test_accuracy"] is not None:
        s = f"done: test accuracy {r['final_test_accuracy']:.4f} (final model)"
        if r["best_val_accuracy"] is not None:
            s += (f", {r['best_test_accuracy']:.4f} "
                  f"(best.npz: epoch {r['best_epoch']}, val acc {r['best_val_accuracy']:.4f})")
    else:
        val = r["final_val_accuracy"]
        s = "done: no test set; " + ("no validation split" if val is None else f"validation accuracy {val:.4f}")
    early = " (stopped early)" if r["stopped_early"] else ""
    s += f" after {plural(r['epochs'], 'epoch')}{early} ({r['seconds']:.1f} s training)"
    return s + f"; outputs in {r['out']}"
