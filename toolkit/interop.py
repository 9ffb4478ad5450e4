"""Exchange with other libraries: PyTorch ``nn.Sequential`` weights, and ONNX export.

Nothing here imports torch or onnx: a torch module is read through its own methods, and the
ONNX exporter is the ``onnx`` service (``toolkit_backends.onnx_export``, which needs ndonnx).

Layouts: ``torch.nn.Linear.weight`` is ``(out, in)``, the transpose of a ``Dense`` layer's ``W``
``(in, out)``; ``torch.nn.Conv2d.weight`` is ``(F, C, kh, kw)``, a ``Conv2D``'s ``W`` is ``(kh, kw, C, F)``;
biases are the same vectors. Images are channels-first in torch and channels-last here.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import registry
from .errors import ShapeError
from .layers import GRU, LSTM, Conv1D, Conv2D, Dense, Embedding, Flatten, Layer, LayerNorm, MultiHeadAttention, PositionEmbedding
from .layers.base import every_layer

if TYPE_CHECKING:
    from .network import Network


# torch module kind → the toolkit layers it can face (a torch Embedding is a token or a position table)
_TORCH_KINDS: dict[str, tuple[type[Layer], ...]] = {
    "Linear": (Dense,), "Conv2d": (Conv2D,), "Embedding": (Embedding, PositionEmbedding),
    "MultiheadAttention": (MultiHeadAttention,), "LayerNorm": (LayerNorm,), "LSTM": (LSTM,), "GRU": (GRU,),
    "Conv1d": (Conv1D,),
}
_MAPPED = tuple(cls for classes in _TORCH_KINDS.values() for cls in classes)


def _describe(torch_layer: Any) -> str:
    """A torch module on one line (its repr spans lines when it has children)."""
    return f"{type(torch_layer).__name__}({torch_layer.extra_repr()})"


def _weighted_modules(module: Any) -> list[Any]:
    """The torch modules with weights, in registration order; a module with weights of a kind not
    mapped (BatchNorm1d, LSTM, …) is refused by name rather than skipped (its weights would be lost)."""
    found: list[Any] = []
    inside: set[int] = set()
    for child in module.modules():
        if id(child) in inside:
            continue  # part of a mapped module (MultiheadAttention's out_proj)
        kind = type(child).__name__
        if kind in _TORCH_KINDS:
            found.append(child)
            inside.update(id(part) for part in child.modules())
        elif any(True for _ in child.parameters(recurse=False)):
            raise ShapeError(f"the torch module has a {_describe(child)} with weights, which the toolkit cannot map; "
                             f"load_torch_weights maps {', '.join(_TORCH_KINDS)} modules")
    return found


# torch activation modules → the toolkit's activation names
_TORCH_ACTIVATIONS = {"ReLU": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softmax": "softmax", "GELU": "gelu",
                      "SiLU": "silu", "ELU": "elu", "Softplus": "softplus", "LeakyReLU": "leaky_relu",
                      "LogSoftmax": "log_softmax"}


def _warn_if_activations_differ(model: Network, module: Any) -> None:
    """Weights load whatever activations surround them, so a torch model ending in logits loaded into a
    softmax model predicts differently without any error: compare the activations in order, and warn."""
    theirs = [_TORCH_ACTIVATIONS[type(child).__name__] for child in module.modules()
              if type(child).__name__ in _TORCH_ACTIVATIONS]
    if not theirs and type(module).__name__ != "Sequential":
        return  # a custom module may apply its activations as functions in forward(), which cannot be seen
    ours = [name for layer in every_layer(model.layers)
            if (name := getattr(getattr(layer, "activation", None), "name", "identity")) != "identity"]
    if ours != theirs:
        warnings.warn(f"the weights are loaded, but the activations differ: the toolkit model applies {ours or 'none'}, "
                      f"the torch module {theirs or 'none'} (in order), so the two will predict differently; build "
                      "the same activations on both sides (e.g. a torch model that ends in logits with "
                      "CrossEntropyLoss faces Dense(n, activation='softmax') and predicts softmax(logits))",
                      UserWarning, stacklevel=3)


def _flattened_from(model: Network, layer: Layer) -> tuple[int, int, int] | None:
    """(H, W, C) when ``layer`` is a Dense fed by a Flatten of images, else None: torch flattens
    (C, H, W), the toolkit (H, W, C), so such a layer's input rows are permuted between the two."""
    index = model.layers.index(layer) if layer in model.layers else 0
    previous = model.layers[index - 1] if index else None
    if isinstance(previous, Flatten) and len(previous.input_shape) == 3:
        return previous.input_shape
    return None


