"""Describe a model as a plain stack of Dense layers, for backends that compile a whole
gradient pass into one call (``Backend.dense_stack_kernel``).

The description is everything such a kernel needs and nothing backend-specific: the widths,
each layer's activation, the output/loss pair whose δ_out = ŷ − y starts the backward pass,
and where each ``W`` and ``b`` sits in the model's flat parameter and gradient buffers.
The reference for any such kernel is the model's own layer-by-layer pass
(``Sequential.forward`` then ``Sequential.backward``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .layers import Dense
from .ops.activations import LEAKY_RELU_SLOPE

Array = Any


@dataclass(frozen=True)
class DenseStack:
    widths: tuple[int, ...]  # input width first
    activations: tuple[str, ...]  # one per layer; the last one belongs to ``output_pair``
    output_pair: str  # "softmax_ce", "sigmoid_bce" or "identity_mse"
    offsets: tuple[tuple[int, int], ...]  # (offset of W, offset of b) per layer, in elements
    params: Array  # the model's flat parameters
    grads: Array  # the model's flat gradients (written by the kernel)
    leaky_relu_slope: float = LEAKY_RELU_SLOPE


def describe_dense_stack(model: Any) -> DenseStack | None:
    """The model as a ``DenseStack``, or None when it is anything else (another layer type,
    a softmax before the last layer, an output that does not pair with its loss)."""
    if model._output_pair is None or not model.built:
        return None
    layers = model.layers
    if any(type(layer) is not Dense for layer in layers):
        return None
    if any(layer.activation.name == "softmax" for layer in layers[:-1]):
        return None
    return DenseStack(
        widths=(model.input_dim, *(layer.units for layer in layers)),
        activations=tuple(layer.activation.name for layer in layers),
        output_pair=model._output_pair,
        offsets=tuple((model.param_offsets[i, "W"], model.param_offsets[i, "b"]) for i in range(len(layers))),
        params=model.flat_params,
        grads=model.flat_grads,
    )
