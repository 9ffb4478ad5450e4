"""``Conv2D``: a 2-D convolution over channels-last images, by im2col and one matrix product.

Convention: a batch of images is ``(N, H, W, C)`` (channels last, as in Keras). With a
``kh × kw`` kernel, ``F`` filters and strides ``(sh, sw)``:

    cols = im2col(pad(a))                       (N·Ho·Wo, kh·kw·C): the window under each output pixel
    Z    = cols W + b,   A = σ(Z)               W: (kh, kw, C, F) seen as (kh·kw·C, F), b: (F,)

which is a Dense layer applied to every window. Backward, with δ = ∂J/∂Z of shape (N·Ho·Wo, F):

    dW = colsᵀ δ,   db = Σ_rows δ,   ∂J/∂a = unpad(col2im(δ Wᵀ))

``col2im`` adds each window's gradient back where its pixels came from (``toolkit.ops.conv``).
A PyTorch ``Conv2d`` weight ``(F, C, kh, kw)`` is ``W.transpose(2, 3, 1, 0)``'s layout reversed:
``W = weight.permute(2, 3, 1, 0)``; a PyTorch batch ``(N, C, H, W)`` is ``x.permute(0, 2, 3, 1)`` here.
"""

from __future__ import annotations

from typing import Any

from ..backend import RandomSource
from ..context import PassContext
from ..errors import InputError, ShapeError
from ..initializers import default_for, get_initializer
from ..ops import conv
from ..ops.activations import get_activation
from ..validation import check_int
from .base import Array, Layer, Params, Scratch, scratch_buffer


def pair(name: str, value: Any) -> tuple[int, int]:
    """An int or a pair of ints ≥ 1, as a pair."""
    values = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(values) != 2:
        raise InputError(f"{name} must be an int or a pair of ints; got {value!r}")
    return check_int(name, values[0], 1), check_int(name, values[1], 1)


