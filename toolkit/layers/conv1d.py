"""``Conv1D``, ``MaxPool1D``, ``AvgPool1D``, ``GlobalAveragePooling1D``: the 2-D window layers run on
sequences (N, T, C) as images one pixel wide, (N, T, 1, C), with kernels and windows (k, 1). The
same im2col/col2im machinery and kernels serve both, so there is no second copy of the math:

    Conv1D:  y[n, t, f] = σ(Σ_{j < k, c} x[n, t·s + j·d − p, c] W[j, c, f] + b[f])    W: (k, C, F)

backward as ``Conv2D``'s (``dW = colsᵀ δ``, ``∂J/∂x = col2im(δ Wᵀ)``). A dilation d > 1 (gaps of d − 1
steps between the window's taps) runs as the undilated window of (k − 1)·d + 1 taps whose weights
between the taps are 0: W is spread into that window for the forward, and dW read back from its taps
(the gaps' gradients are dropped, so they stay 0). It costs (k − 1)·d + 1 taps' work instead of k. ``torch.nn.Conv1d.weight`` is
(F, C, k), the transpose of W. Padding: ``"valid"``, ``"same"`` (⌈T / s⌉ outputs) or an int p (p zeros
at each end of the sequence, PyTorch's ``padding=p``).
"""

from __future__ import annotations

from typing import Any

from ..backend import RandomSource
from ..context import PassContext
from ..errors import ShapeError
from ..initializers import get_initializer
from ..validation import check_int
from .base import Array, Layer, Params, Scratch
from .conv import Conv2D
from .pooling import AvgPool2D, GlobalAveragePooling2D, MaxPool2D


