"""``Flatten`` and ``Reshape``: views of the same numbers in another shape; backward reshapes back.

``Flatten`` is row-major over ``(H, W, C)``: pixel (y, x), channel c lands at ``(y·W + x)·C + c``
(a PyTorch model flattening ``(C, H, W)`` orders the same numbers differently)."""

from __future__ import annotations

import math
from typing import Any

from ..context import PassContext
from ..errors import ShapeError
from ..validation import check_int
from .base import Array, Layer, Params, Scratch


class Reshape(Layer):
    """Each sample to ``target_shape`` (the batch axis is kept).

    Example:
        >>> from toolkit import Reshape, Sequential
        >>> Sequential([Reshape((2, 2, 1), input_dim=4)]).predict([[1.0, 2.0, 3.0, 4.0]]).shape
        (1, 2, 2, 1)
    """

    def __init__(self, target_shape: tuple[int, ...], input_dim: int | None = None) -> None:
        super().__init__()
        self.target_shape = tuple(check_int("target_shape", s, 1) for s in target_shape)
        self.declared_input_dim = None if input_dim is None else check_int("input_dim", input_dim, 1)

    def describe(self) -> str:
        return f"{type(self).__name__}({self.target_shape})"

    def configure(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if math.prod(input_shape) != math.prod(self.target_shape):
            raise ShapeError(f"{self.describe()} cannot hold samples of shape {tuple(input_shape)} "
                             f"({math.prod(input_shape)} values, not {math.prod(self.target_shape)})")
        self.input_shape, self.output_shape = tuple(input_shape), self.target_shape
        return self.output_shape

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        return self.backend.xp.reshape(x, (-1, *self.output_shape)), None  # -1: the batch may be symbolic

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        return self.backend.xp.reshape(grad_output, (grad_output.shape[0], *self.input_shape)), {}

    def get_config(self) -> dict[str, Any]:
        return {"target_shape": list(self.target_shape), "input_dim": self.declared_input_dim}


class Flatten(Reshape):
    """(N, H, W, C) → (N, H·W·C), row-major.

    Example:
        >>> from toolkit import Flatten, Sequential
        >>> Sequential([Flatten()], input_shape=(2, 2, 3)).predict([[[[1.0] * 3] * 2] * 2]).shape
        (1, 12)
    """

    def __init__(self) -> None:
        super().__init__(())

    def describe(self) -> str:
        return "Flatten()"

    def configure(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        self.input_shape, self.output_shape = tuple(input_shape), (math.prod(input_shape),)
        return self.output_shape

    def get_config(self) -> dict[str, Any]:
        return {}
