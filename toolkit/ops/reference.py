"""Plain Array-API references of the named hot ops, and the table of output/loss pairs.

A backend (``toolkit.backend.Backend``) runs these unless it registered a faster kernel for the
op; the test suite checks every such kernel against the function here. Each reference is pure:
it returns new arrays and writes into nothing, so it also runs on immutable arrays (JAX).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import losses
from .activations import ActivationFunction
from .losses import count

Array = Any


@dataclass(frozen=True)
class OutputPair:
    """An output activation and a loss whose gradient with respect to Z collapses to
    δ_out = ŷ − y (scaled): backward starts there instead of chaining ∂J/∂ŷ through σ'.

    ``code`` numbers the pair in compiled kernels; this table is the only place pairs are listed.
    """

    name: str
    code: int
    activation: str


OUTPUT_PAIRS: dict[str, OutputPair] = {
    pair.name: pair for pair in (
        OutputPair("softmax_ce", 0, "softmax"),  # δ = (ŷ·Σₖyₖ − y) / N: ŷ − y when rows of y sum to 1
        OutputPair("sigmoid_bce", 1, "sigmoid"),  # δ = (ŷ − y) / (N·k)
        OutputPair("identity_mse", 2, "identity"),  # δ = 2 (ŷ − y) / (N·k)
    )
}


def bias_activation(z: Array, b: Array, activation: ActivationFunction, xp: Any) -> tuple[Array, Array]:
    """Forward of a dense layer after its matrix product: Z = z + b, A = σ(Z)."""
    z = z + b
    return z, activation.forward(z, xp)


def activation_backward(da: Array, z: Array, a: Array, activation: ActivationFunction, xp: Any) -> tuple[Array, Array]:
    """δ = dA ∘ σ'(Z), and the bias gradient db = Σ_rows δ."""
    dz = activation.backward(da, z, a, xp)
    return dz, xp.sum(dz, axis=0)


def output_delta(pair: str, z: Array, a: Array, y: Array, xp: Any) -> tuple[Array, Array]:
    """Loss value and δ_out for a matched output activation and loss (see ``OUTPUT_PAIRS``).

    The value is computed from the logits ``z`` (stable); ``a`` is σ(z) or softmax(z).
    """
    value = pair_loss(pair, z, a, y, xp)
    if losses.is_weighted(z, y):  # targets that carry sample weights (see ``toolkit.losses.Loss.weight_targets``)
        return value, (losses.weighted_bce_logits_grad(z, y, xp) if pair == "sigmoid_bce"
                       else losses.weighted_mse_grad(a, y, xp))
    if pair == "sigmoid_bce":
        return value, (a - y) / count(z)
    if pair == "softmax_ce":
        # ∂/∂z of −Σₖ yₖ log softmax(z)ₖ is ŷ·Σₖyₖ − y: the row sum keeps the gradient exact for
        # targets that are not distributions (multi-hot, scaled); it is ŷ − y when rows sum to 1.
        return value, (a * xp.sum(y, axis=-1, keepdims=True) - y) / losses.positions(z)
    return value, losses.mse_grad(a, y, xp)


def pair_loss(pair: str, z: Array, a: Array, y: Array, xp: Any) -> Array:
    """The loss of a pair, as training reports it: from the logits ``z`` for the cross-entropies
    (exact where ŷ has saturated: logits of ±1e4 give 1e4, not the clipped −log 1e-7)."""
    if losses.is_weighted(z, y) and pair != "softmax_ce":
        return losses.weighted_bce_logits_value(z, y, xp) if pair == "sigmoid_bce" else losses.weighted_mse_value(a, y, xp)
    if pair == "sigmoid_bce":
        return losses.bce_logits_value(z, y, xp)
    if pair == "softmax_ce":
        return losses.softmax_ce_logits_value(z, y, xp)
    if pair == "identity_mse":
        return losses.mse_value(a, y, xp)
    raise ValueError(f"unknown output/loss pair {pair!r}; expected one of {sorted(OUTPUT_PAIRS)}")


def layer_norm(x: Array, gamma: Array, beta: Array, eps: float, xp: Any) -> tuple[Array, Array, Array]:
    """(y, x̂, 1/√(σ² + ε)) of a layer normalisation over the last axis: x̂ = (x − μ)/√(σ² + ε), y = γ x̂ + β."""
    centered = x - xp.mean(x, axis=-1, keepdims=True)  # x − μ, per sample
    inv_std = 1.0 / xp.sqrt(xp.mean(centered * centered, axis=-1, keepdims=True) + eps)
    x_hat = centered * inv_std
    return gamma * x_hat + beta, x_hat, inv_std


def layer_norm_backward(dy: Array, x_hat: Array, inv_std: Array, gamma: Array, xp: Any) -> tuple[Array, Array, Array]:
    """(∂J/∂x, dγ, dβ) of ``layer_norm``: with g = dy ∘ γ,
    ∂J/∂x = (g − mean(g) − x̂ ∘ mean(g ∘ x̂)) / √(σ² + ε), means over the last axis; dγ = Σ dy ∘ x̂, dβ = Σ dy."""
    axes = tuple(range(dy.ndim - 1))
    g = dy * gamma
    dx = inv_std * (g - xp.mean(g, axis=-1, keepdims=True) - x_hat * xp.mean(g * x_hat, axis=-1, keepdims=True))
    return dx, xp.sum(dy * x_hat, axis=axes), xp.sum(dy, axis=axes)


def scatter_add_rows(ids: Array, values: Array, n_rows: int, xp: Any, device: Any = None) -> Array:
    """An (n_rows, width) matrix whose row r is the sum of the rows of ``values`` (P, width) at the
    positions p where ``ids[p] == r`` (the gradient of a table lookup; repeated ids accumulate).

    As a product with the one-hot matrix of the ids, ``onehot(ids)ᵀ values``: the standard has no
    scatter-add, and the product is exact (each output element is a sum of the selected values)."""
    rows = xp.arange(n_rows, dtype=ids.dtype, device=device)
    selects = xp.astype(ids[:, None] == rows, values.dtype)  # (P, n_rows), one 1 per row
    return xp.matmul(xp.matrix_transpose(selects), values)


def sum_rows(x: Array, xp: Any) -> Array:
    """Σ over the batch axis (the bias gradient of a layer fed δ directly)."""
    return xp.sum(x, axis=0)
