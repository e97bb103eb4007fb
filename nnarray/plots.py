"""Pictures of a training run (matplotlib, imported lazily; the library itself does not need it)."""

from __future__ import annotations

import io

import numpy as np

from ._files import atomic_write

__all__ = ["plot_learning_curve", "plot_confusion_matrix", "best_epoch", "LOG_LOSS_RATIO"]


def _pyplot():
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg", force=False)  # files only; never needs a screen
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError('plots need matplotlib: pip install matplotlib (or "nnarray[scripts]")') from exc
    return plt


def _save(fig, path):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write(path, lambda f: f.write(buf.getvalue()))


#: The loss axis turns logarithmic when the largest loss shown is this many times the smallest (a diverging run
#: or a long one from a high start): on a linear axis everything but the worst epochs would be a flat line.
LOG_LOSS_RATIO = 30.0


def best_epoch(history):
    """The epoch of the best validation accuracy (the first of ties), or None without validation."""
    h = history.to_dict() if hasattr(history, "to_dict") else history
    scored = [(v, -e) for e, v in zip(h["epoch"], h["val_accuracy"], strict=True) if v is not None]
    return -max(scored)[1] if scored else None


def plot_learning_curve(history, path, title=None, best=None):
    """Loss (left) and accuracy (right) per epoch, training and validation, to a PNG at ``path``.

    The best epoch (``best``, default: :func:`best_epoch`, the one ``best.npz`` holds) is marked on both panels;
    the loss axis is logarithmic when its range spans more than :data:`LOG_LOSS_RATIO`. Returns what was drawn:
    ``{"best_epoch": epoch or None, "log_loss_axis": bool}``.
    """
    plt = _pyplot()
    h = history.to_dict() if hasattr(history, "to_dict") else history
    ep = h["epoch"]
    best = best_epoch(h) if best is None else best
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((ax_l, "loss", "cross-entropy"), (ax_a, "accuracy", "accuracy")):
        ax.plot(ep, h[f"train_{key}"], "o-", label="train")
        if any(v is not None for v in h[f"val_{key}"]):
            ax.plot(ep, h[f"val_{key}"], "s-", label="validation")
        if best is not None:
            ax.axvline(best, color="0.4", linestyle=":", label=f"best (epoch {best})")
        ax.set(xlabel="epoch", ylabel=label, title=key)
    losses = [v for k in ("train_loss", "val_loss") for v in h[k] if v is not None and v > 0]
    log_axis = bool(losses) and max(losses) > LOG_LOSS_RATIO * min(losses)
    if log_axis:
        ax_l.set_yscale("log")
        ax_l.set_title("loss (log scale)")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    if title:
        fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)
    return {"best_epoch": best, "log_loss_axis": log_axis}


def plot_confusion_matrix(cm, path, class_names=None, title=None):
    """The (C, C) confusion matrix as a heat map with counts, rows = true class, columns = predicted."""
    plt = _pyplot()
    cm = np.asarray(cm)
    C = cm.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(C)]
    size = max(4.5, 0.55 * C + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(C), names, rotation=45, ha="right")
    ax.set_yticks(range(C), names)
    ax.set(xlabel="predicted class", ylabel="true class", title=title or "confusion matrix (test set)")
    if C <= 20:
        threshold = cm.max() / 2 if cm.size else 0
        for i in range(C):
            for j in range(C):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > threshold else "black")
    _save(fig, path)
    plt.close(fig)