class _OverSequence(Layer):
    """A 2-D layer (``self.image``) applied to sequences (N, T, C) reshaped to (N, T, 1, C)."""

    image: Layer

    def configure(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 2:
            raise ShapeError(f"{self.describe()} takes sequences (N, T, channels); got samples of shape {input_shape}"
                             + (" — add a channel axis: x[:, :, None] for one value per step" if len(input_shape) == 1
                                else ""))
        out = self.image.configure((input_shape[0], 1, input_shape[1]))
        self.input_shape = tuple(input_shape)
        self.output_shape = (out[0], out[2]) if len(out) == 3 else tuple(out)
        return self.output_shape

    def bind(self, backend: Any, index: str) -> None:
        super().bind(backend, index)
        self.image.bind(backend, index)

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        xp = self.backend.xp
        y, saved = self.image.forward(params, xp.reshape(x, (-1, x.shape[1], 1, x.shape[2])), context, scratch)
        return xp.reshape(y, (-1, *self.output_shape)), saved

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        xp = self.backend.xp
        dx, grads = self.image.backward(params, saved, xp.reshape(grad_output, (-1, *self.image.output_shape)),
                                        scratch, grad_out)
        shapes = self.param_shapes()
        grads = {name: xp.reshape(value, shapes[name]) for name, value in grads.items()}
        return (None if dx is None else xp.reshape(dx, (-1, *self.input_shape))), grads


class Conv1D(_OverSequence):
    """1-D convolution over sequences (N, T, C) → (N, T', filters).

    Args:
        filters: output channels F.
        kernel_size: window length k.
        strides: step s between windows.
        padding: ``"valid"``, ``"same"`` or an int p (zeros at each end).
        dilation: d, the step between the window's taps (``torch.nn.Conv1d``'s ``dilation``).
        activation, kernel_initializer: as for ``Conv2D``.
        input_shape: ``(T, C)`` on a first layer.

    Example:
        >>> from toolkit import Conv1D, GlobalAveragePooling1D, Sequential
        >>> model = Sequential([Conv1D(4, 3, padding="same", activation="relu", input_shape=(10, 2)),
        ...                     GlobalAveragePooling1D()])
        >>> model.predict([[[0.5, 1.0]] * 10]).shape
        (1, 4)
    """

    image: Conv2D

    def __init__(self, filters: int, kernel_size: int, strides: int = 1, padding: str | int = "valid",
                 dilation: int = 1, activation: str | None = None, kernel_initializer: str | None = None,
                 input_shape: tuple[int, int] | None = None) -> None:
        super().__init__()
        kernel, stride = check_int("kernel_size", kernel_size, 1), check_int("strides", strides, 1)
        self.dilation = check_int("dilation", dilation, 1)
        image_padding: Any = padding if isinstance(padding, str) else (padding, 0)
        span = (kernel - 1) * self.dilation + 1  # the window's extent, gaps included
        self.image = Conv2D(filters, (span, 1), (stride, 1), image_padding, activation, kernel_initializer)
        self.filters, self.kernel_size, self.strides, self.padding = self.image.filters, kernel, stride, padding
        self.activation = self.image.activation
        self.declared_input_shape = None if input_shape is None else tuple(check_int("input_shape", size, 1)
                                                                           for size in input_shape)

    def describe(self) -> str:
        dilation = f", dilation={self.dilation}" if self.dilation != 1 else ""
        return (f"Conv1D({self.filters}, {self.kernel_size}, strides={self.strides}, padding={self.padding!r}"
                f"{dilation}, activation={self.activation.name!r})")

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"W": (self.kernel_size, self.input_shape[1], self.filters), "b": (self.filters,)}

    def initial_params(self, rng: RandomSource, dtype: Any) -> Params:
        if self.dilation == 1:
            params = self.image.initial_params(rng, dtype)
            return {"W": self.backend.xp.reshape(params["W"], self.param_shapes()["W"]), "b": params["b"]}
        # fans of the k taps, not of the spread window (PyTorch's: C·k in, F·k out)
        shapes, taps = self.param_shapes(), self.kernel_size * self.input_shape[1]
        return {"W": get_initializer(self.image.kernel_initializer)(rng, shapes["W"], taps, self.kernel_size * self.filters,
                                                                    dtype),
                "b": get_initializer("zeros")(rng, shapes["b"], 1, 1, dtype)}

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        return super().forward(self._spread(params), x, context, scratch)

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        if self.dilation == 1:
            return super().backward(params, saved, grad_output, scratch, grad_out)
        xp = self.backend.xp
        # the spread window's dW is not the shape of the W slot: computed apart, then read at the taps
        dx, grads = self.image.backward(self._spread(params), saved,
                                        xp.reshape(grad_output, (-1, *self.image.output_shape)), scratch,
                                        {name: slot for name, slot in grad_out.items() if name != "W"})
        spread = xp.reshape(grads["W"], (-1, self.input_shape[1], self.filters))
        grads = {"W": self._taps(spread), "b": grads["b"]}
        return (None if dx is None else xp.reshape(dx, (-1, *self.input_shape))), grads

    def _spread(self, params: Params) -> Params:
        """W (k, C, F) → the window of (k − 1)·d + 1 taps, (K, 1, C, F), W[j] at row j·d, 0 between."""
        if self.dilation == 1:
            return params
        xp, w = self.backend.xp, params["W"]
        gaps = xp.zeros((w.shape[0], self.dilation - 1, *w.shape[1:]), dtype=w.dtype, device=self.backend.device)
        rows = xp.reshape(xp.concat([w[:, None, ...], gaps], axis=1), (-1, *w.shape[1:]))  # k·d rows
        return {**params, "W": xp.reshape(rows[: self.image.kernel_size[0], ...], self.image.param_shapes()["W"])}

    def _taps(self, spread_grad: Array) -> Array:
        """dW at the k taps of the spread window's gradient (K, C, F) → (k, C, F)."""
        xp, d = self.backend.xp, self.dilation
        rows = spread_grad.shape[0]
        padded = xp.concat([spread_grad, xp.zeros((d - 1, *spread_grad.shape[1:]), dtype=spread_grad.dtype,
                                                  device=self.backend.device)], axis=0)  # k·d rows
        return xp.reshape(padded, (rows // d + 1, d, *spread_grad.shape[1:]))[:, 0, ...]

    def get_config(self) -> dict[str, Any]:
        image = self.image.get_config()
        return {"filters": self.filters, "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding, "dilation": self.dilation, "activation": image["activation"],
                "kernel_initializer": image["kernel_initializer"],
                "input_shape": None if self.declared_input_shape is None else list(self.declared_input_shape)}


class _Pool1D(_OverSequence):
    pooling: type[Layer]

    def __init__(self, pool_size: int = 2, strides: int | None = None) -> None:
        super().__init__()
        self.pool_size = check_int("pool_size", pool_size, 1)
        self.strides = self.pool_size if strides is None else check_int("strides", strides, 1)
        self.image = self.pooling((self.pool_size, 1), (self.strides, 1))  # type: ignore[call-arg]

    def describe(self) -> str:
        return f"{type(self).__name__}(pool_size={self.pool_size}, strides={self.strides})"

    def get_config(self) -> dict[str, Any]:
        return {"pool_size": self.pool_size, "strides": self.strides}


class MaxPool1D(_Pool1D):
    """Largest value of each window of ``pool_size`` steps (every ``strides`` steps): (N, T, C) → (N, T', C).

    Example:
        >>> from toolkit import MaxPool1D, Sequential
        >>> Sequential([MaxPool1D(2)], input_shape=(4, 1)).predict([[[1.0], [3.0], [2.0], [0.0]]]).tolist()
        [[[3.0], [2.0]]]
    """

    pooling = MaxPool2D


class AvgPool1D(_Pool1D):
    """Mean of each window of ``pool_size`` steps: (N, T, C) → (N, T', C).

    Example:
        >>> from toolkit import AvgPool1D, Sequential
        >>> Sequential([AvgPool1D(2)], input_shape=(4, 1)).predict([[[1.0], [3.0], [2.0], [0.0]]]).tolist()
        [[[2.0], [1.0]]]
    """

    pooling = AvgPool2D


class GlobalAveragePooling1D(_OverSequence):
    """Mean over the time axis: (N, T, C) → (N, C).

    Example:
        >>> from toolkit import GlobalAveragePooling1D, Sequential
        >>> Sequential([GlobalAveragePooling1D()], input_shape=(3, 2)).predict([[[1.0, 2.0]] * 3]).tolist()
        [[1.0, 2.0]]
    """

    def __init__(self) -> None:
        super().__init__()
        self.image = GlobalAveragePooling2D()

    def describe(self) -> str:
        return "GlobalAveragePooling1D()"
