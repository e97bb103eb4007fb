"""Pictures of a training run (matplotlib, imported lazily; the library itself does not need it)."""

from __future__ import annotations

import io

import numpy as np

from ._files import atomic_write

__all__ = ["plot_learning_curve", "plot_confusion_matrix"]


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


def plot_learning_curve(history, path, title=None):
    """Loss (left) and accuracy (right) per epoch, training and validation, to a PNG at ``path``."""
    plt = _pyplot()
    h = history.to_dict() if hasattr(history, "to_dict") else history
    ep = h["epoch"]
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_l.plot(ep, h["train_loss"], "o-", label="train")
    if any(v is not None for v in h["val_loss"]):
        ax_l.plot(ep, h["val_loss"], "s-", label="validation")
    ax_l.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_a.plot(ep, h["train_accuracy"], "o-", label="train")
    if any(v is not None for v in h["val_accuracy"]):
        ax_a.plot(ep, h["val_accuracy"], "s-", label="validation")
    ax_a.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    if title:
        fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)


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