def _pairs(model: Network, module: Any) -> list[tuple[Layer, Any]]:
    """(each layer with weights, the torch module it corresponds to), checked kind by kind."""
    ours = [layer for layer in every_layer(model.layers) if isinstance(layer, _MAPPED)]
    theirs = _weighted_modules(module)
    if len(ours) != len(theirs):
        raise ShapeError(f"the model has {len(ours)} layers with weights ({', '.join(type(layer).__name__ for layer in ours)}) "
                         f"but the torch module has {len(theirs)} ({', '.join(type(m).__name__ for m in theirs)})")
    for layer, torch_layer in zip(ours, theirs, strict=True):
        if not isinstance(layer, _TORCH_KINDS[type(torch_layer).__name__]):
            raise ShapeError(f"layer {layer.path}, {layer.describe()}, faces a torch {_describe(torch_layer)}")
        differences = _CHECKS[type(layer)](layer, torch_layer)
        if differences:
            raise ShapeError(f"layer {layer.path}, {layer.describe()}, does not match the torch {_describe(torch_layer)}: "
                             + "; ".join(differences))
    return list(zip(ours, theirs, strict=True))


def _check_dense(layer: Dense, torch_layer: Any) -> list[str]:
    if torch_layer.bias is None:
        return ["it has no bias; the toolkit's layers always have one (use bias=True)"]
    if (torch_layer.out_features, torch_layer.in_features) != (layer.units, layer.input_dim):
        return [f"the layer is {layer.input_dim}→{layer.units}, the torch one {torch_layer.in_features}→"
                f"{torch_layer.out_features}"]
    return []


def _check_table(layer: Embedding | PositionEmbedding, torch_layer: Any) -> list[str]:
    rows = layer.vocab_size if isinstance(layer, Embedding) else layer.max_length
    width = layer.dim if isinstance(layer, Embedding) else layer.input_shape[1]
    differences = []
    if tuple(torch_layer.weight.shape) != (rows, width):
        differences.append(f"table shape {tuple(torch_layer.weight.shape)} vs {(rows, width)}")
    if torch_layer.max_norm is not None:
        differences.append(f"max_norm={torch_layer.max_norm} renormalises rows as it looks them up; the toolkit does not")
    return differences


def _check_layer_norm(layer: LayerNorm, torch_layer: Any) -> list[str]:
    differences = []
    if tuple(torch_layer.normalized_shape) != (layer.input_shape[-1],):
        differences.append(f"normalized_shape {tuple(torch_layer.normalized_shape)} vs the last axis "
                           f"({layer.input_shape[-1]},)")
    if not torch_layer.elementwise_affine or torch_layer.bias is None:
        differences.append("it has no learned scale and shift (use elementwise_affine=True, bias=True)")
    if torch_layer.eps != layer.eps:
        differences.append(f"eps {torch_layer.eps} vs {layer.eps}")
    return differences


def _check_attention(layer: MultiHeadAttention, torch_layer: Any) -> list[str]:
    d = layer.input_shape[-1]
    differences = []
    theirs, ours = (torch_layer.embed_dim, torch_layer.num_heads, torch_layer.head_dim), (d, layer.num_heads, layer.key_dim)
    if theirs != ours:
        differences.append(f"(embed_dim, num_heads, head_dim) = {theirs} vs {ours} (torch's heads split embed_dim: "
                           "key_dim × num_heads must equal the model width)")
    if not torch_layer._qkv_same_embed_dim:
        differences.append("kdim/vdim differ from embed_dim: the toolkit's attention projects one input")
    if torch_layer.in_proj_bias is None:
        differences.append("it has no biases (use bias=True)")
    if torch_layer.bias_k is not None or torch_layer.add_zero_attn:
        differences.append("add_bias_kv/add_zero_attn append extra keys; the toolkit's attention has none")
    return differences


def _check_recurrent(layer: LSTM | GRU, torch_layer: Any) -> list[str]:
    """One layer, one direction, no projection, biases, the same sizes: what the toolkit's layer computes."""
    differences = []
    if (torch_layer.input_size, torch_layer.hidden_size) != (layer.input_shape[1], layer.units):
        differences.append(f"(input_size, hidden_size) = {(torch_layer.input_size, torch_layer.hidden_size)} vs "
                           f"{(layer.input_shape[1], layer.units)}")
    if torch_layer.num_layers != 1:
        differences.append(f"num_layers={torch_layer.num_layers}: stack one toolkit layer per torch layer "
                           "(return_sequences=True on all but the last) and load them from single-layer modules")
    if torch_layer.bidirectional:
        differences.append("bidirectional=True: the toolkit's recurrent layers run forward in time only")
    if getattr(torch_layer, "proj_size", 0):
        differences.append(f"proj_size={torch_layer.proj_size}: the toolkit's LSTM has no projection")
    if not torch_layer.bias:
        differences.append("bias=False: the toolkit's recurrent layers have biases")
    return differences


