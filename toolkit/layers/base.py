"""The layer interface: a layer describes a computation; the model owns its state.

A layer holds its configuration only. Its parameters arrive as a dict at every pass (cut from
the model's flat buffer by ``toolkit.parameters.ParameterTable``), and what backward needs from
forward is returned by ``forward`` and handed back to ``backward`` (the engine keeps it on a
tape local to the pass). So a layer keeps no arrays between calls: inference never disturbs a
training pass, and the same code runs on immutable arrays and inside ``jax.jit``.

Shapes exclude the batch axis: a Dense layer on 64 features has input shape ``(64,)``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable
from typing import Any

from ..backend import Backend, RandomSource
from ..context import PassContext
from ..errors import CheckpointError, InputError
from ..validation import check_int

Array = Any
Params = dict[str, Array]


class Scratch:
    """Buffers one layer reuses from step to step (numba's allocation-free steps).

    Owned by the model (``toolkit.engine.Engine``), so it dies with it; ``get`` returns None on
    backends that allocate per op, and ops then return fresh arrays."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.buffers: dict[str, Array] = {}
        self.children: dict[int, Scratch] = {}

    def child(self, index: int) -> Scratch:
        """The scratch of nested layer ``index`` (a residual block's)."""
        found = self.children.get(index)
        if found is None:
            found = self.children[index] = Scratch(self.backend)
        return found

    def get(self, name: str, shape: tuple[int, ...], dtype: Any) -> Array | None:
        buffer = self.buffers.get(name)
        if buffer is None or tuple(buffer.shape) != tuple(shape) or buffer.dtype != dtype:
            buffer = self.buffers[name] = self.backend.empty(shape, dtype)
        return buffer


def scratch_buffer(scratch: Scratch | None, name: str, shape: tuple[int, ...], dtype: Any) -> Array | None:
    return None if scratch is None else scratch.get(name, shape, dtype)


class Layer:
    """Base class of every layer.

    Subclasses implement ``configure`` (shapes), ``param_shapes`` and ``initial_params`` if they
    have parameters, and the pair ``forward``/``backward``:

        forward(params, x, context, scratch) -> (y, saved)
        backward(params, saved, dy, scratch, grad_out) -> (dx or None, {name: gradient})

    ``params`` holds the layer's parameters and, under their own names, its state (``state_shapes``:
    values such as running statistics that no optimizer touches). ``context.training`` says
    whether this is a training pass; ``saved`` is what backward needs (None at inference).
    ``grad_out`` maps parameter names to buffers the gradients may be written into (views into
    the model's flat gradient buffer on mutable backends; empty otherwise). After a training
    pass, ``next_state(params, saved)`` gives the layer's new state, which the model keeps only
    when the step is committed.
    """

    backend: Backend
    # The input shape a first layer was given (``input_shape=``), set only when given.
    declared_input_shape: tuple[int, ...] | None
    _input_shape_keyword: bool  # set (True) only when the generic input_shape= gave it
    # True for layers whose training pass depends on the whole batch (BatchNorm's statistics):
    # in data-parallel training they all-reduce inside the pass, so every rank must take part.
    synchronizes_batch = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every layer takes ``input_shape=`` (one sample's shape, batch axis excluded) as Keras
        layers do, so any layer can open a model: ``Sequential([Flatten(input_shape=(28, 28)), …])``.
        Layers whose constructor names ``input_shape`` itself (Dense, Conv2D…) handle it there."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or "input_shape" in inspect.signature(init).parameters:
            return

        @functools.wraps(init)
        def __init__(self: Layer, *args: Any, input_shape: Any = None, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            if input_shape is not None:
                shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
                self.declared_input_shape = tuple(check_int("input_shape", size, 1) for size in shape)
                self._input_shape_keyword = True  # the layer's own get_config does not know it: layer_record adds it

        signature = inspect.signature(init)
        keyword = inspect.Parameter("input_shape", inspect.Parameter.KEYWORD_ONLY, default=None)
        parameters = [p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
        __init__.__signature__ = signature.replace(parameters=[*parameters, keyword])  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[method-assign]

    def __init__(self) -> None:
        # () until ``configure`` fixes them (when the model is built).
        self.input_shape: tuple[int, ...] = ()
        self.output_shape: tuple[int, ...] = ()
        # The first layer has no one to pass ∂J/∂a to; skipping that product saves a GEMM.
        self.needs_input_grad = True

    def configure(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Fix the input shape (batch axis excluded); return the output shape."""
        self.input_shape = self.output_shape = tuple(input_shape)
        return self.output_shape

    @property
    def input_dim(self) -> int | None:
        return self.input_shape[-1] if self.input_shape else None

    @property
    def output_dim(self) -> int | None:
        return self.output_shape[-1] if self.output_shape else None

    @property
    def trainable(self) -> bool:
        """False freezes the layer (and the layers nested in it): its parameters never change, the
        optimizer keeps no moments for them (they stay 0), and δ still flows through it."""
        return self.__dict__.get("_trainable", True)

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise InputError(f"{self.describe()}: trainable must be True or False; got {value!r}")
        global TRAINABLE_VERSION
        self._trainable = value
        TRAINABLE_VERSION += 1  # models compare it each step: a change takes effect at the next one
        for layer in self.sublayers():
            layer.trainable = value

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        """A new layer of this class from ``get_config()``'s record (``Dense.from_config(layer.get_config())``)."""
        return cls(**config)

    @property
    def draws_random(self) -> bool:
        """True when the layer's training pass draws random numbers (dropout masks) from the pass's key."""
        return False

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}

    def initial_params(self, rng: RandomSource, dtype: Any) -> Params:
        """Fresh initial values of every parameter, drawn from the model's seeded generator."""
        return {}

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """Non-trainable state (kept in the model's flat state buffer, saved in checkpoints)."""
        return {}

    def initial_state(self, rng: RandomSource, dtype: Any) -> Params:
        return {}

    def next_state(self, params: Params, saved: Any) -> Params:
        """The state after a training pass that returned ``saved`` (every name of ``state_shapes``)."""
        return {}

    def sublayers(self) -> list[Layer]:
        """Layers nested inside this one (a residual block's), in order."""
        return []

    def bind(self, backend: Backend, index: str) -> None:
        """Attach the model's backend; ``index`` is the layer's path in the model ("3", "3.1")."""
        self.backend = backend
        self.path = index

    def forward(self, params: Params, x: Array, context: PassContext, scratch: Scratch | None) -> tuple[Array, Any]:
        raise NotImplementedError

    def backward(self, params: Params, saved: Any, grad_output: Array, scratch: Scratch | None,
                 grad_out: Params) -> tuple[Array | None, Params]:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{type(self).__name__}()"

    def __repr__(self) -> str:
        return self.describe()

    def get_config(self) -> dict[str, Any]:
        return {}


def every_layer(layers: Iterable[Layer]) -> list[Layer]:
    """The layers and, depth first, the layers nested in them (residual blocks), each in its place."""
    return [found for layer in layers for found in (layer, *every_layer(layer.sublayers()))]


# Counts changes of any layer's ``trainable``: a model recomputes which parameters are frozen only when it moved.
TRAINABLE_VERSION = 0


def layer_record(layer: Layer) -> dict[str, Any]:
    """What a checkpoint keeps of a layer: its class, its configuration, and whether it is frozen."""
    config = layer.get_config()
    if layer.__dict__.get("_input_shape_keyword"):  # given through the generic input_shape= (``__init_subclass__``)
        config = {**config, "input_shape": list(layer.declared_input_shape or ())}
    return {"class": type(layer).__name__, "config": config, **({} if layer.trainable else {"trainable": False})}


# The layer classes a checkpoint can name, by class name (``toolkit.layers`` registers the built-in
# ones). Kept here, beside the interface, so a layer that nests others (``Residual``) rebuilds them
# without importing the package that imports it.
LAYERS: dict[str, type[Layer]] = {}


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Let checkpoints name the layer class ``cls`` (by its name); returns ``cls``."""
    LAYERS[cls.__name__] = cls
    return cls


def from_config(spec: dict[str, Any]) -> Layer:
    """The layer a ``{"class": name, "config": {...}}`` record describes (checkpoints hold these)."""
    name = spec.get("class")
    if name not in LAYERS:
        raise CheckpointError(f"unknown layer {name!r}: a layer class of your own must be registered before loading "
                              f"(decorate it with @toolkit.layers.register_layer, and import its module); known layers: "
                              f"{sorted(LAYERS)}")
    layer = LAYERS[name](**spec.get("config", {}))
    if spec.get("trainable", True) is False:
        layer.trainable = False
    return layer
