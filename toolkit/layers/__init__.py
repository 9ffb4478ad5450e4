"""Layers, one file per family: ``dense`` (``Dense``), ``activation`` (``Activation``), ``conv``
(``Conv2D``), ``pooling`` (``MaxPool2D``, ``AvgPool2D``, ``GlobalAveragePooling2D``), ``reshape``
(``Flatten``, ``Reshape``). ``base`` is the interface they implement.

``LAYERS`` maps the class names that checkpoints record to the classes."""

from .activation import Activation
from .base import Layer, Scratch
from .conv import Conv2D
from .dense import Dense
from .pooling import AvgPool2D, GlobalAveragePooling2D, MaxPool2D
from .reshape import Flatten, Reshape

LAYERS: dict[str, type[Layer]] = {cls.__name__: cls for cls in (
    Dense, Activation, Conv2D, MaxPool2D, AvgPool2D, GlobalAveragePooling2D, Flatten, Reshape)}

__all__ = ["LAYERS", "Activation", "AvgPool2D", "Conv2D", "Dense", "Flatten", "GlobalAveragePooling2D", "Layer",
           "MaxPool2D", "Reshape", "Scratch"]