def _check_convolution_1d(layer: Conv1D, torch_layer: Any) -> list[str]:
    """A torch ``Conv1d`` computes what the ``Conv1D`` does: weights, stride, padding, dilation, no groups."""
    differences = []
    expected = (layer.filters, layer.input_shape[1], layer.kernel_size)
    if tuple(torch_layer.weight.shape) != expected:
        differences.append(f"weight shape {tuple(torch_layer.weight.shape)} vs (F, C, k) = {expected}")
    if torch_layer.bias is None:
        differences.append("it has no bias; the toolkit's layers always have one (use bias=True)")
    if tuple(torch_layer.stride) != (layer.strides,):
        differences.append(f"stride {tuple(torch_layer.stride)} vs ({layer.strides},)")
    theirs = torch_layer.padding if isinstance(torch_layer.padding, str) else torch_layer.padding[0]
    ours = layer.padding if not (isinstance(layer.padding, str) and layer.padding == "valid") else 0
    if theirs != ours and not (theirs == "valid" and ours == 0):
        differences.append(f"padding {torch_layer.padding!r} vs the layer's padding={layer.padding!r}")
    if tuple(torch_layer.dilation) != (layer.dilation,):
        differences.append(f"dilation {tuple(torch_layer.dilation)} vs the layer's dilation={layer.dilation}")
    if torch_layer.groups != 1 or torch_layer.padding_mode != "zeros":
        differences.append("groups and padding_mode must be 1 and 'zeros'")
    return differences


_CHECKS: dict[type[Layer], Callable[[Any, Any], list[str]]] = {
    Dense: _check_dense, Conv2D: lambda layer, torch_layer: _check_convolution(layer, torch_layer),
    Embedding: _check_table, PositionEmbedding: _check_table, LayerNorm: _check_layer_norm,
    MultiHeadAttention: _check_attention, LSTM: _check_recurrent, GRU: _check_recurrent,
    Conv1D: _check_convolution_1d,
}


