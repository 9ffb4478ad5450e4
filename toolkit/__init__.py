"""toolkit: deep learning written once against the Python Array API standard.

The same layers, losses and backpropagation run on NumPy, numba-jitted CPU kernels, CuPy
(CUDA) and array-api-strict. Pick the backend with ``TOOLKIT_BACKEND`` or ``use_backend``.
"""

from . import callbacks, metrics, schedules
from .config import get_backend, set_backend, use_backend
from .errors import BackendError, CheckpointError, InputError, ShapeError, ToolkitError, TrainingDiverged
from .gradcheck import gradcheck
from .layers import Activation, Dense, Layer
from .losses import BinaryCrossEntropy, CategoricalCrossEntropy, Loss, MeanSquaredError
from .model import Sequential
from .optimizers import SGD, Adam, AdamW, Optimizer, RMSProp
from .saving import load, load_weights, save
from .training import History

__all__ = [
    "Activation", "Adam", "AdamW", "BackendError", "BinaryCrossEntropy", "CategoricalCrossEntropy",
    "CheckpointError", "Dense", "History", "InputError", "Layer", "Loss", "MeanSquaredError",
    "Optimizer", "RMSProp", "SGD", "Sequential", "ShapeError", "ToolkitError", "TrainingDiverged",
    "callbacks", "get_backend", "gradcheck", "load", "load_weights", "metrics", "save", "schedules",
    "set_backend", "use_backend",
]
__version__ = "0.1.0"
