"""A counter-based random generator: the bits of element ``i`` are a hash of (seed, step, layer, i).

Dropout needs a fresh mask every step that is the same on every backend for the same seed, costs
no host-to-device copy per step, and, in data-parallel training, lets each process draw exactly
its rows of the one-process mask. A counter-based generator gives all three: nothing is stored
but a step counter, and every element's bits are a pure function of its global index.

    step key   k_s = mix(mix(seed) ^ mix(step))                       (host: Python ints)
    layer key  k_l = mix(k_s ^ stream · φ)                            (one per Dropout layer)
    bits of i  b_i = mix(mix(i ^ k_l) + k_l)       i = global row · features + feature

``mix`` is a 32-bit integer finaliser (xor-shift, multiply) over values in [0, 2³²). It uses only
the standard's int64 arithmetic and bitwise operators, with multipliers below 2³¹ so that no
product overflows int64: the same function runs on Python ints (the host keys), on any Array API
namespace (the reference mask) and in the numba and CUDA kernels (unsigned 32-bit arithmetic,
whose wrap-around equals the mask ``& MASK``). An element is kept when ``b_i ≥ ⌊rate · 2³²⌋``.
"""

from __future__ import annotations

import math
from typing import Any

Array = Any

MASK = 0xFFFFFFFF
MULTIPLIERS = (0x7FEB352D, 0x6C8E9CF5, 0x5BD1E995)  # odd, < 2³¹: products of 32-bit values fit int64
GOLDEN = 0x1E3779B9  # spreads consecutive stream numbers apart


def mix(h: Any) -> Any:
    """A 32-bit finaliser of ``h`` in [0, 2³²) (a Python int or an int64 array, element-wise)."""
    for multiplier in MULTIPLIERS:
        h = h ^ (h >> 16)
        h = (h * multiplier) & MASK
    return h ^ (h >> 15)


def step_key(seed: int, step: int) -> int:
    """The key of training step ``step`` of a model seeded ``seed`` (host side, a Python int)."""
    return mix(mix(seed & MASK) ^ mix(step & MASK) ^ ((seed >> 32) & MASK))


def layer_key(key: Any, stream: int) -> Any:
    """A layer's key from the step key (a Python int, or a 0-d int64 array in a compiled step)."""
    return mix(key ^ ((stream * GOLDEN) & MASK))


def threshold(rate: float) -> int:
    """Elements whose bits are below this are dropped: P(drop) = ⌊rate · 2³²⌋ / 2³²."""
    return math.floor(rate * 2**32)


def bits(index: Array, key: Any) -> Array:
    """The random bits of global element indices ``index`` (int64) under a layer key."""
    return mix((mix(index ^ key) + key) & MASK)


def dropout_mask(key: Any, stream: int, shape: tuple[int, ...], first_row: int, rate: float, dtype: Any,
                 xp: Any, device: Any = None) -> Array:
    """The inverted-dropout mask of a batch: 0 where dropped, 1/(1 − rate) where kept.

    Row r of the batch is row ``first_row + r`` of the global batch, so processes that each hold
    their rows draw together the mask one process draws for the whole batch."""
    per_row = math.prod(shape[1:])
    start = first_row * per_row
    # start + arange, not arange(start, …): inside a compiled pass ``first_row`` may be traced
    index = xp.arange(math.prod(shape), dtype=xp.int64, device=device) + start
    kept = bits(index, layer_key(key, stream)) >= threshold(rate)
    return xp.reshape(xp.astype(kept, dtype) * (1.0 / (1.0 - rate)), shape)
