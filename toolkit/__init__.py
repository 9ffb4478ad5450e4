"""toolkit: deep learning written once against the Python Array API standard.

The same layers, losses and backpropagation run on NumPy, numba-jitted CPU kernels, CuPy
(CUDA), JAX, PyTorch and array-api-strict. Pick the backend with ``TOOLKIT_BACKEND`` or ``use_backend``.
"""

from . import callbacks, data, distributed, metrics, registry, schedules
from .config import get_backend, set_backend, use_backend
from .errors import BackendError, CheckpointError, InputError, ShapeError, ToolkitError, TrainingDiverged
from .gradcheck import gradcheck
from .interop import export_onnx, load_torch_weights, store_torch_weights
from .layers import (
                     GRU,
                     LSTM,
                     Activation,
                     AvgPool1D,
                     AvgPool2D,
                     BatchNorm,
                     Conv1D,
                     Conv2D,
                     Dense,
                     Dropout,
                     Embedding,
                     Flatten,
                     GlobalAveragePooling1D,
                     GlobalAveragePooling2D,
                     Layer,
                     LayerNorm,
                     MaxPool1D,
                     MaxPool2D,
                     MultiHeadAttention,
                     PositionEmbedding,
                     Reshape,
                     Residual,
)
from .losses import BinaryCrossEntropy, CategoricalCrossEntropy, Loss, MeanSquaredError, SparseCategoricalCrossEntropy
from .model import Sequential
from .optimizers import SGD, Adam, AdamW, Optimizer, RMSProp
from .registry import available_backends
from .saving import load, load_weights, save
from .training import History

__all__ = [
    "Activation", "Adam", "AdamW", "AvgPool1D", "AvgPool2D", "BackendError", "BatchNorm", "BinaryCrossEntropy",
    "CategoricalCrossEntropy", "CheckpointError", "Conv1D", "Conv2D", "Dense", "Dropout", "Embedding", "Flatten",
    "GRU", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "History", "InputError", "LSTM", "Layer", "LayerNorm",
    "Loss", "MaxPool1D", "MaxPool2D", "MeanSquaredError", "MultiHeadAttention", "Optimizer", "PositionEmbedding",
    "RMSProp", "Reshape", "Residual", "SGD", "Sequential", "ShapeError", "SparseCategoricalCrossEntropy",
    "ToolkitError", "TrainingDiverged", "available_backends", "callbacks", "data", "distributed", "export_onnx",
    "get_backend", "gradcheck", "load", "load_torch_weights", "load_weights", "metrics", "registry", "save",
    "schedules", "set_backend", "store_torch_weights", "use_backend",
]
__version__ = "0.1.0"
