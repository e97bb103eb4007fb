"""``nnarray export RUN [--out FILE]``: a trained model as an ONNX file (:func:`nnarray.export.export_onnx`)."""

from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from ..saving import CheckpointError, load

__all__ = ["build_export_parser", "export_main"]


def build_export_parser():
    p = argparse.ArgumentParser(prog="nnarray export", description="Write a trained model as an ONNX file "
                                "(input X (N, n_in), output Y (N, C) class probabilities; needs nnarray[onnx]).")
    p.add_argument("run", help="a run's folder (its best.npz, else model.npz, else checkpoint.npz) or a model or "
                               "checkpoint file")
    p.add_argument("--out", default=None, help="the ONNX file to write (default: beside the model, ending .onnx)")
    p.add_argument("--version", action="version", version=f"nnarray {__version__}")
    return p


def _model_file(path):
    """The model a run's folder holds (best.npz, else model.npz, else checkpoint.npz), or ``path`` itself."""
    if not os.path.isdir(path):
        return path
    for name in ("best.npz", "model.npz"):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    return os.path.join(path, "checkpoint.npz")


def export_main(argv=None):
    from ..export import export_onnx  # noqa: PLC0415 -- ndonnx and onnx only when exporting

    args = build_export_parser().parse_args(argv)
    path = _model_file(args.run)
    out = args.out or os.path.splitext(path)[0] + ".onnx"
    try:
        net = load(path, backend="numpy")
        export_onnx(net, out)
    except (CheckpointError, ImportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {'-'.join(map(str, net.layer_sizes))} {net.dtype_name}, "
          f"input X (N, {net.n_in}), output Y (N, {net.n_classes})")
    return 0
