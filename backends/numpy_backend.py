"""The default backend: NumPy arrays through array-api-compat's namespace."""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as xp_numpy
import numpy as np

from toolkit.backend import Backend
from toolkit.errors import BackendError, InputError
from toolkit.ops import optim

from .host import HostRandom


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self, device: Any = None, fused: bool = True) -> None:
        if device not in (None, "cpu"):
            raise BackendError(f"backend {self.name!r} runs on the CPU only; got device {device!r}")
        super().__init__(xp_numpy, "cpu", fused)
        self._scratch: dict[int, np.ndarray] = {}

    def _scratch_like(self, param: np.ndarray) -> np.ndarray:
        buffer = self._scratch.get(id(param))
        if buffer is None or buffer.shape != param.shape or buffer.dtype != param.dtype:
            buffer = self._scratch[id(param)] = np.empty_like(param)
        return buffer

    def is_native(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        if hasattr(x, "__cuda_array_interface__") and hasattr(x, "get"):
            x = x.get()  # a CuPy array: an explicit device-to-host copy
        try:
            return np.asarray(x, dtype=dtype)
        except (TypeError, ValueError, RuntimeError) as error:
            device = getattr(x, "device", "unknown")
            raise InputError(
                f"backend {self.name!r} cannot take an array of type {type(x).__name__} on device {device}: {error}. "
                "Move it to the host first (or build the model on that array's backend)"
            ) from error

    def to_host(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def random(self, seed: int | None) -> HostRandom:
        return HostRandom(seed, self.asarray)

    # NumPy can write a product or a sum straight into the flat gradient buffer; the generic
    # ``out[...] = a @ b`` would build the result first and then copy it.
    def matmul_into(self, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
        if not self.fused:
            return super().matmul_into(a, b, out)
        return np.matmul(a, b, out=out)

    def sum_rows_into(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        if not self.fused:
            return super().sum_rows_into(x, out)
        return np.sum(x, axis=0, out=out)

    # Optimizer updates with ufuncs writing into one reused scratch array: the reference's
    # temporaries, each as large as the whole model, cost a page-faulting allocation apiece.
    def sgd_update(self, param: np.ndarray, grad: np.ndarray, lr: float) -> None:
        if not self.fused:
            return super().sgd_update(param, grad, lr)
        step = np.multiply(grad, lr, out=self._scratch_like(param))
        np.subtract(param, step, out=param)

    def adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
        if not self.fused or (weight_decay and not decoupled):
            return super().adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step)
        scratch = self._scratch_like(param)
        if weight_decay:
            np.multiply(param, 1.0 - lr * weight_decay, out=param)
        np.multiply(m, beta1, out=m)  # m ← β₁m + (1−β₁)g
        m += np.multiply(grad, 1.0 - beta1, out=scratch)
        np.multiply(v, beta2, out=v)  # v ← β₂v + (1−β₂)g²
        np.multiply(grad, grad, out=scratch)
        scratch *= 1.0 - beta2
        v += scratch
        step_size, sqrt_correction2 = optim.adam_step_constants(lr, beta1, beta2, step)
        np.sqrt(v, out=scratch)  # √v / √c₂ + ε
        scratch /= sqrt_correction2
        scratch += eps
        np.divide(m, scratch, out=scratch)  # θ ← θ − (η / c₁) · m / (…)
        scratch *= step_size
        param -= scratch
