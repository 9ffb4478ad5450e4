"""A public finite-difference gradient checker."""

from __future__ import annotations

from typing import Any

from .errors import InputError


def gradcheck(model: Any, x: Any, y: Any, eps: float = 1e-6) -> dict[str, float]:
    """Compare backpropagation with central differences (J(θ+ε) − J(θ−ε)) / 2ε, element by element.

    The model must be float64 (float32 round-off swamps the difference quotient) and compiled
    with a loss. Returns, per parameter name, the worst relative error
    ``max|g_backprop − g_numeric| / max(max|g_backprop|, max|g_numeric|)``; values around 1e-8
    or below mean the analytic gradient is right. Costs two forward passes per parameter
    element: use it on small models.

    Example:
        >>> from toolkit import Dense, Sequential, gradcheck
        >>> model = Sequential([Dense(3, activation="tanh", input_dim=2), Dense(1)], dtype="float64")
        >>> model.compile(loss="mse")
        >>> max(gradcheck(model, [[0.5, -1.0]], [[0.25]]).values()) < 1e-7
        True
    """
    if model.dtype_name != "float64":
        raise InputError(f"gradcheck needs a float64 model (Sequential(..., dtype='float64')); got {model.dtype_name}")
    backend, xp = model.backend, model.backend.xp
    x = model.as_input(x)
    y = model.prepare_targets(y, x.shape[0])
    model.compute_gradients(x, y)
    analytic = {name: backend.to_host(g).copy() for name, g in model.named_gradients()}
    worst: dict[str, float] = {}
    for name, param in model.named_parameters():
        flat = xp.reshape(param, (-1,))  # a view: writing into it perturbs the model
        numeric = analytic[name].reshape(-1).copy()
        for i in range(flat.shape[0]):
            original = float(flat[i])
            flat[i] = original + eps
            plus = float(model.compute_gradients(x, y))
            flat[i] = original - eps
            minus = float(model.compute_gradients(x, y))
            flat[i] = original
            numeric[i] = (plus - minus) / (2 * eps)
        exact = analytic[name].reshape(-1)
        scale = max(abs(exact).max(), abs(numeric).max(), 1e-300)
        worst[name] = float(abs(exact - numeric).max() / scale)
    model.compute_gradients(x, y)  # leave the analytic gradients in place
    return worst