def image_shape(layer: Layer, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ShapeError(f"{layer.describe()} takes channels-last images (N, H, W, C); got samples of shape "
                         f"{tuple(input_shape)} (add Reshape((H, W, C)) before it for flat inputs)")
    return input_shape


class Conv2D(Layer):
    """2-D convolution ``A = σ(conv(a, W) + b)`` over ``(N, H, W, C)`` images.

    Args:
        filters: output channels F (≥ 1).
        kernel_size: an int or a pair ``(kh, kw)``.
        strides: an int or a pair (≥ 1).
        padding: ``"valid"`` (none), ``"same"`` (Keras: ⌈H / stride⌉ outputs, also with strides > 1),
            an int p (p zeros on every side, as PyTorch's ``padding=p``), or a pair (ph, pw).
        activation: any activation name, or None.
        kernel_initializer: as for ``Dense`` (fan-in kh·kw·C, fan-out kh·kw·F).
        input_shape: ``(H, W, C)`` of the first layer.

    Example:
        >>> from toolkit import Conv2D, Dense, Flatten, Sequential
        >>> model = Sequential([Conv2D(4, 3, padding="same", activation="relu", input_shape=(8, 8, 1)),
        ...                     Flatten(), Dense(2, activation="softmax")])
        >>> model.predict([[[[0.5]] * 8] * 8]).shape
        (1, 2)
    """

    def __init__(self, filters: int, kernel_size: int | tuple[int, int], strides: int | tuple[int, int] = 1,
                 padding: str | int = "valid", activation: str | None = None, kernel_initializer: str | None = None,
                 input_shape: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        self.filters = check_int("filters", filters, 1)
        self.kernel_size = pair("kernel_size", kernel_size)
        self.strides = pair("strides", strides)
        if isinstance(padding, list):
            padding = tuple(padding)
        whole = lambda p: isinstance(p, int) and not isinstance(p, bool) and p >= 0  # noqa: E731
        if not (padding in ("valid", "same") or whole(padding)
                or (isinstance(padding, tuple) and len(padding) == 2 and all(whole(p) for p in padding))):
            raise InputError(f"padding must be 'valid', 'same', an int ≥ 0 or a pair of them; got {padding!r}")
        self.padding = padding
        self.activation = get_activation(activation)
        self.kernel_initializer = kernel_initializer or default_for(self.activation.name)
        get_initializer(self.kernel_initializer)
        self.declared_input_shape = None if input_shape is None else tuple(check_int("input_shape", s, 1)
                                                                           for s in input_shape)

    def describe(self) -> str:
        return (f"Conv2D({self.filters}, {self.kernel_size}, strides={self.strides}, padding={self.padding!r}, "
                f"activation={self.activation.name!r})")

    def configure(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        h, w, c = image_shape(self, input_shape)
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        if self.padding == "same":
            self.pads = (conv.same_padding(h, kh, sh), conv.same_padding(w, kw, sw))
        else:  # "valid", an int on every side, or (rows, columns) as PyTorch's padding=(ph, pw)
            ph, pw = (0, 0) if isinstance(self.padding, str) else (
                self.padding if isinstance(self.padding, tuple) else (self.padding, self.padding))
            self.pads = ((ph, ph), (pw, pw))
        hp, wp = h + sum(self.pads[0]), w + sum(self.pads[1])
        if kh > hp or kw > wp:
            raise ShapeError(f"{self.describe()}: the {kh}×{kw} kernel is larger than the padded {hp}×{wp} input")
        self.out_hw = (conv.output_size(hp, kh, sh, 0), conv.output_size(wp, kw, sw, 0))
        self.padded_hw = (hp, wp)
        self.input_shape, self.output_shape = (h, w, c), (*self.out_hw, self.filters)
        return self.output_shape

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"W": (*self.kernel_size, self.input_shape[2], self.filters), "b": (self.filters,)}

    def initial_params(self, rng: RandomSource, dtype: Any) -> Params:
        area = self.kernel_size[0] * self.kernel_size[1]
        shapes = self.param_shapes()
        return {"W": get_initializer(self.kernel_initializer)(rng, shapes["W"], area * self.input_shape[2],
                                                              area * self.filters, dtype),
                "b": get_initializer("zeros")(rng, shapes["b"], 1, 1, dtype)}

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        backend, xp = self.backend, self.backend.xp
        (ho, wo), (kh, kw) = self.out_hw, self.kernel_size
        columns = self.input_shape[2] * kh * kw
        buffers: dict[str, Any] = {}
        if scratch is not None:  # numba: the same buffers every step (a fresh 20 MB array page-faults)
            rows = x.shape[0] * ho * wo
            buffers = {"cols": scratch.get("cols", (x.shape[0], ho, wo, kh * kw, self.input_shape[2]), x.dtype),
                       "z": scratch.get("z", (rows, self.filters), x.dtype),
                       "a": scratch.get("a", (rows, self.filters), x.dtype)}
        cols = backend.im2col(conv.pad(x, self.pads, xp), self.kernel_size, self.strides, self.out_hw,
                              out=buffers.get("cols"))
        # -1, not N·Ho·Wo: the batch size may be symbolic (an ONNX export traces a dynamic batch axis).
        cols = xp.reshape(cols, (-1, columns))  # one row per output pixel: its window
        z = backend.matmul(cols, xp.reshape(params["W"], (columns, self.filters)), out=buffers.get("z"))  # cols W
        z, a = backend.bias_activation(z, params["b"], self.activation, out=buffers.get("a"))  # Z = cols W + b, A = σ(Z)
        return xp.reshape(a, (-1, ho, wo, self.filters)), ((cols, z, a) if context.training else None)

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        backend, xp = self.backend, self.backend.xp
        cols, z, a = saved
        n = grad_output.shape[0]
        delta, db = backend.activation_backward(xp.reshape(grad_output, z.shape), z, a, self.activation,
                                                out=scratch_buffer(scratch, "delta", tuple(z.shape), z.dtype),
                                                db_out=grad_out.get("b"))  # δ = ∂J/∂A ∘ σ'(Z), db = Σ δ
        w_slot = grad_out.get("W")
        flat_slot = None if w_slot is None else xp.reshape(w_slot, (cols.shape[1], self.filters))
        dw = backend.matmul(cols.T, delta, out=flat_slot)  # dW = colsᵀ δ
        grads = {"W": w_slot if (flat_slot is not None and dw is flat_slot) else xp.reshape(dw, self.param_shapes()["W"]),
                 "b": db}
        if not self.needs_input_grad:
            return None, grads
        dcols = backend.matmul(delta, xp.reshape(params["W"], (cols.shape[1], self.filters)).T,
                               out=scratch_buffer(scratch, "dcols", tuple(cols.shape), cols.dtype))  # δ Wᵀ
        dcols = xp.reshape(dcols, (n, *self.out_hw, self.kernel_size[0] * self.kernel_size[1], self.input_shape[2]))
        dx = backend.col2im(dcols, self.padded_hw, self.kernel_size, self.strides,
                            out=scratch_buffer(scratch, "dx", (n, *self.padded_hw, self.input_shape[2]), dcols.dtype))
        return conv.unpad(dx, self.pads), grads

    def get_config(self) -> dict[str, Any]:
        return {"filters": self.filters, "kernel_size": list(self.kernel_size), "strides": list(self.strides),
                "padding": list(self.padding) if isinstance(self.padding, tuple) else self.padding,
                "activation": self.activation.name,
                "kernel_initializer": self.kernel_initializer if isinstance(self.kernel_initializer, str) else None,
                "input_shape": None if self.declared_input_shape is None else list(self.declared_input_shape)}
