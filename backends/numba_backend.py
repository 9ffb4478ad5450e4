"""numba backend: NumPy arrays, matrix products in BLAS, and every other hot op as one
jitted pass over memory (``backends.numba_kernels``). Training steps reuse their scratch
buffers, so a steady-state step allocates no new arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from toolkit.ops import optim
from toolkit.ops.activations import LEAKY_RELU_SLOPE, Activation

from . import numba_kernels as kernels
from .numba_stack import DenseStackKernel
from .numpy_backend import NumpyBackend


class NumbaBackend(NumpyBackend):
    name = "numba"

    def __init__(self, device: Any = None, fused: bool = True) -> None:
        super().__init__(device, fused)
        self._workspace: dict[tuple[int, str], np.ndarray] = {}
        # Off, every op allocates its result: the tests compare both ways bit for bit.
        self.reuse_buffers = True

    def workspace(self, owner: object, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray | None:
        if not (self.fused and self.reuse_buffers):
            return None
        key = (id(owner), name)
        buffer = self._workspace.get(key)
        if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
            buffer = self._workspace[key] = np.empty(shape, dtype=dtype)
        return buffer

    def dense_stack_kernel(self, stack: Any) -> DenseStackKernel:
        return DenseStackKernel(self, stack)

    def matmul(self, a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.matmul(a, b, out=out)

    def bias_activation(self, z, b, activation: Activation, out=None):
        if not self.fused:
            return super().bias_activation(z, b, activation)
        if activation.name == "identity":
            kernels.bias_add(z, b)
            return z, z
        if activation.name == "tanh":
            # numba's tanh is a scalar libm call (8 ns); NumPy's is SIMD (0.35 ns).
            kernels.bias_add(z, b)
            return z, np.tanh(z, out=np.empty_like(z) if out is None else out)
        a = np.empty_like(z) if out is None else out
        kernels.bias_activation(z, b, a, kernels.CODES[activation.name], LEAKY_RELU_SLOPE)
        return z, a

    def activation_backward(self, da, z, a, activation: Activation, db_out, out=None):
        if not self.fused:
            return super().activation_backward(da, z, a, activation, db_out)
        dz = np.empty_like(z) if out is None else out
        kernels.activation_backward(da, z, a, dz, db_out, kernels.CODES[activation.name], LEAKY_RELU_SLOPE)
        return dz

    def sum_rows_into(self, x, out):
        if not self.fused:
            return super().sum_rows_into(x, out)
        kernels.sum_rows(x, out)  # one pass, rows in order: no temporaries, unlike np.sum's pairwise blocks
        return out

    def output_delta(self, pair: str, z, a, y, out=None):
        if not self.fused:
            return super().output_delta(pair, z, a, y)
        delta = np.empty_like(z) if out is None else out
        if pair == "identity_mse":
            return np.asarray(kernels.mse_delta(a, y, delta), dtype=z.dtype), delta
        kernel = kernels.softmax_ce_delta if pair == "softmax_ce" else kernels.sigmoid_bce_delta
        return np.asarray(kernel(z, a, y, delta), dtype=z.dtype), delta

    def sgd_update(self, param, grad, lr):
        if not self.fused:
            return super().sgd_update(param, grad, lr)
        kernels.sgd(param, grad, lr)

    def sgd_momentum_update(self, param, grad, velocity, lr, momentum, dampening, nesterov, weight_decay, step):
        if not self.fused:
            return super().sgd_momentum_update(param, grad, velocity, lr, momentum, dampening, nesterov,
                                               weight_decay, step)
        kernels.sgd_momentum(param, grad, velocity, lr, momentum, dampening, nesterov, weight_decay, step == 1)

    def adam_update(self, param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step):
        if not self.fused:
            return super().adam_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, step)
        shrink = 1.0 - lr * weight_decay if decoupled else 1.0
        l2 = 0.0 if decoupled else weight_decay
        step_size, sqrt_correction2 = optim.adam_step_constants(lr, beta1, beta2, step)
        kernels.adam(param, grad, m, v, step_size, beta1, beta2, eps, shrink, l2, sqrt_correction2)

    def rmsprop_update(self, param, grad, square_avg, lr, alpha, eps, weight_decay, step):
        if not self.fused:
            return super().rmsprop_update(param, grad, square_avg, lr, alpha, eps, weight_decay, step)
        kernels.rmsprop(param, grad, square_avg, lr, alpha, eps, weight_decay)
