"""Weight initialisers. Each draws on the host from the model's seeded generator, so that
the same seed gives the same initial weights on every backend."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .backend import RandomSource
from .errors import InputError

Array = Any
Initializer = Callable[[RandomSource, tuple[int, ...], int, int, Any], Array]


def he_normal(rng: RandomSource, shape: tuple[int, ...], fan_in: int, fan_out: int, dtype: Any) -> Array:
    """N(0, 2 / fan_in): keeps the variance of ReLU activations constant across layers (He et al.)."""
    return rng.normal(shape, math.sqrt(2.0 / fan_in), dtype)


def xavier_uniform(rng: RandomSource, shape: tuple[int, ...], fan_in: int, fan_out: int, dtype: Any) -> Array:
    """U(−l, l), l = √(6 / (fan_in + fan_out)): Glorot & Bengio's choice for tanh and sigmoid."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(shape, -limit, limit, dtype)


def xavier_normal(rng: RandomSource, shape: tuple[int, ...], fan_in: int, fan_out: int, dtype: Any) -> Array:
    return rng.normal(shape, math.sqrt(2.0 / (fan_in + fan_out)), dtype)


def uniform(rng: RandomSource, shape: tuple[int, ...], fan_in: int, fan_out: int, dtype: Any) -> Array:
    """U(−1/√fan_in, 1/√fan_in), PyTorch's default for nn.Linear."""
    limit = 1.0 / math.sqrt(fan_in)
    return rng.uniform(shape, -limit, limit, dtype)


def small_normal(rng: RandomSource, shape: tuple[int, ...], fan_in: int, fan_out: int, dtype: Any) -> Array:
    """N(0, 0.02²), whatever the fan: GPT-2's initialisation of token and position embeddings."""
    return rng.normal(shape, 0.02, dtype)


def zeros(rng: RandomSource, shape: tuple[int, ...], fan_in: int, fan_out: int, dtype: Any) -> Array:
    return rng.constant(shape, 0.0, dtype)


INITIALIZERS: dict[str, Initializer] = {
    "he_normal": he_normal,
    "xavier_uniform": xavier_uniform,
    "glorot_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "uniform": uniform,
    "small_normal": small_normal,
    "zeros": zeros,
}


def get_initializer(name: str | Initializer) -> Initializer:
    if callable(name):
        return name
    if name not in INITIALIZERS:
        raise InputError(f"unknown initializer {name!r}; choose one of {sorted(INITIALIZERS)}")
    return INITIALIZERS[name]


def default_for(activation: str) -> str:
    """He for the ReLU family (and its smooth kin), Xavier for the saturating ones."""
    return "he_normal" if activation in ("relu", "leaky_relu", "gelu", "silu", "elu") else "xavier_uniform"
