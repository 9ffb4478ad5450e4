"""Host-side (NumPy) helpers shared by every backend: seeded random numbers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class HostRandom:
    """Draws on the host in float64 from one seeded ``numpy.random.Generator``, then moves the
    result with ``to_backend``: the same seed gives the same numbers on every backend."""

    def __init__(self, seed: int | None, to_backend: Callable[[Any, Any], Any]) -> None:
        self._generator = np.random.default_rng(seed)
        self._to_backend = to_backend

    def normal(self, shape: tuple[int, ...], std: float, dtype: Any) -> Any:
        return self._to_backend(self._generator.normal(0.0, std, size=shape), dtype)

    def uniform(self, shape: tuple[int, ...], low: float, high: float, dtype: Any) -> Any:
        return self._to_backend(self._generator.uniform(low, high, size=shape), dtype)

    def constant(self, shape: tuple[int, ...], value: float, dtype: Any) -> Any:
        return self._to_backend(np.full(shape, value), dtype)

    def permutation(self, n: int) -> Any:
        return self._to_backend(self._generator.permutation(n).astype(np.int64), None)

    def integers(self, high: int) -> int:
        return int(self._generator.integers(high))
