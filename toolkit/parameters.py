"""Where every parameter lives: the model's one flat buffer, and how layers reach their slices.

All parameters of a model sit in one flat array (and all gradients in another), so an optimizer
step is one call over the whole model and a data-parallel step all-reduces one buffer. Layers do
not hold their weights: at each pass the model hands each layer a dict of its arrays, cut from
the flat buffer by this table (``views``). On mutable backends those are views, cut once and
reused while the buffer stays the same object; on immutable ones (JAX) the buffer is replaced
as a whole after each update and the slices are cut again (inside ``jax.jit`` they cost nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

Array = Any


@dataclass(frozen=True)
class Slot:
    """One parameter: layer ``layer``'s ``name`` of ``shape``, from ``offset`` in the flat buffer."""

    layer: int
    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def key(self) -> str:
        return f"{self.layer}.{self.name}"


class ParameterTable:
    """The layout of a model's flat parameter (and gradient) buffer, in model order."""

    def __init__(self, shapes_per_layer: list[dict[str, tuple[int, ...]]]) -> None:
        self.slots: list[Slot] = []
        offset = 0
        for index, shapes in enumerate(shapes_per_layer):
            for name, shape in shapes.items():
                self.slots.append(Slot(index, name, tuple(shape), offset))
                offset += math.prod(shape)
        self.size = offset
        self.n_layers = len(shapes_per_layer)
        self.by_key = {slot.key: slot for slot in self.slots}

    def tensors(self, flat: Array, xp: Any) -> tuple[Array, ...]:
        """One array per slot, in table order and in its shape, cut from ``flat``."""
        return tuple(xp.reshape(flat[slot.offset : slot.offset + slot.size], slot.shape) for slot in self.slots)

    def per_layer(self, tensors: tuple[Array, ...]) -> list[dict[str, Array]]:
        """Per layer, ``{name: array}`` from one array per slot (``tensors``' order)."""
        per_layer: list[dict[str, Array]] = [{} for _ in range(self.n_layers)]
        for slot, tensor in zip(self.slots, tensors, strict=True):
            per_layer[slot.layer][slot.name] = tensor
        return per_layer

    def views(self, flat: Array, xp: Any) -> list[dict[str, Array]]:
        """Per layer, ``{name: array of its shape}`` cut from ``flat``."""
        return self.per_layer(self.tensors(flat, xp))

    def views_with(self, state_table: ParameterTable, flat: Array, state: Array, xp: Any) -> list[dict[str, Array]]:
        """Per layer, its parameters (cut from ``flat`` by this table) and its state (cut from
        ``state`` by ``state_table``) in one dict: what a layer's forward receives."""
        return self.tensor_views_with(state_table, self.tensors(flat, xp), state, xp)

    def tensor_views_with(self, state_table: ParameterTable, tensors: tuple[Array, ...], state: Array,
                          xp: Any) -> list[dict[str, Array]]:
        """``views_with`` for parameters already one array per slot (a compiled step keeps them so)."""
        return [{**params, **values} for params, values in zip(self.per_layer(tensors), state_table.views(state, xp),
                                                               strict=True)]

    def flatten(self, arrays: dict[str, Array], xp: Any) -> Array:
        """One flat array from ``{"0.W": …, "0.b": …}`` in table order (a new array)."""
        if not self.slots:
            raise ValueError("the model has no parameters")
        return xp.concat([xp.reshape(arrays[slot.key], (-1,)) for slot in self.slots])

    def gather(self, per_layer: list[dict[str, Array]], like: Array, xp: Any) -> Array:
        """One new flat array from per-layer dicts (a pass's gradients); zeros like ``like`` when the
        model has no parameters."""
        if not self.slots:
            return xp.zeros_like(like)
        return self.flatten({f"{index}.{name}": value for index, layer in enumerate(per_layer)
                             for name, value in layer.items()}, xp)
