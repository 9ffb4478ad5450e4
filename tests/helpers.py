"""Shared checks: values against NumPy expectations, gradients against float64 finite
differences, every backend against the NumPy backend."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import toolkit
from toolkit import Dense, Sequential

TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-300)
    return float(np.max(np.abs(a - b)) / scale)


def numeric_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of a scalar function of a float64 array."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + eps
        plus = f(x)
        x[index] = original - eps
        minus = f(x)
        x[index] = original
        grad[index] = (plus - minus) / (2 * eps)
    return grad


def build_mlp(widths, activations, loss, dtype="float64", seed=7, optimizer="sgd", backend=None):
    """An MLP with the given widths (input first) and activations, compiled with ``loss``."""
    layers = [Dense(widths[i + 1], activation=activations[i], input_dim=widths[0] if i == 0 else None)
              for i in range(len(widths) - 1)]
    model = Sequential(layers, dtype=dtype, seed=seed, backend=backend)
    model.compile(loss=loss, optimizer=optimizer)
    return model


def gradients_on(spec: str, widths, activations, loss, x, y, dtype="float64", seed=7) -> dict[str, np.ndarray]:
    """Loss gradients of a seeded model on backend ``spec``, as host arrays."""
    with toolkit.use_backend(spec) as backend:
        model = build_mlp(widths, activations, loss, dtype=dtype, seed=seed)
        xb = model.as_input(x)
        loss_value = model.compute_gradients(xb, model.prepare_targets(y, xb.shape[0]))
        grads = {name: np.array(backend.to_host(g)) for name, g in model.named_gradients()}
        grads["loss"] = np.array(float(loss_value))
        return grads


def assert_fit_follows_reference(make_model: Callable[[bool], toolkit.Sequential], loss: str, x, y, epochs: int) -> None:
    """``fit`` (Adam, batch 16, seed 1) of ``make_model(fused=True)`` (a backend's compiled runner) and of
    ``make_model(fused=False)`` (the engine's loop) ends with the same accuracies and weights (≤ 1e-10)."""
    trained = []
    for fused in (True, False):
        model = make_model(fused)
        model.compile(loss=loss, optimizer="adam", metrics=["accuracy"])
        history = model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, seed=1)
        trained.append((model.get_weights(), history.history["accuracy"]))
    (fast, fast_accuracy), (reference, reference_accuracy) = trained
    assert fast_accuracy == reference_accuracy
    for name in reference:
        assert relative_error(fast[name], reference[name]) <= 1e-10
