"""Layers, one file per family: ``dense`` (``Dense``), ``activation`` (``Activation``).

``LAYERS`` maps the class names that checkpoints record to the classes."""

from .activation import Activation
from .base import Layer, Scratch
from .dense import Dense

LAYERS: dict[str, type[Layer]] = {"Dense": Dense, "Activation": Activation}

__all__ = ["LAYERS", "Activation", "Dense", "Layer", "Scratch"]
