"""CuPy backend: arrays on a CUDA GPU, with fused elementwise kernels for the hot ops.

Device ``cupy:N`` picks GPU N (default 0) and makes it current. Memory comes from CuPy's
memory pool, which keeps freed blocks for reuse: ``cupy.get_default_memory_pool().free_all_blocks()``
returns them to the driver.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Any

import array_api_compat.cupy as xp_cupy
import cupy
import cupy.lib.stride_tricks  # noqa: F401 - StridedWindows reaches it as cupy.lib.stride_tricks
import cupyx
import numpy as np

from toolkit.backend import Backend
from toolkit.errors import BackendError
from toolkit.ops import random
from toolkit.ops.activations import LEAKY_RELU_SLOPE, ActivationFunction

from . import cuda_sources as cuda
from .cuda_sources import CUDA_ACTIVATIONS
from .host import HostRandom, host_array
from .strided_windows import StridedWindows


def _kernel(spec: cuda.ElementwiseSpec) -> cupy.ElementwiseKernel:
    """The CuPy kernel of a spec of ``cuda_sources`` (whose bodies the tests also compile as C++)."""
    return cupy.ElementwiseKernel(spec.in_params, spec.out_params, spec.body, spec.name)


_bias_activation = _kernel(cuda.BIAS_ACTIVATION)
_activation_backward = _kernel(cuda.ACTIVATION_BACKWARD)
_dropout_mask = _kernel(cuda.DROPOUT)
_sgd = _kernel(cuda.SGD)
_sgd_momentum = _kernel(cuda.SGD_MOMENTUM)
_adam = _kernel(cuda.ADAM)
_rmsprop = _kernel(cuda.RMSPROP)


class CupyBackend(StridedWindows, Backend):
    name = "cupy"
    reads_are_cheap = False  # a read waits for the GPU
    array_module = cupy

    def __init__(self, device: Any = None, fused: bool = True) -> None:
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except cupy.cuda.runtime.CUDARuntimeError as error:
            raise BackendError(
                f"backend 'cupy' is installed but cannot reach a CUDA GPU ({error}); "
                "run on a machine with an NVIDIA GPU and driver, or choose numpy or numba"
            ) from error
        index = int(device) if device not in (None, "") else 0
        if not 0 <= index < count:
            raise BackendError(f"backend 'cupy' has GPUs 0..{count - 1}; device {index} does not exist")
        self.gpu = cupy.cuda.Device(index)
        self.gpu.use()
        self._streams = threading.local()
        super().__init__(xp_cupy, self.gpu, fused)

    low_precision = ("float16",)  # CuPy has no bfloat16

    def low_precision_dtype(self, name: str) -> Any:
        return getattr(cupy, name)

    def is_native(self, x: Any) -> bool:
        return isinstance(x, cupy.ndarray) and x.device.id == self.gpu.id

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        with self.gpu:
            if isinstance(x, cupy.ndarray):
                return cupy.asarray(x, dtype=dtype)
            return cupy.asarray(host_array(x, self.name), dtype=dtype)  # one explicit host-to-device copy

    def to_host(self, x: Any) -> np.ndarray:
        return cupy.asnumpy(x)

    def random(self, seed: int | None) -> HostRandom:
        return HostRandom(seed, self.asarray)

    def zeros(self, shape: tuple[int, ...] | int, dtype: Any) -> Any:
        with self.gpu:
            return cupy.zeros(shape, dtype=dtype)

    def synchronize(self) -> None:
        self.gpu.synchronize()

    @contextlib.contextmanager
    def transfer_stream(self):
        # One non-blocking stream per prefetch thread: its host-to-device copies overlap the
        # step's kernels on the main stream; synchronised before the batch is handed over.
        stream = getattr(self._streams, "stream", None)
        if stream is None:
            with self.gpu:
                stream = self._streams.stream = cupy.cuda.Stream(non_blocking=True)
        with self.gpu, stream:
            yield
        stream.synchronize()

    # -- fused kernels -------------------------------------------------------------------
    def register_kernels(self) -> None:
        # ``grad_scale``: 1.0, or a global clipping norm's factor as a 0-d device array; that one is
        # multiplied in first, since reading it on the host would wait for the device every step.
        def host_scale(grad, grad_scale):
            return (grad, grad_scale) if isinstance(grad_scale, float) else (grad * grad_scale, 1.0)

        def sgd(param, grad, grad_scale, lr):
            grad, grad_scale = host_scale(grad, grad_scale)
            t = param.dtype.type
            _sgd(grad, t(grad_scale), t(lr), param)

        def sgd_momentum(param, grad, velocity, grad_scale, lr, momentum, carry, gain, nesterov, weight_decay):
            grad, grad_scale = host_scale(grad, grad_scale)
            t = param.dtype.type
            _sgd_momentum(grad, t(grad_scale), t(lr), t(momentum), t(carry), t(gain), bool(nesterov), t(weight_decay),
                          param, velocity)

        def adam(param, grad, m, v, grad_scale, step_size, beta1, beta2, eps, shrink, l2, sqrt_correction2):
            grad, grad_scale = host_scale(grad, grad_scale)
            t = param.dtype.type
            _adam(grad, t(grad_scale), t(step_size), float(beta1), float(beta2), t(eps), t(shrink), t(l2),
                  t(sqrt_correction2), param, m, v)

        def rmsprop(param, grad, square_avg, grad_scale, lr, alpha, eps, weight_decay):
            grad, grad_scale = host_scale(grad, grad_scale)
            t = param.dtype.type
            _rmsprop(grad, t(grad_scale), t(lr), float(alpha), t(eps), t(weight_decay), param, square_avg)

        self.update_kernels = {"sgd": sgd, "sgd_momentum": sgd_momentum, "adam": adam, "rmsprop": rmsprop}

    def dropout_mask(self, key, stream, shape, first_row, rate, dtype):
        # The keys are host integers, handed to the kernel as arguments: no copy to the device.
        mask = cupy.empty(shape, dtype=dtype)
        start = first_row * math.prod(shape[1:])
        _dropout_mask(start, random.layer_key(key, stream), random.threshold(rate), mask.dtype.type(1.0 / (1.0 - rate)),
                      mask)
        return mask

    def matmul(self, a, b, out=None):
        return cupy.matmul(a, b, out=out)

    def scatter_add_rows(self, ids, values, n_rows):
        out = cupy.zeros((n_rows, values.shape[1]), dtype=values.dtype)
        cupyx.scatter_add(out, ids, values)  # atomic adds: repeated ids accumulate
        return out

    def sum_rows(self, x, out=None):
        return cupy.sum(x, axis=0, out=out)

    def bias_activation(self, z, b, activation: ActivationFunction, out=None):
        if activation.name not in CUDA_ACTIVATIONS:
            return super().bias_activation(z, b, activation)
        a = cupy.empty_like(z) if out is None else out
        _bias_activation(z, b, z.shape[1], activation.code, z.dtype.type(LEAKY_RELU_SLOPE), z, a)
        return z, a

    def activation_backward(self, da, z, a, activation: ActivationFunction, out=None, db_out=None):
        if activation.name not in CUDA_ACTIVATIONS:
            return super().activation_backward(da, z, a, activation)
        dz = cupy.empty_like(z) if out is None else out  # CuPy refuses None as an output argument
        _activation_backward(da, z, a, activation.code, z.dtype.type(LEAKY_RELU_SLOPE), dz)
        return dz, cupy.sum(dz, axis=0, out=db_out)
