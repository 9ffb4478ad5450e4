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
                     Activation,
                     AvgPool2D,
                     BatchNorm,
                     AvgPool1D,
                     Conv1D,
                     Conv2D,
                     GlobalAveragePooling1D,
                     MaxPool1D,
                     Dense,
                     Dropout,
                     Embedding,
                     Flatten,
                     GRU,
                     LSTM,
                     GlobalAveragePooling2D,
                     Layer,
                     LayerNorm,
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
    "AvgPool2D", "BatchNorm", "Conv2D", "Dropout", "Flatten", "GlobalAveragePooling2D", "LayerNorm", "MaxPool2D",
    "Reshape", "Residual", "Embedding", "MultiHeadAttention", "PositionEmbedding", "SparseCategoricalCrossEntropy", "LSTM", "GRU", "Conv1D", "MaxPool1D", "AvgPool1D",
    "GlobalAveragePooling1D",
    "Activation", "Adam", "AdamW", "BackendError", "BinaryCrossEntropy", "CategoricalCrossEntropy",
    "CheckpointError", "Dense", "History", "InputError", "Layer", "Loss", "MeanSquaredError", "Optimizer",
    "RMSProp", "SGD", "Sequential", "ShapeError", "ToolkitError", "TrainingDiverged", "available_backends",
    "callbacks", "data", "distributed", "export_onnx", "get_backend", "gradcheck", "load", "load_torch_weights",
    "load_weights", "metrics", "registry", "save", "schedules", "set_backend", "store_torch_weights",
    "use_backend",
]
__version__ = "0.1.0"
