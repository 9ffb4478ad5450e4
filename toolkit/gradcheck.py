"""A public finite-difference gradient checker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:
    from .model import Sequential


NOISE_FLOOR = 1e-6


def gradcheck(model: Sequential, x: Any, y: Any, eps: float = 1e-6) -> dict[str, float]:
    """Compare backpropagation with central differences (J(θ+ε) − J(θ−ε)) / 2ε, element by element.

    Layers run in training mode with one fixed context: dropout keeps one mask for every
    evaluation, BatchNorm uses the batch's statistics; the model's state is left as it was.
    The model must be float64 (float32 round-off swamps the difference quotient) and compiled
    with a loss. Returns, per parameter name, the worst relative error
    ``max|g_backprop − g_numeric| / max(max|g_backprop|, max|g_numeric|, 1e-6)``; values around 1e-8
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
    backend = model.backend
    x = model.as_input(x)
    y = model.prepare_targets(y, x.shape[0])
    context = model.training_context()
    model._gradients(x, y, context)
    analytic = {name: backend.to_host(g).copy() for name, g in model.named_gradients()}
    original = backend.to_host(model.flat_params).copy()

    def loss_at(flat: Any) -> float:
        model.assign_params(backend.asarray(flat, dtype=model.dtype))
        return float(model._gradients(x, y, context)[0])

    worst: dict[str, float] = {}
    try:
        for slot in model.table.slots:
            numeric = analytic[slot.key].reshape(-1).copy()
            for i in range(slot.size):
                perturbed = original.copy()
                perturbed[slot.offset + i] = original[slot.offset + i] + eps
                plus = loss_at(perturbed)
                perturbed[slot.offset + i] = original[slot.offset + i] - eps
                numeric[i] = (plus - loss_at(perturbed)) / (2 * eps)
            exact = analytic[slot.key].reshape(-1)
            # Below NOISE_FLOOR the difference quotient is round-off: compare absolutely there
            # (an attention layer's key bias has an exact gradient of 0, its quotient ~1e-11).
            scale = max(abs(exact).max(), abs(numeric).max(), NOISE_FLOOR)
            worst[slot.key] = float(abs(exact - numeric).max() / scale)
    finally:
        model.assign_params(backend.asarray(original, dtype=model.dtype))
        model._gradients(x, y, context)  # leave the analytic gradients in place
    return worst
