"""``Sequential``: a stack of layers (``toolkit.network.Network``) that trains
(``toolkit.trainer.Trainer``)."""

from __future__ import annotations

import os
from typing import Any

from . import saving
from .network import Network
from .trainer import Trainer


class Sequential(Trainer, Network):
    """A feed-forward network ``ŷ = f_L(… f_2(f_1(x)))`` and its training.

    Args:
        layers: the layers, first to last.
        input_dim: number of input features (or give ``input_dim`` to the first ``Dense``).
        input_shape: the shape of one sample, batch axis excluded: ``(28, 28, 1)`` for channels-last
            images (or give ``input_shape`` to the first ``Conv2D``); ``(n,)`` is ``input_dim=n``.
        dtype: ``"float32"`` (default) or ``"float64"``.
        seed: seed of the initial weights; the same seed gives the same weights on every backend.
        backend: a backend name or object; defaults to the active one (``TOOLKIT_BACKEND``).

    What the network is (layers, weights, state, summary) comes from ``Network``; how it trains
    (compile, fit, evaluate, predict, the thread-safety rules) from ``Trainer``.

    Example:
        >>> from toolkit import Dense, Sequential
        >>> model = Sequential([Dense(8, activation="relu", input_dim=4), Dense(3, activation="softmax")])
        >>> model.compile(loss="categorical_crossentropy", optimizer="adam")
        >>> float(model.train_step([[1.0, 2.0, 3.0, 4.0]], [2])) > 0
        True
    """

    def export_onnx(self, path: str | os.PathLike) -> Any:
        """Export as ONNX by running this model's own forward pass on ndonnx; see ``toolkit.export_onnx``."""
        from .interop import export_onnx

        return export_onnx(self, path)


saving.register_container(Sequential)
