"""The default backend: NumPy arrays through array-api-compat's namespace."""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as xp_numpy
import numpy as np

from toolkit.backend import Backend
from toolkit.errors import BackendError

from .host import HostRandom


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self, device: Any = None, fused: bool = True) -> None:
        if device not in (None, "cpu"):
            raise BackendError(f"backend {self.name!r} runs on the CPU only; got device {device!r}")
        super().__init__(xp_numpy, "cpu", fused)

    def is_native(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        if hasattr(x, "__cuda_array_interface__") or hasattr(x, "get"):
            x = x.get()  # a CuPy array: an explicit device-to-host copy
        return np.asarray(x, dtype=dtype)

    def to_host(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def random(self, seed: int | None) -> HostRandom:
        return HostRandom(seed, self.asarray)
