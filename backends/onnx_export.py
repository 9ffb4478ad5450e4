"""ONNX export by running the model's own inference forward pass on ndonnx arrays.

ndonnx is an Array API library whose arrays record an ONNX graph instead of computing. The
layers' forward code, unchanged, is therefore the exporter: the input is a symbolic
``(N, n_features)`` argument, the weights are constants, and the recorded graph is the model.
There is no per-layer export code; a layer whose forward uses something ONNX cannot express is
reported by name.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import ndonnx as ndx
import numpy as np
import onnx

from toolkit.backend import Backend
from toolkit.context import INFERENCE
from toolkit.engine import forward_pass
from toolkit.errors import ToolkitError

INPUT_NAME, OUTPUT_NAME = "input", "output"


class NdonnxTraceBackend(Backend):
    """ndonnx as a backend for one inference pass: every op is the plain reference."""

    name = "ndonnx"
    mutable = False

    def __init__(self) -> None:
        super().__init__(ndx, None, fused=False)

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        return ndx.asarray(np.asarray(x), dtype=dtype)

    def to_host(self, x: Any) -> np.ndarray:
        return x.unwrap_numpy()


def export(model: Any, path: str | os.PathLike) -> onnx.ModelProto:
    """Write ``model`` as an ONNX file with a dynamic batch axis; returns the ModelProto."""
    if not model.built:
        raise ToolkitError("cannot export a model that is not built yet (give input_dim or train it first)")
    tracer = NdonnxTraceBackend()
    dtype = getattr(ndx, model.dtype_name)
    # Copies bound to the tracer (layers hold configuration only); the model's own stay untouched.
    layers = copy.deepcopy(model.layers, {id(model.backend): tracer})
    for index, layer in enumerate(layers):
        layer.bind(tracer, str(index))
    values = {**model.get_weights(), **model.get_state()}
    params: list[dict[str, Any]] = [{} for _ in layers]
    for slot in [*model.table.slots, *model.state_table.slots]:
        params[slot.layer][slot.name] = ndx.asarray(values[slot.key], dtype=dtype)
    # Token ids (a model that starts with an Embedding) are int64, as predict takes them; else the model's dtype.
    x = ndx.argument(shape=("N", *model.input_shape), dtype=ndx.int64 if model.takes_token_ids else dtype)
    output = x
    for index, layer in enumerate(layers):
        try:
            output, _ = forward_pass([layer], [params[index]], output, INFERENCE, [None])
        except Exception as error:  # noqa: BLE001 - whatever ndonnx refused, named with its layer
            raise ToolkitError(
                f"layer {index}, {layer.describe()}, cannot be exported to ONNX: its forward pass uses an "
                f"operation ndonnx cannot record ({type(error).__name__}: {error})"
            ) from error
    proto = ndx.build({INPUT_NAME: x}, {OUTPUT_NAME: output})
    proto.doc_string = (f"toolkit {model.get_config()['layers']!r}; input '{INPUT_NAME}': (N, *{model.input_shape}) "
                        f"{'int64 token ids' if model.takes_token_ids else model.dtype_name}; output '{OUTPUT_NAME}': "
                        f"(N, *{model.output_shape}), what predict returns")
    onnx.save(proto, os.fspath(path))
    return proto