def _torch_pads(torch_layer: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) zeros a torch ``Conv2d`` adds around its input."""
    padding = torch_layer.padding
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":  # torch puts the odd one of the total on the far side
        totals = [d * (k - 1) for d, k in zip(torch_layer.dilation, torch_layer.kernel_size, strict=True)]
        return (totals[0] // 2, totals[0] - totals[0] // 2), (totals[1] // 2, totals[1] - totals[1] // 2)
    return (padding[0], padding[0]), (padding[1], padding[1])


def _check_convolution(layer: Conv2D, torch_layer: Any) -> list[str]:
    """Everything that changes what a torch ``Conv2d`` computes must match the ``Conv2D``:
    weight shape, stride, padding, dilation, padding mode, groups, a bias."""
    differences = []
    expected = (layer.filters, layer.input_shape[2], *layer.kernel_size)
    if torch_layer.bias is None:
        differences.append("it has no bias; the toolkit's layers always have one (use bias=True)")
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
    return differences


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
    weights = model.get_weights()
    for layer, torch_layer in _pairs(model, module):
        weights.update({f"{layer.path}.{name}": value for name, value in _from_torch(model, layer, torch_layer).items()})
    model.set_weights(weights)
    _warn_if_activations_differ(model, module)


def _from_torch(model: Network, layer: Layer, torch_layer: Any) -> dict[str, Any]:
    """The layer's parameters, by name, from the torch module's tensors."""
    if isinstance(layer, Embedding):
        return {"embeddings": _host(torch_layer.weight)}
    if isinstance(layer, PositionEmbedding):
        return {"positions": _host(torch_layer.weight)}
    if isinstance(layer, LayerNorm):
        return {"gamma": _host(torch_layer.weight), "beta": _host(torch_layer.bias)}
    if isinstance(layer, MultiHeadAttention):
        # in_proj_weight = [W_qᵀ; W_kᵀ; W_vᵀ], (3d, d); the key bias is dropped (the softmax cancels it)
        d = torch_layer.embed_dim
        w_q, w_k, w_v = (_host(torch_layer.in_proj_weight)[i * d : (i + 1) * d] for i in range(3))
        b_q, b_v = _host(torch_layer.in_proj_bias)[:d], _host(torch_layer.in_proj_bias)[2 * d :]
        return {"Wq": w_q.T, "bq": b_q, "Wk": w_k.T, "Wv": w_v.T, "bv": b_v,
                "Wo": _host(torch_layer.out_proj.weight).T, "bo": _host(torch_layer.out_proj.bias)}
    if isinstance(layer, (LSTM, GRU)):
        # b = b_ih + b_hh (they always add), except the GRU's n block of b_hh, which is b_hn
        b_ih, b_hh = _host(torch_layer.bias_ih_l0), _host(torch_layer.bias_hh_l0)
        values = {"W": _host(torch_layer.weight_ih_l0).T, "U": _host(torch_layer.weight_hh_l0).T}
        if isinstance(layer, LSTM):
            return {**values, "b": b_ih + b_hh}
        n = 2 * layer.units
        merged = b_ih.copy()
        merged[:n] += b_hh[:n]
        return {**values, "b": merged, "b_hn": b_hh[n:]}
    w = _host(torch_layer.weight)
    if isinstance(layer, Conv1D):
        w = w.transpose(2, 1, 0)  # (F, C, k) → (k, C, F)
    elif isinstance(layer, Conv2D):
        w = w.transpose(2, 3, 1, 0)  # (F, C, kh, kw) → (kh, kw, C, F)
    else:
        images = _flattened_from(model, layer)
        if images is not None:  # inputs in torch's (C, H, W) order → the toolkit's (H, W, C)
            h, w_, c = images
            w = w.reshape(w.shape[0], c, h, w_).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        w = w.T
    return {"W": w, "b": _host(torch_layer.bias)}


def _to_torch(model: Network, layer: Layer, values: dict[str, Any]) -> list[tuple[str, slice, Any]]:
    """(torch attribute path, rows of it, value) of each tensor the layer's parameters ``values`` fill."""
    every = slice(None)
    if isinstance(layer, Embedding):
        return [("weight", every, values["embeddings"])]
    if isinstance(layer, PositionEmbedding):
        return [("weight", every, values["positions"])]
    if isinstance(layer, LayerNorm):
        return [("weight", every, values["gamma"]), ("bias", every, values["beta"])]
    if isinstance(layer, MultiHeadAttention):
        d = values["bo"].shape[0]
        q, k, v = slice(0, d), slice(d, 2 * d), slice(2 * d, 3 * d)
        return [("in_proj_weight", q, values["Wq"].T), ("in_proj_weight", k, values["Wk"].T),
                ("in_proj_weight", v, values["Wv"].T), ("in_proj_bias", q, values["bq"]),
                ("in_proj_bias", k, 0.0 * values["bq"]),  # no key bias here: zero there computes the same
                ("in_proj_bias", v, values["bv"]), ("out_proj.weight", every, values["Wo"].T),
                ("out_proj.bias", every, values["bo"])]
    if isinstance(layer, (LSTM, GRU)):
        n = 2 * layer.units if isinstance(layer, GRU) else len(values["b"])
        return [("weight_ih_l0", every, values["W"].T), ("weight_hh_l0", every, values["U"].T),
                ("bias_ih_l0", every, values["b"]), ("bias_hh_l0", slice(0, n), 0.0 * values["b"][:n]),
                *([("bias_hh_l0", slice(n, None), values["b_hn"])] if isinstance(layer, GRU) else [])]
    w = values["W"]
    if isinstance(layer, Conv1D):
        w = w.transpose(2, 1, 0)  # (k, C, F) → (F, C, k)
    elif isinstance(layer, Conv2D):
        w = w.transpose(3, 2, 0, 1)  # (kh, kw, C, F) → (F, C, kh, kw)
    else:
        w = w.T
        images = _flattened_from(model, layer)
        if images is not None:
            h, w_, c = images
            w = w.reshape(w.shape[0], h, w_, c).transpose(0, 3, 1, 2).reshape(w.shape[0], -1)
    return [("weight", every, w), ("bias", every, values["b"])]


def store_torch_weights(model: Network, module: Any) -> None:
    """Write ``model``'s weights into an equivalent torch ``nn.Sequential``, in place (the inverse
    of ``load_torch_weights``, whose docstring has the example)."""
    pairs = _pairs(model, module)
    weights = model.get_weights()
    for layer, torch_layer in pairs:
        prefix = f"{layer.path}."
        values = {key[len(prefix):]: value for key, value in weights.items() if key.startswith(prefix)}
        for attribute, rows, value in _to_torch(model, layer, values):
            target = torch_layer.get_parameter(attribute).data[rows]
            target.copy_(target.new_tensor(value.copy()))


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
