"""Activation functions a = σ(z) and their backward passes, on any Array API namespace.

Each activation is a forward/backward pair. The backward pass returns
``dZ = dA ∘ σ'(Z)``, the step of backpropagation that turns the gradient of
the loss with respect to a layer's output ``A`` into its error term ``δ``.
It is given both ``z`` and ``a = σ(z)`` because for most activations the
derivative is cheapest from the output (``σ' = a (1 − a)``, ``tanh' = 1 − a²``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InputError

Array = Any


def identity(z: Array, xp: Any) -> Array:
    return z


def identity_backward(da: Array, z: Array, a: Array, xp: Any) -> Array:
    return da


def sigmoid(z: Array, xp: Any) -> Array:
    """σ(z) = 1 / (1 + e^(−z)), computed from e^(−|z|) so that |z| = 1000 cannot overflow."""
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_backward(da: Array, z: Array, a: Array, xp: Any) -> Array:
    return da * a * (1.0 - a)


def tanh(z: Array, xp: Any) -> Array:
    return xp.tanh(z)


def tanh_backward(da: Array, z: Array, a: Array, xp: Any) -> Array:
    return da * (1.0 - a * a)


def relu(z: Array, xp: Any) -> Array:
    return xp.maximum(z, 0.0)  # the standard's maximum propagates NaN, so divergence stays visible


def relu_backward(da: Array, z: Array, a: Array, xp: Any) -> Array:
    # σ'(z) = 1 where z > 0, else 0 (also at exactly 0, as PyTorch and Keras take it). A multiply by
    # the mask is several times faster than xp.where on NumPy.
    return da * xp.astype(z > 0, da.dtype)


LEAKY_RELU_SLOPE = 0.01


def leaky_relu(z: Array, xp: Any, slope: float = LEAKY_RELU_SLOPE) -> Array:
    return xp.where(z > 0, z, slope * z)


def leaky_relu_backward(da: Array, z: Array, a: Array, xp: Any, slope: float = LEAKY_RELU_SLOPE) -> Array:
    return xp.where(z > 0, da, slope * da)


GELU_SCALE = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715


def _gelu_tanh(z: Array, xp: Any) -> Array:
    return xp.tanh(GELU_SCALE * (z + GELU_CUBIC * (z * z * z)))


def gelu(z: Array, xp: Any) -> Array:
    """GELU, tanh form (PyTorch's ``approximate="tanh"``; the standard has no erf):
    ½ z (1 + tanh(√(2/π) (z + 0.044715 z³))). At |z| = 1000 the tanh saturates to ±1: z or 0."""
    return 0.5 * z * (1.0 + _gelu_tanh(z, xp))


def gelu_backward(da: Array, z: Array, a: Array, xp: Any) -> Array:
    # σ'(z) = ½(1 + t) + ½ z (1 − t²) √(2/π) (1 + 3·0.044715 z²), t recomputed from z; where t
    # saturates, 1 − t² is exactly 0 and the large second term vanishes instead of overflowing.
    t = _gelu_tanh(z, xp)
    return da * (0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * (GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * (z * z))))


def silu(z: Array, xp: Any) -> Array:
    """SiLU (swish): z σ(z), with the overflow-safe sigmoid."""
    return z * sigmoid(z, xp)


def silu_backward(da: Array, z: Array, a: Array, xp: Any) -> Array:
    s = sigmoid(z, xp)
    return da * (s * (1.0 + z * (1.0 - s)))  # σ'(z) = σ (1 + z (1 − σ))


def elu(z: Array, xp: Any) -> Array:
    """ELU with α = 1: z for z > 0, e^z − 1 otherwise (expm1 of min(z, 0), so z = 1000 cannot overflow)."""
    return xp.where(z > 0, z, xp.expm1(xp.minimum(z, 0.0)))


def elu_backward(da: Array, z: Array, a: Array, xp: Any) -> Array:
    return xp.where(z > 0, da, da * (a + 1.0))  # σ'(z) = e^z = a + 1 for z ≤ 0


def softplus(z: Array, xp: Any) -> Array:
    """log(1 + e^z) = max(z, 0) + log1p(e^(−|z|)): no overflow at z = 1000, no loss of digits at −1000."""
    return xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))


def softplus_backward(da: Array, z: Array, a: Array, xp: Any) -> Array:
    return da * sigmoid(z, xp)  # σ'(z) = sigmoid(z)


def softmax(z: Array, xp: Any) -> Array:
    """Row-wise softmax; the row maximum is subtracted first so large logits cannot overflow."""
    shifted = z - xp.max(z, axis=-1, keepdims=True)
    e = xp.exp(shifted)
    return e / xp.sum(e, axis=-1, keepdims=True)


def softmax_backward(da: Array, z: Array, a: Array, xp: Any) -> Array:
    # Jacobian-vector product of softmax: a ∘ (dA − Σ_j dA_j a_j), one row per sample.
    return a * (da - xp.sum(da * a, axis=-1, keepdims=True))


@dataclass(frozen=True)
class ActivationFunction:
    """A named activation: ``forward(z, xp)`` and ``backward(da, z, a, xp) -> dz``.

    ``code`` is its number in the compiled kernels (numba, CUDA), which branch on it; the
    table below is the only place codes are assigned.
    """

    name: str
    code: int
    forward: Callable[..., Array]
    backward: Callable[..., Array]
    elementwise: bool = True


_TABLE = [
    ("identity", identity, identity_backward, True),
    ("sigmoid", sigmoid, sigmoid_backward, True),
    ("tanh", tanh, tanh_backward, True),
    ("relu", relu, relu_backward, True),
    ("leaky_relu", leaky_relu, leaky_relu_backward, True),
    ("softmax", softmax, softmax_backward, False),
    ("gelu", gelu, gelu_backward, True),
    ("silu", silu, silu_backward, True),
    ("elu", elu, elu_backward, True),
    ("softplus", softplus, softplus_backward, True),
]
ACTIVATIONS: dict[str, ActivationFunction] = {
    name: ActivationFunction(name, code, forward, backward, elementwise)
    for code, (name, forward, backward, elementwise) in enumerate(_TABLE)
}
CODES: dict[str, int] = {name: function.code for name, function in ACTIVATIONS.items()}
_ALIASES = {None: "identity", "linear": "identity"}


def get_activation(name: str | None) -> ActivationFunction:
    """Look an activation up by name (``None`` and ``"linear"`` mean identity)."""
    key = _ALIASES.get(name, name)
    if key not in ACTIVATIONS:
        raise InputError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)} (or None for identity)"
        )
    return ACTIVATIONS[key]
