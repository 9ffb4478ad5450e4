"""Plain Array-API references for the named hot ops that a backend may replace with fused kernels.

A backend (``toolkit.backend.Backend``) calls these unless it has a faster kernel of
its own; the test suite checks every such kernel against the function here. Ops that
take an ``out`` array write their result into it (it is a view into the model's flat
gradient buffer); the others return new arrays.
"""

from __future__ import annotations

from typing import Any

from . import losses
from .activations import Activation

Array = Any

# Output layer + loss pairs whose gradient with respect to Z collapses to δ_out = (ŷ − y) / N.
# A linear output with MSE has δ_out = 2 (ŷ − y) / (N·k), computed in the same single pass.
OUTPUT_DELTA_PAIRS = ("sigmoid_bce", "softmax_ce", "identity_mse")


def bias_activation(z: Array, b: Array, activation: Activation, xp: Any) -> tuple[Array, Array]:
    """Forward of a dense layer after its matrix product: Z = z + b, A = σ(Z)."""
    z = z + b
    return z, activation.forward(z, xp)


def activation_backward(
    da: Array, z: Array, a: Array, activation: Activation, db_out: Array, xp: Any
) -> Array:
    """δ = dA ∘ σ'(Z), and the bias gradient db = Σ_rows δ written into ``db_out``."""
    dz = activation.backward(da, z, a, xp)
    db_out[...] = xp.sum(dz, axis=0)
    return dz


def output_delta(pair: str, z: Array, a: Array, y: Array, xp: Any) -> tuple[Array, Array]:
    """Loss value and δ_out = (ŷ − y) / N for a matched output activation and loss.

    The value is computed from the logits ``z`` (stable); ``a`` is σ(z) or softmax(z).
    """
    if pair == "sigmoid_bce":
        return losses.bce_logits_value(z, y, xp), (a - y) / z.size
    if pair == "softmax_ce":
        return losses.softmax_ce_logits_value(z, y, xp), (a - y) / z.shape[0]
    if pair == "identity_mse":
        return losses.mse_value(a, y, xp), losses.mse_grad(a, y, xp)
    raise ValueError(f"unknown output/loss pair {pair!r}; expected one of {OUTPUT_DELTA_PAIRS}")


def matmul_into(a: Array, b: Array, out: Array, xp: Any) -> Array:
    out[...] = a @ b
    return out


def sum_rows_into(x: Array, out: Array, xp: Any) -> Array:
    out[...] = xp.sum(x, axis=0)
    return out


def sgd_update(param: Array, grad: Array, lr: float, xp: Any) -> None:
    """θ ← θ − η ∇θ, in place."""
    param -= lr * grad
