"""``check_layer``: the checks the built-in layers get, for a user's own ``Layer`` subclass, usable from
the user's pytest (a failed check raises ``AssertionError`` naming the parameter, the backend and the error).

For each backend that can run here (numpy first):

1. finite differences: the layer, after a ``Dense`` that feeds it (so a wrong ∂J/∂x shows up in that
   layer's gradients), under an MSE loss in float64 — every parameter's gradient against central
   differences (``toolkit.gradcheck``, worst relative error ≤ ``tolerance``);
2. the loss and every gradient equal the numpy backend's (float64 ≤ 1e-10), which on JAX also proves
   that the layer writes into none of its arrays (JAX's are immutable);
3. a checkpoint round trip: saved and loaded (the class must be registered with
   ``toolkit.layers.register_layer``), the predictions are bit-identical.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from .config import use_backend
from .gradcheck import gradcheck
from .layers import Dense, Layer
from .model import Sequential
from .registry import available_backends
from .saving import load, save

CROSS_BACKEND_TOLERANCE = 1e-10


def _fresh(layer: Layer) -> Layer:
    """A new layer object with ``layer``'s configuration (a layer object serves one model)."""
    return type(layer)(**layer.get_config())


def _model(layer: Layer, input_shape: tuple[int, ...], seed: int) -> Sequential:
    feeder = Dense(input_shape[-1], activation="tanh", input_shape=input_shape)
    model = Sequential([feeder, _fresh(layer)], dtype="float64", seed=seed)
    model.compile(loss="mse", optimizer="sgd")
    return model


def _worst(a: Any, b: Any) -> float:
    scale = max(float(abs(a).max()), float(abs(b).max()), 1e-300)
    return float(abs(a - b).max()) / scale


def check_layer(layer: Layer, input_shape: tuple[int, ...], batch: int = 3, tolerance: float = 1e-6,
                seed: int = 0, backends: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the built-in layers' checks on ``layer`` (a configured instance; fresh copies are built
    from ``layer.get_config()``) for samples of ``input_shape``. Returns, per backend, the worst
    finite-difference error per parameter; raises ``AssertionError`` on the first failed check.

    Example:
        >>> from toolkit.layers import Layer, register_layer
        >>> from toolkit.testing import check_layer
        >>> @register_layer
        ... class Scale(Layer):
        ...     '''y = s ∘ x with a learned scale s per feature.'''
        ...     def param_shapes(self):
        ...         return {"s": (self.input_shape[-1],)}
        ...     def initial_params(self, rng, dtype):
        ...         return {"s": rng.uniform((self.input_shape[-1],), 0.5, 1.5, dtype)}
        ...     def forward(self, params, x, context, scratch):
        ...         return params["s"] * x, (x if context.training else None)
        ...     def backward(self, params, x, dy, scratch, grad_out):
        ...         xp = self.backend.xp
        ...         return dy * params["s"], {"s": xp.sum(xp.reshape(dy * x, (-1, x.shape[-1])), axis=0)}
        >>> errors = check_layer(Scale(), (4,), backends=["numpy"])
        >>> errors["numpy"]["1.s"] < 1e-6
        True
    """
    found = available_backends()
    chosen = backends if backends is not None else [name for name, reason in found.items() if reason is None]
    chosen = ["numpy", *[name for name in chosen if name != "numpy"]]
    with use_backend("numpy") as numpy_backend:
        rng = numpy_backend.random(seed + 1)
        x = numpy_backend.to_host(rng.normal((batch, *input_shape), 1.0, numpy_backend.dtype("float64")))
        probe = _model(layer, input_shape, seed)
        y = numpy_backend.to_host(rng.normal((batch, *probe.output_shape), 1.0, numpy_backend.dtype("float64")))
    reference: dict[str, Any] = {}
    report: dict[str, dict[str, float]] = {}
    for name in chosen:
        with use_backend(name) as backend:
            model = _model(layer, input_shape, seed)
            errors = gradcheck(model, x, y)
            report[name] = errors
            for parameter, error in errors.items():
                assert error <= tolerance, (f"{layer.describe()} on backend {name!r}: the gradient of {parameter} "
                                            f"differs from finite differences by {error:.3g} (relative; limit {tolerance:g})")
            xb = model.as_input(x)
            loss = float(model.compute_gradients(xb, model.prepare_targets(y, batch)))
            gradients = {key: backend.to_host(value) for key, value in model.named_gradients()}
            if name == "numpy":
                reference = {"loss": loss, **gradients}
                continue
            assert abs(loss - reference["loss"]) <= CROSS_BACKEND_TOLERANCE * max(1.0, abs(reference["loss"])), (
                f"{layer.describe()} on backend {name!r}: loss {loss!r}, the numpy backend's {reference['loss']!r}")
            for parameter, value in gradients.items():
                error = _worst(value, reference[parameter])
                assert error <= CROSS_BACKEND_TOLERANCE, (
                    f"{layer.describe()} on backend {name!r}: the gradient of {parameter} differs from the numpy "
                    f"backend's by {error:.3g} (relative; limit {CROSS_BACKEND_TOLERANCE:g})")
    with use_backend("numpy"):
        model = _model(layer, input_shape, seed)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "layer.safetensors")
            save(model, path)
            try:
                restored = load(path)
            except Exception as error:  # noqa: BLE001 - any failure to rebuild is the finding
                raise AssertionError(f"{layer.describe()}: a checkpoint of it does not load ({error}); register the "
                                     "class with toolkit.layers.register_layer and make get_config() return the "
                                     "arguments of __init__") from error
        before, after = model.predict(x), restored.predict(x)
        assert float(abs(before - after).max()) == 0.0, f"{layer.describe()}: predictions change across a checkpoint"
    return report
