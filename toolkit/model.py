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

    def save(self, path: str | os.PathLike, include_optimizer: bool = True) -> None:
        """Write the model (architecture, weights, state, compile settings and optimizer state) to
        ``path``; ``toolkit.load(path)`` rebuilds it. See ``toolkit.save``.

        Example:
            >>> import os, tempfile
            >>> from toolkit import Dense, Sequential, load
            >>> model = Sequential([Dense(2, input_shape=(3,))])
            >>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
            >>> model.save(path)
            >>> load(path).get_weights()["0.W"].shape
            (3, 2)
        """
        saving.save(self, path, include_optimizer=include_optimizer)

    def save_weights(self, path: str | os.PathLike) -> None:
        """Write the weights and layer state (no optimizer state) for ``load_weights``."""
        saving.save(self, path, include_optimizer=False)

    def load_weights(self, path: str | os.PathLike, include_optimizer: bool = False) -> None:
        """Load a checkpoint's weights into this model of the same architecture; on any mismatch the
        model is left untouched. See ``toolkit.load_weights``."""
        saving.load_weights(self, path, include_optimizer=include_optimizer)

    def export_onnx(self, path: str | os.PathLike) -> Any:
        """Export as ONNX by running this model's own forward pass on ndonnx; see ``toolkit.export_onnx``."""
        from .interop import export_onnx

        return export_onnx(self, path)


saving.register_container(Sequential)
