"""Exchange with other libraries: PyTorch ``nn.Sequential`` weights, and ONNX export.

Nothing here imports torch or onnx: a torch module is read through its own methods, and the
ONNX exporter is the ``onnx`` service (``toolkit_backends.onnx_export``, which needs ndonnx).

Layouts: ``torch.nn.Linear.weight`` is ``(out, in)``, the transpose of a ``Dense`` layer's ``W``
``(in, out)``; the bias is the same vector.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import registry
from .errors import ShapeError
from .layers import Dense

if TYPE_CHECKING:
    from .model import Sequential


def _linear_modules(module: Any) -> list[Any]:
    return [child for child in module.modules() if type(child).__name__ == "Linear"]


def _pairs(model: Sequential, module: Any) -> list[tuple[int, Any]]:
    """(index of each Dense layer, the torch Linear it corresponds to), checked for count and shapes."""
    denses = [index for index, layer in enumerate(model.layers) if isinstance(layer, Dense)]
    linears = _linear_modules(module)
    if len(denses) != len(linears):
        raise ShapeError(f"the model has {len(denses)} Dense layers but the torch module has {len(linears)} Linear layers")
    for index, linear in zip(denses, linears, strict=True):
        layer = model.layers[index]
        if linear.bias is None:
            raise ShapeError(f"torch Linear {linear} has no bias; Dense layers always have one (use bias=True)")
        if (linear.out_features, linear.in_features) != (layer.units, layer.input_dim):
            raise ShapeError(f"layer {index}, {layer.describe()}, is {layer.input_dim}→{layer.units} but the torch "
                             f"{linear} is {linear.in_features}→{linear.out_features}")
    return list(zip(denses, linears, strict=True))


def load_torch_weights(model: Sequential, module: Any) -> None:
    """Copy the weights of an equivalent torch ``nn.Sequential`` into ``model`` (``W = weight.T``).

    Activations carry no weights and are not compared: build the same ones on both sides.

    Example:
        >>> import torch
        >>> from toolkit import Dense, Sequential
        >>> from toolkit.interop import load_torch_weights
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> model = Sequential([Dense(4, activation="relu", input_dim=3), Dense(2)])
        >>> load_torch_weights(model, net)
        >>> float(abs(model.predict([[1.0, 2.0, 3.0]]) - net(torch.tensor([[1.0, 2.0, 3.0]])).detach().numpy()).max()) < 1e-6
        True
    """
    weights = {}
    for index, linear in _pairs(model, module):
        weights[f"{index}.W"] = linear.weight.detach().cpu().numpy().T
        weights[f"{index}.b"] = linear.bias.detach().cpu().numpy()
    model.set_weights(weights)


def store_torch_weights(model: Sequential, module: Any) -> None:
    """Write ``model``'s weights into an equivalent torch ``nn.Sequential`` (``weight = W.T``), in place."""
    pairs = _pairs(model, module)
    weights = model.get_weights()
    for index, linear in pairs:
        for target, value in ((linear.weight, weights[f"{index}.W"].T), (linear.bias, weights[f"{index}.b"])):
            target.data.copy_(target.data.new_tensor(value.copy()))


def export_onnx(model: Sequential, path: str | os.PathLike) -> Any:
    """Export ``model`` as ONNX (dynamic batch axis; input ``"input"`` (N, n_features), output
    ``"output"``, the model's dtype) by running its own forward pass on ndonnx arrays. Returns the
    ``onnx.ModelProto``; needs ``pip install -e ".[onnx]"``.

    Example:
        >>> import numpy as np, onnxruntime, tempfile, os
        >>> from toolkit import Dense, Sequential
        >>> model = Sequential([Dense(4, activation="relu", input_dim=3), Dense(2, activation="softmax")])
        >>> path = os.path.join(tempfile.mkdtemp(), "model.onnx")
        >>> _ = export_onnx(model, path)
        >>> x = np.ones((5, 3), np.float32)
        >>> served = onnxruntime.InferenceSession(path).run(None, {"input": x})[0]
        >>> float(abs(served - model.predict(x)).max()) < 1e-6
        True
    """
    return registry.service("onnx").export(model, path)
