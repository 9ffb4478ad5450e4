"""``Activation``: a stand-alone activation layer ``A = σ(Z)``, for stacks that keep the linear
part separate. Backward: ``∂J/∂Z = ∂J/∂A ∘ σ'(Z)`` (a Jacobian-vector product for softmax)."""

from __future__ import annotations

from typing import Any

from ..context import PassContext
from ..ops.activations import get_activation
from .base import Array, Layer, Params, Scratch


class Activation(Layer):
    """``A = σ(Z)`` with no parameters.

    Example:
        >>> from toolkit import Activation, Dense, Sequential
        >>> model = Sequential([Dense(4, input_dim=3), Activation("tanh"), Dense(1)])
        >>> model.predict([[0.0, 1.0, 2.0]]).shape
        (1, 1)
    """

    def __init__(self, activation: str | None) -> None:
        super().__init__()
        self.activation = get_activation(activation)

    def describe(self) -> str:
        return f"Activation({self.activation.name!r})"

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        a = self.activation.forward(x, self.backend.xp)
        return a, ((x, a) if context.training else None)

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        z, a = saved
        return self.activation.backward(grad_output, z, a, self.backend.xp), {}

    def get_config(self) -> dict[str, Any]:
        return {"activation": self.activation.name}
