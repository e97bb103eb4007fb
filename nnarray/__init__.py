"""nnarray: neural-network classifiers trained by back-propagation and SGD, written once against the
Python Array API standard, so the same code runs on NumPy (CPU) and CuPy (NVIDIA GPU).

>>> import nnarray as nn
>>> be = nn.get_backend("numpy")
>>> net = nn.MLP([784, 100, 10], backend=be, seed=0)
"""

from . import datasets, functions
from .backend import Backend, BackendUnavailableError, cupy_available, get_backend, to_numpy
from .io import CheckpointError, load, load_checkpoint, save, save_checkpoint
from .model import MLP
from .optim import SGD
from .train import History, TrainingDivergedError, evaluate, fit

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "CheckpointError",
    "History",
    "MLP",
    "SGD",
    "TrainingDivergedError",
    "cupy_available",
    "datasets",
    "evaluate",
    "fit",
    "functions",
    "get_backend",
    "load",
    "load_checkpoint",
    "save",
    "save_checkpoint",
    "to_numpy",
]
