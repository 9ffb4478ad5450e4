"""The default backend: NumPy arrays through array-api-compat's namespace.

Beyond the references it writes products and sums straight into their destination (``out=``),
runs SGD and Adam as ufuncs into one reused scratch array, and takes image windows as strided
views (``backends.strided_windows``)."""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.numpy as xp_numpy
import numpy as np

from toolkit.backend import Backend
from toolkit.errors import BackendError
from toolkit.ops.optim import CLIP_EPSILON

from . import allocator, cpu_threads
from .host import HostRandom, UpdateScratch, host_array
from .strided_windows import StridedWindows


class NumpyBackend(StridedWindows, Backend):
    name = "numpy"
    array_module = np

    def __init__(self, device: Any = None, fused: bool = True) -> None:
        if device not in (None, "cpu"):
            raise BackendError(f"backend {self.name!r} runs on the CPU only; got device {device!r}")
        allocator.keep_freed_memory()  # a step's temporaries stay in the heap (``backends.allocator``)
        self._update_scratch = UpdateScratch(allocator.long_lived_like)
        self._clip_scratch = UpdateScratch(allocator.long_lived_like)  # its own: the update kernels use theirs meanwhile
        super().__init__(xp_numpy, "cpu", fused)

    def register_kernels(self) -> None:
        self.update_kernels = {"sgd": self._sgd, "adam": self._adam}

    def clip_gradients(self, grads, clipping, segments):
        # The reference's arithmetic without its temporaries: a global norm's factor from one dot
        # product, left to the update kernel; per-tensor factors written into a reused buffer, and no
        # copy at all when nothing clips (the usual step once training settles).
        kind, limit = clipping
        if kind == "clipvalue":
            return np.clip(grads, -limit, limit, out=self._clip_scratch.like(grads)), 1.0
        if kind == "global_clipnorm":
            return grads, self._norm_scale(grads, limit)
        scales = [self._norm_scale(grads[offset : offset + size], limit) for offset, size in segments]
        if all(scale == 1.0 for scale in scales):
            return grads, 1.0
        out = self._clip_scratch.like(grads)
        for (offset, size), scale in zip(segments, scales, strict=True):
            np.multiply(grads[offset : offset + size], grads.dtype.type(scale), out=out[offset : offset + size])
        return out, 1.0

    @staticmethod
    def _norm_scale(grads: np.ndarray, limit: float) -> float:
        # ``toolkit.ops.optim.norm_scale`` on the host: in Python floats it costs 1 µs, not 20
        return min(1.0, limit / (math.sqrt(float(np.vecdot(grads, grads))) + CLIP_EPSILON))

    def thread_tuner(self) -> Any:
        return cpu_threads.tuner()  # BLAS threads chosen by measuring (``toolkit_backends.cpu_threads``)

    def is_native(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        return host_array(x, self.name, dtype)

    def to_host(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def random(self, seed: int | None) -> HostRandom:
        return HostRandom(seed, self.asarray)

    def zeros(self, shape: tuple[int, ...] | int, dtype: Any) -> np.ndarray:
        return allocator.long_lived_zeros(shape, dtype)

    def quiet(self) -> Any:
        return np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore")

    # Products and sums written straight into the flat gradient buffer: the generic path builds
    # the result first and then copies it.
    def matmul(self, a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.matmul(a, b, out=out)

    def sum_rows(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.sum(x, axis=0, out=out)

    # Optimizer updates with ufuncs writing into one reused scratch array: the reference's
    # temporaries, each as large as the whole model, cost a page-faulting allocation apiece.
    # NumPy computes here, so its floating-point warnings are silenced here (``quiet``): a diverging
    # step says so through its loss.
    def _sgd(self, param: np.ndarray, grad: np.ndarray, grad_scale: float, lr: float) -> None:
        with self.quiet():
            step = self._update_scratch.like(param)
            if grad_scale != 1.0:
                grad = np.multiply(grad, grad.dtype.type(grad_scale), out=step)
            np.multiply(grad, lr, out=step)
            np.subtract(param, step, out=param)

    def _adam(self, param, grad, m, v, grad_scale, step_size, beta1, beta2, eps, shrink, l2, sqrt_correction2) -> None:
        with self.quiet():
            self._adam_steps(param, grad, m, v, grad_scale, step_size, beta1, beta2, eps, shrink, l2, sqrt_correction2)

    def _adam_steps(self, param, grad, m, v, grad_scale, step_size, beta1, beta2, eps, shrink, l2,
                    sqrt_correction2) -> None:
        scratch = self._update_scratch.like(param)
        if shrink != 1.0:
            np.multiply(param, shrink, out=param)
        if grad_scale != 1.0:
            grad = grad * grad.dtype.type(grad_scale)
        if l2:
            grad = grad + l2 * param
        np.multiply(m, beta1, out=m)  # m ← β₁m + (1−β₁)g
        m += np.multiply(grad, 1.0 - beta1, out=scratch)
        np.multiply(v, beta2, out=v)  # v ← β₂v + (1−β₂)g²
        np.multiply(grad, grad, out=scratch)
        scratch *= 1.0 - beta2
        v += scratch
        np.sqrt(v, out=scratch)  # √v / √c₂ + ε
        scratch /= sqrt_correction2
        scratch += eps
        np.divide(m, scratch, out=scratch)  # θ ← θ − (η / c₁) · m / (…)
        scratch *= step_size
        param -= scratch
