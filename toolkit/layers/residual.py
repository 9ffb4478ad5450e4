"""``Residual``: a skip connection around a stack of layers, ``y = x + f(x)``.

Backward: ``∂J/∂x = ∂J/∂y + ∂J/∂y · ∂f/∂x`` — the gradient flows through the block and around
it, which is what lets deep stacks train. The block's layers keep their own parameters, named
``"{i}.{j}.W"`` for layer j of the block at position i of the model; blocks nest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..backend import RandomSource
from ..context import PassContext
from ..errors import InputError, ShapeError
from .base import Array, Layer, Params, Scratch, from_config, layer_record


def _prefixed(per_layer: list[Params]) -> Params:
    return {f"{index}.{name}": value for index, values in enumerate(per_layer) for name, value in values.items()}


class Residual(Layer):
    """``y = x + f(x)`` where ``f`` is the given layers in order; ``f`` must keep the shape.

    Example:
        >>> from toolkit import Dense, Residual, Sequential
        >>> model = Sequential([Dense(8, activation="relu", input_dim=3),
        ...                     Residual([Dense(8, activation="relu"), Dense(8)]), Dense(1)])
        >>> [name for name, _ in model.named_parameters()][2:4]
        ['1.0.W', '1.0.b']
    """

    def __init__(self, layers: Iterable[Layer | dict[str, Any]]) -> None:
        super().__init__()
        self.layers: list[Layer] = [from_config(layer) if isinstance(layer, dict) else layer for layer in layers]
        if not self.layers:
            raise InputError("Residual needs at least one layer")
        if any(not isinstance(layer, Layer) for layer in self.layers):
            raise InputError(f"Residual takes layers; got {[type(layer).__name__ for layer in self.layers]}")

    def sublayers(self) -> list[Layer]:
        return self.layers

    def describe(self) -> str:
        return f"Residual([{', '.join(layer.describe() for layer in self.layers)}])"

    def configure(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.configure(shape)
        if shape != tuple(input_shape):
            raise ShapeError(f"{self.describe()}: x + f(x) needs f to keep the shape, but f maps samples of shape "
                             f"{tuple(input_shape)} to {shape}")
        self.input_shape = self.output_shape = shape
        return shape

    def bind(self, backend: Any, index: str) -> None:
        super().bind(backend, index)
        for position, layer in enumerate(self.layers):
            layer.bind(backend, f"{index}.{position}")

    # The block's parameters and state, prefixed by the position of the layer that owns them.
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return _prefixed([layer.param_shapes() for layer in self.layers])

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        return _prefixed([layer.state_shapes() for layer in self.layers])

    def initial_params(self, rng: RandomSource, dtype: Any) -> Params:
        return _prefixed([layer.initial_params(rng, dtype) for layer in self.layers])

    def initial_state(self, rng: RandomSource, dtype: Any) -> Params:
        return _prefixed([layer.initial_state(rng, dtype) for layer in self.layers])

    def _split(self, values: Params) -> list[Params]:
        per_layer: list[Params] = [{} for _ in self.layers]
        for name, value in values.items():
            position, _, own = name.partition(".")
            per_layer[int(position)][own] = value
        return per_layer

    def _scratch(self, scratch: Scratch | None, position: int) -> Scratch | None:
        return None if scratch is None else scratch.child(position)

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        per_layer, tape, f = self._split(params), [], x
        for position, layer in enumerate(self.layers):
            f, saved = layer.forward(per_layer[position], f, context, self._scratch(scratch, position))
            tape.append(saved)
        return x + f, (tape if context.training else None)  # y = x + f(x)

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        per_layer, slots = self._split(params), self._split(grad_out)
        grads: list[Params] = [{} for _ in self.layers]
        grad = grad_output
        for position in range(len(self.layers) - 1, -1, -1):
            grad, grads[position] = self.layers[position].backward(
                per_layer[position], saved[position], grad, self._scratch(scratch, position), slots[position])
        return grad_output + grad, _prefixed(grads)  # ∂J/∂x = ∂J/∂y + (∂J/∂y)(∂f/∂x)

    def next_state(self, params: Params, saved: Any) -> Params:
        per_layer = self._split(params)
        return _prefixed([layer.next_state(per_layer[position], saved[position])
                          for position, layer in enumerate(self.layers)])

    def get_config(self) -> dict[str, Any]:
        return {"layers": [layer_record(layer) for layer in self.layers]}
