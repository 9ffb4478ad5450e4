"""Exchange with other libraries: PyTorch ``nn.Sequential`` weights, and ONNX export.

Nothing here imports torch or onnx: a torch module is read through its own methods, and the
ONNX exporter is the ``onnx`` service (``toolkit_backends.onnx_export``, which needs ndonnx).

Layouts: ``torch.nn.Linear.weight`` is ``(out, in)``, the transpose of a ``Dense`` layer's ``W``
``(in, out)``; ``torch.nn.Conv2d.weight`` is ``(F, C, kh, kw)``, a ``Conv2D``'s ``W`` is ``(kh, kw, C, F)``;
biases are the same vectors. Images are channels-first in torch and channels-last here.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import registry
from .errors import ShapeError
from .layers import Conv2D, Dense, Flatten

if TYPE_CHECKING:
    from .network import Network


_TORCH_KINDS = {"Linear": Dense, "Conv2d": Conv2D}


def _weighted_modules(module: Any) -> list[Any]:
    return [child for child in module.modules() if type(child).__name__ in _TORCH_KINDS]


def _flattened_from(model: Network, index: int) -> tuple[int, int, int] | None:
    """(H, W, C) when layer ``index`` is a Dense fed by a Flatten of images, else None: torch flattens
    (C, H, W), the toolkit (H, W, C), so such a layer's input rows are permuted between the two."""
    previous = model.layers[index - 1] if index else None
    if isinstance(previous, Flatten) and len(previous.input_shape) == 3:
        return previous.input_shape
    return None


def _pairs(model: Network, module: Any) -> list[tuple[int, Any]]:
    """(index of each Dense/Conv2D layer, the torch module it corresponds to), checked kind by kind."""
    ours = [index for index, layer in enumerate(model.layers) if isinstance(layer, (Dense, Conv2D))]
    theirs = _weighted_modules(module)
    if len(ours) != len(theirs):
        raise ShapeError(f"the model has {len(ours)} Dense/Conv2D layers but the torch module has {len(theirs)} "
                         "Linear/Conv2d layers")
    for index, torch_layer in zip(ours, theirs, strict=True):
        layer = model.layers[index]
        if not isinstance(layer, _TORCH_KINDS[type(torch_layer).__name__]):
            raise ShapeError(f"layer {index}, {layer.describe()}, faces a torch {torch_layer}")
        if torch_layer.bias is None:
            raise ShapeError(f"torch {torch_layer} has no bias; the toolkit's layers always have one (use bias=True)")
        if isinstance(layer, Dense) and (torch_layer.out_features, torch_layer.in_features) != (layer.units, layer.input_dim):
            raise ShapeError(f"layer {index}, {layer.describe()}, is {layer.input_dim}→{layer.units} but the torch "
                             f"{torch_layer} is {torch_layer.in_features}→{torch_layer.out_features}")
        if isinstance(layer, Conv2D):
            _check_convolution(index, layer, torch_layer)
    return list(zip(ours, theirs, strict=True))


def _torch_pads(torch_layer: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) zeros a torch ``Conv2d`` adds around its input."""
    padding = torch_layer.padding
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":  # torch puts the odd one of the total on the far side
        totals = [d * (k - 1) for d, k in zip(torch_layer.dilation, torch_layer.kernel_size, strict=True)]
        return (totals[0] // 2, totals[0] - totals[0] // 2), (totals[1] // 2, totals[1] - totals[1] // 2)
    return (padding[0], padding[0]), (padding[1], padding[1])


def _check_convolution(index: int, layer: Conv2D, torch_layer: Any) -> None:
    """Everything that changes what a torch ``Conv2d`` computes must match the ``Conv2D``:
    weight shape, stride, padding, dilation, padding mode, groups."""
    differences = []
    expected = (layer.filters, layer.input_shape[2], *layer.kernel_size)
    if tuple(torch_layer.weight.shape) != expected:
        differences.append(f"weight shape {tuple(torch_layer.weight.shape)} vs (F, C, kh, kw) = {expected}")
    if tuple(torch_layer.stride) != layer.strides:
        differences.append(f"stride {tuple(torch_layer.stride)} vs {layer.strides}")
    if _torch_pads(torch_layer) != tuple(layer.pads):
        differences.append(f"padding {torch_layer.padding!r} adds {_torch_pads(torch_layer)} vs the layer's "
                           f"padding={layer.padding!r}, which adds {tuple(layer.pads)} ((top, bottom), (left, right))")
    if tuple(torch_layer.dilation) != (1, 1):
        differences.append(f"dilation {tuple(torch_layer.dilation)}: Conv2D has no dilation (use dilation=1)")
    if torch_layer.padding_mode != "zeros":
        differences.append(f"padding_mode={torch_layer.padding_mode!r}: Conv2D pads with zeros only")
    if torch_layer.groups != 1:
        differences.append(f"groups={torch_layer.groups}: Conv2D has no groups")
    if differences:
        raise ShapeError(f"layer {index}, {layer.describe()}, does not match the torch {torch_layer}: "
                         + "; ".join(differences))


def _host(tensor: Any) -> Any:
    return tensor.detach().cpu().numpy()


def load_torch_weights(model: Network, module: Any) -> None:
    """Copy the weights of an equivalent torch ``nn.Sequential`` into ``model``.

    ``Linear.weight`` (out, in) is ``Wᵀ``; ``Conv2d.weight`` (F, C, kh, kw) is ``W`` (kh, kw, C, F)
    permuted; a Linear after ``nn.Flatten`` of (C, H, W) maps get its inputs reordered to the toolkit's
    (H, W, C) flattening. Activations and pooling carry no weights: build the same ones on both sides.

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
    for index, torch_layer in _pairs(model, module):
        w = _host(torch_layer.weight)
        if isinstance(model.layers[index], Conv2D):
            w = w.transpose(2, 3, 1, 0)  # (F, C, kh, kw) → (kh, kw, C, F)
        else:
            images = _flattened_from(model, index)
            if images is not None:  # inputs in torch's (C, H, W) order → the toolkit's (H, W, C)
                h, w_, c = images
                w = w.reshape(w.shape[0], c, h, w_).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
            w = w.T
        weights[f"{index}.W"], weights[f"{index}.b"] = w, _host(torch_layer.bias)
    model.set_weights(weights)


def store_torch_weights(model: Network, module: Any) -> None:
    """Write ``model``'s weights into an equivalent torch ``nn.Sequential``, in place (the inverse
    of ``load_torch_weights``, whose docstring has the example)."""
    pairs = _pairs(model, module)
    weights = model.get_weights()
    for index, torch_layer in pairs:
        w = weights[f"{index}.W"]
        if isinstance(model.layers[index], Conv2D):
            w = w.transpose(3, 2, 0, 1)  # (kh, kw, C, F) → (F, C, kh, kw)
        else:
            w = w.T
            images = _flattened_from(model, index)
            if images is not None:
                h, w_, c = images
                w = w.reshape(w.shape[0], h, w_, c).transpose(0, 3, 1, 2).reshape(w.shape[0], -1)
        for target, value in ((torch_layer.weight, w), (torch_layer.bias, weights[f"{index}.b"])):
            target.data.copy_(target.data.new_tensor(value.copy()))


def export_onnx(model: Network, path: str | os.PathLike) -> Any:
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
