"""The attention weights of scaled dot-product attention: a softmax over each row of scores that
leaves out masked entries, and its backward.

    P[i, j] = exp(S[i, j] − m_i) / Σ_{j' allowed} exp(S[i, j'] − m_i)   for allowed j, 0 for masked j
    backward (per row):  dS = P ∘ (dP − Σ_j dP ∘ P)

``m_i`` is the row's largest allowed score, so no exponential overflows. A row with no allowed
entry (impossible with a causal mask, whose diagonal is always allowed) gets P = 0: it attends to
nothing, its output is the output projection's bias, and no gradient flows through it; never NaN.
"""

from __future__ import annotations

from typing import Any

Array = Any


def causal_mask(length: int, xp: Any, device: Any = None) -> Array:
    """(T, T) booleans, True where query i may look at key j (j ≤ i)."""
    positions = xp.arange(length, device=device)
    return positions[:, None] >= positions[None, :]


def masked_softmax(scores: Array, allowed: Array | None, xp: Any) -> Array:
    """Softmax over the last axis of ``scores``, restricted to ``allowed`` (broadcast; None: all)."""
    if allowed is not None:
        scores = xp.where(allowed, scores, -xp.inf)
    row_max = xp.max(scores, axis=-1, keepdims=True)
    row_max = xp.where(xp.isfinite(row_max), row_max, 0.0)  # a fully masked row: every exp below is exp(−inf) = 0
    weights = xp.exp(scores - row_max)
    total = xp.sum(weights, axis=-1, keepdims=True)
    return weights / xp.where(total > 0.0, total, 1.0)


def softmax_backward(dp: Array, p: Array, xp: Any) -> Array:
    """dS = P ∘ (dP − Σ_j dP ∘ P), row by row (0 wherever P is 0, masked entries included)."""
    return p * (dp - xp.sum(dp * p, axis=-1, keepdims=True))
