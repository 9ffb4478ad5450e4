"""The default backend: NumPy arrays through array-api-compat's namespace.

Beyond the references it writes products and sums straight into their destination (``out=``),
and runs SGD and Adam as ufuncs into one reused scratch array."""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as xp_numpy
import numpy as np

from toolkit.backend import Backend
from toolkit.errors import BackendError

from .host import HostRandom, UpdateScratch, host_array


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self, device: Any = None, fused: bool = True) -> None:
        if device not in (None, "cpu"):
            raise BackendError(f"backend {self.name!r} runs on the CPU only; got device {device!r}")
        self._update_scratch = UpdateScratch(np.empty_like)
        super().__init__(xp_numpy, "cpu", fused)

    def register_kernels(self) -> None:
        self.update_kernels = {"sgd": self._sgd, "adam": self._adam}

    def is_native(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        return host_array(x, self.name, dtype)

    def to_host(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def random(self, seed: int | None) -> HostRandom:
        return HostRandom(seed, self.asarray)

    def quiet(self) -> Any:
        return np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore")

    # Products and sums written straight into the flat gradient buffer: the generic path builds
    # the result first and then copies it.
    def matmul(self, a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.matmul(a, b, out=out)

    def sum_rows(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return np.sum(x, axis=0, out=out)

    # Windows of images: strided views copied once (im2col), and the adjoint as one in-place add per
    # kernel offset (col2im) instead of the reference's zero-stuffing and padding.
    def im2col(self, x, window, strides, out_hw, out=None):
        (kh, kw), (sh, sw), (ho, wo) = window, strides, out_hw
        views = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # (N, Hp-kh+1, Wp-kw+1, C, kh, kw)
        views = views[:, : sh * (ho - 1) + 1 : sh, : sw * (wo - 1) + 1 : sw]
        n, c = x.shape[0], x.shape[3]
        out = np.empty((n, ho, wo, kh, kw, c), dtype=x.dtype)
        np.copyto(out, views.transpose(0, 1, 2, 4, 5, 3))
        return out.reshape(n, ho, wo, kh * kw, c)

    def col2im(self, cols, padded_hw, window, strides, out=None):
        (kh, kw), (sh, sw), (hp, wp) = window, strides, padded_hw
        n, ho, wo, _, c = cols.shape
        out = np.zeros((n, hp, wp, c), dtype=cols.dtype)
        for k in range(kh * kw):
            i, j = divmod(k, kw)
            out[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :] += cols[:, :, :, k, :]
        return out

    # Max-pool over non-overlapping windows (strides = pool size, the usual case): the windows are a
    # reshape of the input, so one transposed copy replaces the general path's window copy, its
    # max pass and its one-hot backward.
    def max_pool(self, x, window, strides, out_hw, out=None, winners_out=None):
        (kh, kw), (ho, wo) = window, out_hw
        if tuple(strides) != (kh, kw):
            return super().max_pool(x, window, strides, out_hw)
        n, c = x.shape[0], x.shape[3]
        blocks = x[:, : ho * kh, : wo * kw, :].reshape(n, ho, kh, wo, kw, c)
        windows = blocks.transpose(0, 1, 3, 2, 4, 5).reshape(n, ho, wo, kh * kw, c)
        winners = np.argmax(windows, axis=3)  # the first maximum in row-major window order (NaN wins)
        largest = np.take_along_axis(windows, winners[:, :, :, None, :], axis=3)[:, :, :, 0, :]
        return largest, winners

    def max_pool_backward(self, grad, winners, input_hw, window, strides, out=None):
        (kh, kw), (h, w) = window, input_hw
        if tuple(strides) != (kh, kw):
            return super().max_pool_backward(grad, winners, input_hw, window, strides)
        n, ho, wo, c = grad.shape
        routed = np.zeros((n, ho, wo, kh * kw, c), dtype=grad.dtype)
        np.put_along_axis(routed, winners[:, :, :, None, :], grad[:, :, :, None, :], axis=3)
        image = routed.reshape(n, ho, wo, kh, kw, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, ho * kh, wo * kw, c)
        if (ho * kh, wo * kw) == (h, w):
            return image
        full = np.zeros((n, h, w, c), dtype=grad.dtype)  # rows and columns no window covered get 0
        full[:, : ho * kh, : wo * kw, :] = image
        return full

    # Optimizer updates with ufuncs writing into one reused scratch array: the reference's
    # temporaries, each as large as the whole model, cost a page-faulting allocation apiece.
    def _sgd(self, param: np.ndarray, grad: np.ndarray, lr: float) -> None:
        step = np.multiply(grad, lr, out=self._update_scratch.like(param))
        np.subtract(param, step, out=param)

    def _adam(self, param, grad, m, v, step_size, beta1, beta2, eps, shrink, l2, sqrt_correction2) -> None:
        scratch = self._update_scratch.like(param)
        if shrink != 1.0:
            np.multiply(param, shrink, out=param)
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
