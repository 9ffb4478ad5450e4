"""Pooling over channels-last images ``(N, H, W, C)``: ``MaxPool2D``, ``AvgPool2D``,
``GlobalAveragePooling2D``. Windows are taken without padding ("valid"), strides default to the
pool size.

    max:      A = max over each window;   backward routes each gradient to its window's arg-max
              (ties: one winner, the first in row-major window order, as PyTorch's CPU kernel)
    average:  A = mean over each window;  backward spreads each gradient evenly over its window
    global:   A = mean over H and W → (N, C); backward spreads δ / (H·W) over every pixel
"""

from __future__ import annotations

from typing import Any

from ..context import PassContext
from ..errors import ShapeError
from ..ops import conv
from .base import Array, Layer, Params, Scratch, scratch_buffer
from .conv import image_shape, pair


class _Pool2D(Layer):
    kind = "pool"

    def __init__(self, pool_size: int | tuple[int, int] = 2, strides: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        self.pool_size = pair("pool_size", pool_size)
        self.strides = self.pool_size if strides is None else pair("strides", strides)

    def describe(self) -> str:
        return f"{type(self).__name__}(pool_size={self.pool_size}, strides={self.strides})"

    def configure(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        h, w, c = image_shape(self, input_shape)
        (kh, kw), (sh, sw) = self.pool_size, self.strides
        if kh > h or kw > w:
            raise ShapeError(f"{self.describe()}: the {kh}×{kw} window is larger than the {h}×{w} input")
        self.out_hw = (conv.output_size(h, kh, sh, 0), conv.output_size(w, kw, sw, 0))
        self.input_hw = (h, w)
        self.input_shape, self.output_shape = (h, w, c), (*self.out_hw, c)
        return self.output_shape

    def _windows(self, x: Array) -> Array:
        return self.backend.im2col(x, self.pool_size, self.strides, self.out_hw)  # (N, Ho, Wo, kh·kw, C)

    def _scatter(self, dcols: Array) -> Array:
        return self.backend.col2im(dcols, self.input_hw, self.pool_size, self.strides)

    def get_config(self) -> dict[str, Any]:
        return {"pool_size": list(self.pool_size), "strides": list(self.strides)}


class MaxPool2D(_Pool2D):
    """Largest value of each window.

    Example:
        >>> from toolkit import Dense, Flatten, MaxPool2D, Sequential
        >>> Sequential([MaxPool2D(2, input_shape=(4, 4, 1)), Flatten()]).predict([[[[1.0]] * 4] * 4]).shape
        (1, 4)
    """

    def __init__(self, pool_size: int | tuple[int, int] = 2, strides: int | tuple[int, int] | None = None,
                 input_shape: tuple[int, int, int] | None = None) -> None:
        super().__init__(pool_size, strides)
        self.declared_input_shape = None if input_shape is None else tuple(input_shape)

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        out = winners_out = None
        if scratch is not None:  # numba: the same buffers every step
            shape = (x.shape[0], *self.output_shape)
            out, winners_out = scratch.get("out", shape, x.dtype), scratch.get("winners", shape, self.backend.xp.int64)
        largest, winners = self.backend.max_pool(x, self.pool_size, self.strides, self.out_hw, out=out,
                                                 winners_out=winners_out)
        return largest, (winners if context.training else None)

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        out = scratch_buffer(scratch, "grad_input", (grad_output.shape[0], *self.input_shape), grad_output.dtype)
        return self.backend.max_pool_backward(grad_output, saved, self.input_hw, self.pool_size, self.strides, out=out), {}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["input_shape"] = None if self.declared_input_shape is None else list(self.declared_input_shape)
        return config


class AvgPool2D(_Pool2D):
    """Mean of each window.

    Example:
        >>> from toolkit import AvgPool2D, Sequential
        >>> Sequential([AvgPool2D(2)], input_shape=(4, 4, 1)).predict([[[[1.0]] * 4] * 4]).shape
        (1, 2, 2, 1)
    """

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        return self.backend.xp.mean(self._windows(x), axis=3), None

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        xp = self.backend.xp
        area = self.pool_size[0] * self.pool_size[1]
        share = grad_output[:, :, :, None, :] / area
        return self._scatter(xp.broadcast_to(share, (*share.shape[:3], area, share.shape[4]))), {}


class GlobalAveragePooling2D(Layer):
    """Mean over the spatial axes: (N, H, W, C) → (N, C).

    Example:
        >>> from toolkit import GlobalAveragePooling2D, Sequential
        >>> Sequential([GlobalAveragePooling2D()], input_shape=(2, 2, 3)).predict([[[[1.0] * 3] * 2] * 2]).shape
        (1, 3)
    """

    def describe(self) -> str:
        return "GlobalAveragePooling2D()"

    def configure(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        h, w, c = image_shape(self, input_shape)
        self.input_shape, self.output_shape = (h, w, c), (c,)
        return self.output_shape

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        return self.backend.xp.mean(x, axis=(1, 2)), None

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        h, w, c = self.input_shape
        share = grad_output[:, None, None, :] / (h * w)
        return self.backend.xp.broadcast_to(share, (grad_output.shape[0], h, w, c)), {}
