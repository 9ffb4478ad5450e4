"""array-api-strict: a minimal implementation of the standard, for tests.

Running the suite on it proves toolkit/ uses nothing outside the standard; on one of its
simulated devices (``array_api_strict:device1``) it also catches every array created on the
wrong device, the bug a GPU would show, without a GPU.
"""

from __future__ import annotations

from typing import Any

import array_api_strict as xp_strict
import numpy as np
from array_api_strict._array_object import Array as StrictArray

from toolkit.backend import Backend
from toolkit.errors import BackendError, InputError

from .host import HostRandom, host_array


class StrictBackend(Backend):
    name = "array_api_strict"

    def __init__(self, device: Any = None, fused: bool = True) -> None:
        devices = {str(d).split("'")[1]: d for d in xp_strict.__array_namespace_info__().devices()}
        chosen = device or "CPU_DEVICE"
        if chosen not in devices:
            raise BackendError(f"array_api_strict has no device {chosen!r}; choose one of {sorted(devices)}")
        super().__init__(xp_strict, devices[chosen], fused)

    def is_native(self, x: Any) -> bool:
        return isinstance(x, StrictArray) and x.device == self.device

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        if isinstance(x, StrictArray):
            if x.device != self.device:
                x = xp_strict.asarray(x, copy=True, device=self.device)  # stands for a device copy
            return x if dtype is None else xp_strict.astype(x, dtype)
        host = host_array(x, self.name)
        try:
            return xp_strict.asarray(host, dtype=dtype, device=self.device)
        except TypeError as error:
            raise InputError(f"array of dtype {host.dtype} is not supported by backend {self.name!r}: {error}") from error

    def to_host(self, x: Any) -> np.ndarray:
        if isinstance(x, StrictArray):
            # The strict namespace refuses implicit conversions; go through the CPU device explicitly.
            return np.asarray(x.to_device(xp_strict.Device("CPU_DEVICE")))
        return np.asarray(x)

    def quiet(self) -> Any:
        return np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore")  # NumPy underneath

    def random(self, seed: int | None) -> HostRandom:
        return HostRandom(seed, self.asarray)
