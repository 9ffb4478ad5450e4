"""Layers, one file per family: ``dense`` (``Dense``), ``activation`` (``Activation``), ``conv``
(``Conv2D``), ``pooling`` (``MaxPool2D``, ``AvgPool2D``, ``GlobalAveragePooling2D``), ``reshape``
(``Flatten``, ``Reshape``), ``dropout`` (``Dropout``), ``normalization`` (``BatchNorm``,
``LayerNorm``), ``residual`` (``Residual``), ``embedding`` (``Embedding``, ``PositionEmbedding``),
``attention`` (``MultiHeadAttention``). ``base`` is the interface they implement.

``LAYERS`` maps the class names that checkpoints record to the classes; ``from_config`` rebuilds
a layer from its ``{"class": …, "config": …}`` record."""

from .activation import Activation
from .attention import MultiHeadAttention
from .base import LAYERS, Layer, Scratch, from_config, register_layer
from .conv import Conv2D
from .conv1d import AvgPool1D, Conv1D, GlobalAveragePooling1D, MaxPool1D
from .dense import Dense
from .dropout import Dropout
from .embedding import Embedding, PositionEmbedding
from .normalization import BatchNorm, LayerNorm
from .pooling import AvgPool2D, GlobalAveragePooling2D, MaxPool2D
from .recurrent import GRU, LSTM
from .reshape import Flatten, Reshape
from .residual import Residual

for _cls in (Dense, Activation, Conv2D, MaxPool2D, AvgPool2D, GlobalAveragePooling2D, Flatten, Reshape, Dropout,
             BatchNorm, LayerNorm, Residual, Embedding, PositionEmbedding, MultiHeadAttention, LSTM, GRU, Conv1D,
             MaxPool1D, AvgPool1D, GlobalAveragePooling1D):
    register_layer(_cls)


__all__ = ["Activation", "AvgPool1D", "AvgPool2D", "BatchNorm", "Conv1D", "Conv2D", "Dense", "Dropout", "Embedding",
           "Flatten", "GRU", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "LAYERS", "LSTM", "Layer",
           "LayerNorm", "MaxPool1D", "MaxPool2D", "MultiHeadAttention", "PositionEmbedding", "Reshape", "Residual",
           "Scratch", "from_config", "register_layer"]
