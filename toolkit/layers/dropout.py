"""``Dropout``: inverted dropout, ``y = x ∘ m / (1 − rate)`` with ``m_i ~ Bernoulli(1 − rate)``.

Training only; at inference the layer is the identity (the 1/(1 − rate) scaling during training
keeps the expected activation the same, so nothing is rescaled at inference). Backward:
``∂J/∂x = ∂J/∂y ∘ m / (1 − rate)``, the same mask. The mask comes from the counter-based generator
of ``toolkit.ops.random``: a function of the model's seed, the training step, the layer and each
element's index in the global batch, so it is the same on every backend and in every process
layout, and a resumed run draws the masks the uninterrupted run would have drawn.
"""

from __future__ import annotations

import zlib
from typing import Any

from ..context import PassContext
from ..errors import InputError
from ..validation import check_real
from .base import Array, Layer, Params, Scratch


class Dropout(Layer):
    """Zero each value with probability ``rate`` in training, scale the rest by 1/(1 − rate).

    Args:
        rate: the probability of dropping a value, in [0, 1).

    Example:
        >>> from toolkit import Dense, Dropout, Sequential
        >>> model = Sequential([Dense(4, activation="relu", input_dim=3), Dropout(0.5), Dense(1)])
        >>> model.predict([[0.0, 1.0, 2.0]]).shape  # inference: dropout is the identity
        (1, 1)
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        try:
            self.rate = check_real("rate", rate, 0.0, 1.0, high_open=True)
        except InputError:
            raise InputError(f"Dropout(rate={rate!r}): rate must lie in [0, 1) (the probability of dropping)") from None
        self.stream = 0

    @property
    def draws_random(self) -> bool:
        return self.rate > 0.0

    def bind(self, backend: Any, index: str) -> None:
        super().bind(backend, index)
        self.stream = zlib.crc32(index.encode())  # this layer's own stream of masks, fixed by its place

    def describe(self) -> str:
        return f"Dropout({self.rate})"

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        if not context.training or self.rate == 0.0:
            return x, None
        mask = self.backend.dropout_mask(context.random_key, self.stream, tuple(x.shape), context.first_row,
                                         self.rate, x.dtype)  # m / (1 − rate)
        return x * mask, mask

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        return (grad_output if saved is None else grad_output * saved), {}

    def get_config(self) -> dict[str, Any]:
        return {"rate": self.rate}
