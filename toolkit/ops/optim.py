"""Optimizer update rules on flat parameter buffers, written as PyTorch documents them
(torch.optim.SGD, Adam, AdamW, RMSprop), so the same hyper-parameters give the same
trajectory. Each updates ``param`` and its state arrays in place; ``step`` counts from 1.
"""

from __future__ import annotations

import math
from typing import Any

Array = Any


def sgd_momentum_update(
    param: Array, grad: Array, velocity: Array, lr: float, momentum: float,
    dampening: float, nesterov: bool, weight_decay: float, step: int, xp: Any,
) -> None:
    """g ← g + λθ; v ← μ v + (1 − τ) g (v ← g on step 1); θ ← θ − η (g + μ v if Nesterov else v)."""
    if weight_decay:
        grad = grad + weight_decay * param
    if step == 1:
        velocity[...] = grad
    else:
        velocity[...] = momentum * velocity + (1.0 - dampening) * grad
    direction = grad + momentum * velocity if nesterov else velocity
    param -= lr * direction


def adam_update(
    param: Array, grad: Array, m: Array, v: Array, lr: float, beta1: float, beta2: float,
    eps: float, weight_decay: float, decoupled: bool, step: int, xp: Any,
) -> None:
    """Adam (L2 decay added to g) or AdamW (decoupled: θ ← θ (1 − ηλ)), with bias correction:
    m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  θ ← θ − η m̂ / (√v̂ + ε).

    Evaluated as PyTorch does, θ ← θ − (η / c₁) · m / (√v / √c₂ + ε) with cₖ = 1 − βₖᵗ:
    the same number, with one division per element fewer."""
    if weight_decay and decoupled:
        param *= 1.0 - lr * weight_decay
    elif weight_decay:
        grad = grad + weight_decay * param
    m[...] = beta1 * m + (1.0 - beta1) * grad
    v[...] = beta2 * v + (1.0 - beta2) * (grad * grad)
    step_size, sqrt_correction2 = adam_step_constants(lr, beta1, beta2, step)
    denominator = xp.sqrt(v) / sqrt_correction2 + eps
    param -= step_size * (m / denominator)


def adam_step_constants(lr: float, beta1: float, beta2: float, step: int) -> tuple[float, float]:
    """(η / (1 − β₁ᵗ), √(1 − β₂ᵗ)): the bias corrections folded into two scalars."""
    return lr / (1.0 - beta1**step), math.sqrt(1.0 - beta2**step)


def rmsprop_update(
    param: Array, grad: Array, square_avg: Array, lr: float, alpha: float, eps: float,
    weight_decay: float, step: int, xp: Any,
) -> None:
    """s ← α s + (1 − α) g²;  θ ← θ − η g / (√s + ε)."""
    if weight_decay:
        grad = grad + weight_decay * param
    square_avg[...] = alpha * square_avg + (1.0 - alpha) * (grad * grad)
    param -= lr * grad / (xp.sqrt(square_avg) + eps)
