"""nnarray: neural-network classifiers trained by back-propagation and SGD (or Adam, AdamW, RMSprop, AdaGrad),
written once against the Python Array API standard, so the same code runs on NumPy (CPU) and CuPy (NVIDIA GPU).

>>> import nnarray as nn
>>> be = nn.get_backend("numpy")
>>> net = nn.MLP([784, 100, 10], backend=be, seed=0)
"""

from . import (
    callbacks,
    datasets,
    distributed,
    fast,  # noqa: F401 -- registers the backend-specific fast paths with nnarray.step
    functions,
    fused,  # noqa: F401 -- registers the optimizers' fused forms with nnarray.optim
    optim,
    schedules,
    step,
)
from .backend import Backend, BackendUnavailableError, cupy_available, get_backend, to_numpy
from .export import export_onnx
from .history import History
from .model import MLP
from .optim import SGD, AdaGrad, Adam, AdamW, Optimizer, RMSprop
from .saving import CheckpointError, load, load_checkpoint, load_history, save, save_checkpoint, save_history
from .train import FitOptions, StopTraining, TrainingDivergedError, evaluate, fit

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "AdaGrad",
    "Adam",
    "AdamW",
    "CheckpointError",
    "FitOptions",
    "History",
    "MLP",
    "Optimizer",
    "RMSprop",
    "SGD",
    "StopTraining",
    "TrainingDivergedError",
    "cupy_available",
    "callbacks",
    "datasets",
    "distributed",
    "evaluate",
    "export_onnx",
    "fit",
    "functions",
    "get_backend",
    "load",
    "load_checkpoint",
    "load_history",
    "optim",
    "save",
    "save_checkpoint",
    "save_history",
    "schedules",
    "step",
    "to_numpy",
]
